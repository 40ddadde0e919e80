"""``pokelab eval TARGET --against REAL``: metrics of a run, an export or an image folder.

Building the parser imports nothing heavy; torch and the networks load when the command runs.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

DEFAULT_METRICS = "fid,kid,ms_ssim"
#: the trainer evaluates with seed cfg.seed + EVAL_SEED_OFFSET (engines.trainer.Trainer.evaluate)
EVAL_SEED_OFFSET = 1_000_000
TRANSLATION_DEFAULT = "fid,kid,lpips,cycle,lpips_target"


def add_eval_command(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="FID/KID/MS-SSIM/LPIPS/novelty of a run, an export or an image folder",
        description="Evaluate generated images against real ones. TARGET is a run folder (its export is "
                    "sampled), an export folder, or a folder of images (then this is folder-vs-folder, the "
                    "same FID as `python -m pytorch_fid TARGET REAL`). REAL is an image folder, a zip/tar or a "
                    "prepared dataset. A translation run/export translates its source pictures (--source) and "
                    "reports FID/KID of the outputs against REAL, LPIPS input-to-output, the cycle error and, "
                    "where the two sets share file names, LPIPS against the true target. Real-image statistics "
                    "are cached (POKELAB_CACHE, default ~/.cache/pokelab). On a run it measures what the trainer "
                    "measured: the data prepared as recorded (background, background removal), the trainer's "
                    "evaluation seed, the run's final export; --n (default 2000) may differ from the run's eval_n.")
    p.add_argument("target", help="run folder, export folder or image folder")
    p.add_argument("--against", metavar="REAL",
                   help="real images: folder, zip/tar or prepared dataset (default for a run/export: the set it "
                        "was trained on, where recorded)")
    p.add_argument("--source", metavar="PICTURES",
                   help="translation runs/exports: the pictures to translate (default: the recorded source set)")
    p.add_argument("--metrics",
                   help=f"comma-separated: fid,kid,ms_ssim,lpips,novelty,is,precision,recall,density,coverage,fid_inf "
                        f"or 'all' (every one but is; default: {DEFAULT_METRICS}; fid and kid come with 95%% intervals "
                        f"fid_lo/fid_hi, kid_lo/kid_hi); "
                        f"translation: fid,kid,lpips,cycle,lpips_target or 'all' (default: {TRANSLATION_DEFAULT}); "
                        f"upscaling (srgan): psnr,ssim,lpips, each beside bicubic's (default: all three)")
    p.add_argument("--n", type=int, default=2000,
                   help="images to generate for a run/export, or source pictures to translate at most "
                        "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=50, help="images per network batch (default: %(default)s)")
    p.add_argument("--device", default="auto",
                   help="auto (the GPU when there is one, else the CPU), cpu, cuda, cuda:1, mps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None,
                   help="sampling / subset seed (default: for a run the trainer's evaluation seed, its seed + "
                        f"{EVAL_SEED_OFFSET}; else 0)")
    p.add_argument("--background", default=None,
                   help="background for transparent images prepared on the fly (default: what the run or export "
                        "recorded for its data, else white)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--progress", action="store_true", help="show progress bars on stderr")
    p.add_argument("--log", action="store_true",
                   help="TARGET is a run: append the result to its metrics.jsonl as an evaluation at the run's last "
                        "epoch (e.g. the 2000-sample figure of a run trained with a smaller eval_n), so the studio "
                        "and the app show it; TARGET RUN/best: as the evaluation of best/ (at its epoch, kept "
                        "apart from the run's own)")
    p.set_defaults(func=run_eval)
    return p


def _device(name: str):
    """``auto``: the GPU when there is one (where a run is normally trained and evaluated), else the CPU."""
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N, mps)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available here")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but it is not available here")
    return dev


def _is_model(path: Path) -> bool:
    from ..runs.export import CONFIG
    from ..runs.folder import is_run_dir

    return is_run_dir(path) or (path / CONFIG).is_file()


def _recorded(cfg: dict, key: str, what: str) -> Path:
    """A dataset path recorded in an export's training facts (run exports record where their data was)."""
    src = ((cfg.get("trained") or {}).get(key) or {}).get("source")
    if not src:
        raise ValueError(f"the export does not record its {what}; give it with {'--against' if key == 'dataset' else '--source'}")
    if not Path(src).exists():
        raise FileNotFoundError(f"the recorded {what} {src} is gone; give it with "
                                f"{'--against' if key == 'dataset' else '--source'}")
    return Path(src)


def _removal_options(rec: dict | None) -> dict:
    """load_dataset options that redo a recorded background removal (rembg), as the trainer's resume does."""
    if not rec:
        return {}
    opts: dict = {"remove_background": True}
    if rec.get("model_path"):
        opts["rembg_model_path"] = rec["model_path"]
    elif rec.get("model"):
        opts["rembg_model"] = rec["model"]
    return opts


def _training_facts(target: Path, export_cfg: dict | None) -> dict:
    """What the trainer's evaluation used, from run.json (a run) or the export's training facts: the dataset
    records (the target set last), the evaluation seed, the device and precision, the export's epoch."""
    from ..runs.folder import is_run_dir, read_info, run_of_best

    trained = (export_cfg or {}).get("trained") or {}
    facts: dict = {"datasets": [r for r in (trained.get("source_dataset"), trained.get("dataset")) if r],
                   "seed": None, "device": trained.get("device"), "amp": None,
                   "export_epoch": trained.get("epochs"), "export_step": trained.get("steps")}
    # a run's best/ (the trainer's best_metric export) is measured as its run measured it: the same seed and data
    run = target if is_run_dir(target) else run_of_best(target)
    if run is not None:
        info = read_info(run)
        rec = info.get("dataset")
        if rec:
            facts["datasets"] = rec if isinstance(rec, list) else [rec]
        cfg = info.get("config") or {}
        if cfg.get("seed") is not None:
            facts["seed"] = int(cfg["seed"]) + EVAL_SEED_OFFSET
        facts["device"] = info.get("device") or facts["device"]
        facts["amp"] = info.get("amp")
        if run == target:  # best/ is older than the run by design: no "the export is behind" warning
            facts["run_epoch"], facts["run_step"] = info.get("epoch"), info.get("step")
    return facts


def _prepare_options(rec: dict | None, args, recorded: bool) -> dict:
    """load_dataset options for one set: the background asked for, else the recorded one; and the recorded
    background removal when the set is the recorded one (not a set given on the command line)."""
    rec = rec or {}
    opts = {"background": args.background or rec.get("background") or "white"}
    if recorded:
        opts.update(_removal_options(rec.get("background_removal")))
    return opts


def _device_type(name) -> str:
    """'cuda:0 (NVIDIA H200)' -> 'cuda'."""
    return str(name or "").split(" ")[0].split(":")[0]


def _match_training_precision(engine, facts: dict, device) -> None:
    """Translation engines translate under the run's autocast in the trainer's evaluation: the same precision
    here when this is the run's kind of device. Generators sample in fp32 either way."""
    import torch

    amp = facts.get("amp")
    if amp and _device_type(facts.get("device")) == device.type and isinstance(getattr(torch, str(amp), None),
                                                                              torch.dtype):
        engine.amp_dtype = getattr(torch, str(amp))


def _warn_on_differences(facts: dict, device) -> None:
    trained_on = facts.get("device")
    if trained_on and _device_type(trained_on) != device.type:
        warnings.warn(f"the run was trained and evaluated on {trained_on}; this evaluation runs on {device}, so "
                      "expect differences in the last digits", RuntimeWarning, stacklevel=2)
    run_epoch, export_epoch = facts.get("run_epoch"), facts.get("export_epoch")
    if run_epoch is not None and export_epoch is not None and int(export_epoch) != int(run_epoch):
        warnings.warn(f"the run's export is from epoch {export_epoch} but the run reached epoch {run_epoch} (it "
                      "stopped before its final export); this measures the export", RuntimeWarning, stacklevel=2)


def run_eval(args) -> int:
    from .evaluate import evaluate_generator, evaluate_images, parse_metrics
    from .sources import is_image_folder, load_image_folder, load_real

    target = Path(args.target)
    if not target.exists():
        raise FileNotFoundError(f"TARGET {target}: no such file or folder")
    is_model = target.is_dir() and _is_model(target)
    export_cfg = None
    if is_model:
        from ..runs.export import read_export_config

        export_cfg = read_export_config(target)
    translating = bool(export_cfg) and export_cfg.get("kind") == "translate"
    upscaling = bool(export_cfg) and export_cfg.get("kind") == "upscale"  # srgan: PSNR/SSIM/LPIPS vs bicubic
    if args.against:
        against = Path(args.against)
    elif export_cfg:
        against = _recorded(export_cfg, "dataset", "target (real) set")
    else:
        raise ValueError("give the real images with --against REAL")
    if not against.exists():
        raise FileNotFoundError(f"--against {against}: no such file or folder")
    if args.source and not translating:
        raise ValueError("--source is for translation runs and exports (the pictures to translate)")
    log_run = None  # --log: the run whose metrics.jsonl gets the line (RUN, or RUN/best's RUN)
    if args.log:
        from ..runs.folder import is_run_dir, read_info, run_of_best

        log_run = (target if is_run_dir(target) else run_of_best(target)) if is_model else None
        if log_run is None:
            raise ValueError("--log needs a run folder (or its best/) as TARGET (its metrics.jsonl gets the "
                             "evaluation)")
        if read_info(log_run).get("status") == "running":
            raise ValueError(f"{log_run} is still training (status 'running'); log an evaluation when it has "
                             "stopped")
    if args.n < 2:
        raise ValueError("--n must be at least 2")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if upscaling:
        from .superres import parse_upscale_metrics

        metrics = parse_upscale_metrics(args.metrics or "psnr,ssim,lpips")
    elif translating:
        from .translation import parse_translation_metrics

        paired_run = bool((export_cfg.get("extra") or {}).get("paired"))  # pix2pix: its distances to the targets too
        metrics = parse_translation_metrics(args.metrics or TRANSLATION_DEFAULT
                                            + (",l1_target,ssim_target" if paired_run else ""))
    else:
        metrics = parse_metrics(args.metrics or DEFAULT_METRICS)
    device = _device(args.device)
    facts = _training_facts(target, export_cfg) if is_model else {}
    seed = args.seed if args.seed is not None else (facts.get("seed") or 0)
    details: dict = {}
    info: dict = {"target": str(target), "against": str(against), "seed": seed, "device": str(device)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if is_model:
            from ..data.prepare import load_dataset
            from ..runs.export import load_export

            engine = load_export(target, device=device)
            _match_training_precision(engine, facts, device)
            recs = facts.get("datasets") or []
            # the training pipeline's pixels (and content key), so the trainer's cached statistics are reused
            real = load_dataset(against, size=engine.image_size, progress=False,
                                **_prepare_options(recs[-1] if recs else None, args, recorded=not args.against))
            info.update(engine=engine.name, image_size=engine.image_size, background=real.background)
            if facts.get("export_epoch") is not None:
                info["export_epoch"] = facts["export_epoch"]
            _warn_on_differences(facts, device)
            if upscaling:
                from .superres import evaluate_upscaling

                pics = real.images
                if not args.against:  # the recorded set: its held-out split, the pictures the trainer measured
                    _train, held = engine.heldout_split(len(pics))
                    pics = pics[held] if len(held) else pics
                    info["split"] = f"held-out pictures ({len(pics)}, split_seed {engine.config['split_seed']})"
                info.update(kind="upscaler")
                res = evaluate_upscaling(engine, pics, metrics=metrics, n=args.n,
                                         batch_size=min(args.batch_size, 8), device=device, progress=args.progress)
            elif translating:
                from .translation import evaluate_translation

                source = Path(args.source) if args.source else _recorded(export_cfg, "source_dataset", "source set")
                pictures = load_dataset(source, size=engine.image_size, progress=False,
                                        **_prepare_options(recs[0] if len(recs) > 1 else None, args,
                                                           recorded=not args.source))
                pairing = (export_cfg.get("trained") or {}).get("pairing")
                if isinstance(pairing, dict) and not args.source:  # a paired run is measured on its held-out ids, as the trainer does
                    from ..paired import held_out_subset

                    pictures = held_out_subset(pictures, pairing)
                    info["split"] = f"held-out ids ({len(pictures.images)})"
                info.update(kind="translator", source=str(source))
                res = evaluate_translation(engine, pictures, real, metrics=metrics, n=args.n,
                                           batch_size=args.batch_size, device=device, seed=seed,
                                           progress=args.progress)
            elif getattr(engine, "conditional", False):  # + per-label KID/FID and label consistency (per_label.py)
                from .per_label import evaluate_conditional

                info.update(kind="conditional generator")
                real = _with_labels(real, recs[-1] if recs else None)
                res = evaluate_conditional(engine, real, n=args.n, metrics=metrics, batch_size=args.batch_size,
                                           device=device, seed=seed, progress=args.progress, details=details)
            else:
                info.update(kind="generator")
                res = evaluate_generator(lambda k, s: engine.sample(n=k, seed=s), real, n=args.n, metrics=metrics,
                                         batch_size=args.batch_size, device=device, seed=seed,
                                         progress=args.progress, details=details)
            fake_names = None
        elif is_image_folder(target):
            fake = load_image_folder(target)
            real = load_real(against, size=fake.size, background=args.background or "white")
            info.update(kind="images", images=len(fake.images))
            res = evaluate_images(fake.images, real, metrics=metrics, batch_size=args.batch_size, device=device,
                                  seed=seed, progress=args.progress, details=details)
            fake_names = fake.files
        else:
            raise ValueError(f"{target}: neither a run, an export, nor a folder of images")
    info["real_images"] = int(len(real.images))
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    if log_run is not None:
        _log_to_run(log_run, res, seed, facts, notes, best=log_run != target)
    nov = details.get("novelty")
    if args.json:
        out = {**info, "metrics": res, "warnings": notes}
        if nov is not None:
            out["novelty"] = {**nov.as_dict(), "samples": fake_names}
        print(json.dumps(out, indent=2))
    else:
        for msg in notes:
            print(f"warning: {msg}", file=sys.stderr)
        from .per_label import per_label_text, split_result

        print(_table(info, split_result(res)[0]))  # per-label figures: their own table below
        if per_label_text(res):
            print(per_label_text(res))
        if nov is not None:
            print(_nearest_table(nov, fake_names))
    return 0


def _with_labels(real, rec: dict | None):
    """The real set with the labels a conditional run recorded (its file, column and vocabulary), as the trainer
    evaluated it; without them (none recorded, the file gone or not matching --against) the whole set, and a
    warning that the per-label figures are left out."""
    from ..labels import LabelError, reattach

    labels = (rec or {}).get("labels")
    if not labels:
        warnings.warn("the run records no labels file: per-label metrics left out", RuntimeWarning, stacklevel=2)
        return real
    try:
        return reattach(real, labels)
    except LabelError as e:
        warnings.warn(f"per-label metrics left out: the recorded labels do not fit these images ({e})",
                      RuntimeWarning, stacklevel=2)
        return real


def _log_to_run(run_dir: Path, res: dict, seed: int, facts: dict, notes: list[str], best: bool = False) -> None:
    """One "eval" line at the epoch/step of the export it measured, marked as coming from ``pokelab eval``;
    ``best``: it measured RUN/best (``"export": "best"``: readers keep it apart from the run's own line)."""
    from ..runs.folder import BEST_DIR, RunWriter, read_info

    info = read_info(run_dir)
    epoch = facts.get("export_epoch") if facts.get("export_epoch") is not None else info.get("epoch")
    step = facts.get("export_step") if facts.get("export_step") is not None else info.get("step")
    writer = RunWriter(run_dir)
    line = writer.log("eval", int(epoch or 0), int(step or 0), **res, eval_by="pokelab eval", eval_seed=int(seed),
                      **({"export": BEST_DIR} if best else {}))
    writer.append_log(f"pokelab eval {'of best/ ' if best else ''}(n={int(res.get('eval_n', 0))}, seed {seed}) at "
                      f"epoch {line['epoch']}: "
                      + ", ".join(f"{k}={v:.4g}" for k, v in res.items() if isinstance(v, (int, float))))
    for msg in notes:
        writer.append_log(f"warning: {msg}")


def _fmt(key: str, res: dict) -> str:
    v = res[key]
    if key == "collapse":
        return "YES (samples far more alike than real images)" if v else "no"
    interval = f"  (95% interval {res[key + '_lo']:.5g} to {res[key + '_hi']:.5g})" if f"{key}_lo" in res else ""
    if key in ("kid", "is") and f"{key}_std" in res:
        return f"{v:.5g} ± {res[key + '_std']:.2g}" + interval
    if key == "eval_n":
        return str(int(v))
    if key == "eval_seconds":
        return f"{v:.1f} s"
    return f"{v:.5g}" + interval


def _table(info: dict, res: dict) -> str:
    head = (f"{info['target']} ({info.get('engine', 'images')}, {int(res['eval_n'])} images) vs {info['against']} "
            f"({info['real_images']} images)")
    rows = [(k, _fmt(k, res)) for k in res if not k.endswith(("_std", "_lo", "_hi"))]
    width = max(len(k) for k, _ in rows)
    return "\n".join([head] + [f"  {k:<{width}}  {v}" for k, v in rows])


def _nearest_table(nov, fake_names, top: int = 5) -> str:
    import numpy as np

    order = np.argsort(nov.distance)[:top]
    lines = [f"closest to a training image (memorised below distance {nov.threshold:.4g}):"]
    for i in order:
        name = fake_names[i] if fake_names else f"sample {i}"
        real = nov.files[i] if nov.files else f"real #{int(nov.index[i])}"
        lines.append(f"  {name} -> {real}  distance {nov.distance[i]:.4g}")
    return "\n".join(lines)
