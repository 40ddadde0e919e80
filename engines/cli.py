"""``pokelab`` command line: train, sample, interpolate, translate, upscale, gif, data, eval, export-tb, sweep, engines."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__

EXIT_USAGE = 2


def _train(args) -> int:
    from .config import TrainConfig, apply_overrides
    from .trainer import Trainer

    if args.resume and (args.labels or args.label_column):
        raise ValueError("--resume uses the labels the run recorded; drop --labels/--label-column")
    if args.label_column and not args.labels:
        raise ValueError("--label-column needs --labels FILE")
    if args.resume:
        t = Trainer.resume(args.resume, epochs=args.epochs, progress=args.progress, max_hours=args.max_hours,
                           overrides=args.set)
        if t.is_main:  # under torchrun rank 0 speaks for the job
            print(f"resuming {t.run_dir} at epoch {t.epoch}/{t.cfg.epochs}")
    else:
        if not args.engine:
            raise ValueError("pokelab train needs an ENGINE (or --resume RUN_DIR); see `pokelab engines`")
        from .registry import get_engine

        cls = get_engine(args.engine)  # unknown engine: clear error before touching the data
        if args.labels and not (cls.conditional or cls.labels_optional):
            from .registry import list_engines

            conditional = [n for n in list_engines() if get_engine(n).conditional or get_engine(n).labels_optional]
            raise ValueError(f"engine {args.engine!r} is not conditional and cannot use --labels; conditional "
                             f"engines: {', '.join(conditional) or 'none'}")
        if cls.conditional and not args.labels:
            raise ValueError(f"engine {args.engine!r} is conditional: give the labels with --labels FILE (a CSV "
                             "with an id or file column, or a dataset.json)")
        cfg = TrainConfig.for_engine(cls)
        for name in ("epochs", "batch_size", "image_size", "seed", "max_hours"):
            if getattr(args, name) is not None:
                setattr(cfg, name, getattr(args, name))
        apply_overrides(cfg, args.set or [])
        cls.resolve_config(cfg.engine)  # validate engine keys now
        from . import distributed

        distributed.init(cfg.device, cfg.dist_backend)  # under torchrun: join the job before touching the data
        with distributed.local_main_first():  # one process per machine prepares the dataset cache
            data = _load_training_data(cls, args, cfg)
        info = {"tag": args.tag} if args.tag else {}
        if args.sweep_info:  # set by `pokelab sweep` (engines.sweep): the run's place in its grid
            import json

            info["sweep"] = json.loads(args.sweep_info)
        t = Trainer(args.engine, data, args.runs, cfg, progress=args.progress, info=info)
        if t.is_main:
            print(f"run directory: {t.run_dir}")
    run_dir = t.fit()
    status = t.status  # what run.json now says (the other ranks of a torchrun job never read the run folder)
    if t.is_main:
        print(f"{status}: {run_dir}")
    return 0 if status == "finished" else 130 if status == "interrupted" else 1


def _load_training_data(cls, args, cfg):
    from .data.prepare import load_dataset

    if cls.domains == 2:
        if not (args.source and args.target):
            raise ValueError(f"engine {cls.name!r} translates between two domains: give --source DIR_A --target DIR_B")
        return (load_dataset(args.source, size=cfg.image_size, background=cfg.background),
                load_dataset(args.target, size=cfg.image_size, background=cfg.background))
    if not args.data:
        raise ValueError("give the training images with --data FOLDER_OR_PREPARED")
    ds = load_dataset(args.data, size=cfg.image_size, background=cfg.background)
    if getattr(args, "labels", None):
        from .labels import load_labels

        ds = load_labels(ds, args.labels, args.label_column)
        print(ds.label_report.format(), file=sys.stderr)  # every image left out, by name (also in run.json)
    return ds


def _device(name: str):
    from .trainer import pick_device

    return pick_device(name)


def _sample(args) -> int:
    from .runs.export import load_export
    from .data.images import save_grid

    if not 1 <= args.n <= 4096:
        raise ValueError("--n must be between 1 and 4096")
    engine = load_export(args.target, device=_device(args.device))
    kw = {"truncation_psi": args.truncation} if args.truncation is not None else {}
    if args.label:
        if not getattr(engine, "conditional", False):
            raise ValueError(f"{args.target}: engine {engine.name!r} is not conditional; --label needs a "
                             "conditional export (cgan, or stylegan2_ada / projected_gan trained with --labels)")
        # every --label (and every part of 'A|B') names one label of the combination; an unknown one is an
        # error that lists the vocabulary, before anything is written
        kw["labels"] = engine.label_spec.text(engine.label_spec.indices(args.label, "--label: "))
    if args.prompt is not None:
        if not hasattr(engine, "prompt_notes"):
            raise ValueError(f"{args.target}: engine {engine.name!r} takes no text; --prompt needs a text-to-image "
                             "export (stackgan)")
        if args.label:
            raise ValueError("give --prompt or --label, not both (labels pick training captions)")
        kw["prompt"] = args.prompt
        for note in engine.prompt_notes(args.prompt):  # unknown words left out, a cut prompt
            print(f"note: {note}", file=sys.stderr)
    imgs = engine.sample(n=args.n, seed=args.seed, **kw)  # a prompt with no known word fails here, nothing written
    save_grid(imgs, args.out)
    print(f"wrote {args.n} samples ({engine.name}, {engine.image_size} px) to {args.out}")
    return 0


def _interpolate(args) -> int:
    import torch

    from .runs.export import load_export
    from .data.images import save_gif, to_pil_list

    if args.label_to and not args.label:
        raise ValueError("--label-to needs --label (the label the walk starts from)")
    seeds = args.seeds if args.seeds is not None else ([1] if args.label_to else [1, 2])
    if args.label_to and len(seeds) != 1:
        raise ValueError("--label-to walks between labels at one latent: give one seed (--seeds S)")
    if not args.label_to and len(seeds) < 2:
        raise ValueError("--seeds needs at least two seeds (or --label A --label-to B for a walk between labels)")
    if not 2 <= args.frames <= 512:
        raise ValueError("--frames must be between 2 and 512")
    engine = load_export(args.target, device=_device(args.device))
    kw = {"truncation_psi": args.truncation} if args.truncation is not None else {}
    if args.mode:  # otherwise the engine's own default (slerp in z; a straight line in W for StyleGAN2)
        kw["mode"] = args.mode
    if args.label:
        if not getattr(engine, "conditional", False):
            raise ValueError(f"{args.target}: engine {engine.name!r} is not conditional; --label needs a "
                             "conditional export (cgan, or stylegan2_ada / projected_gan trained with --labels)")
        spec = engine.label_spec  # unknown labels: an error listing the vocabulary, before anything is written
        label_a = spec.text(spec.indices(args.label, "--label: "))
        label_b = spec.text(spec.indices(args.label_to, "--label-to: ")) if args.label_to else None
    if args.label_to:  # one latent, the label walks (StyleGAN2: straight in W between the two labels' w)
        frames = engine.interpolate_labels(seeds[0], label_a, label_b, frames=args.frames, **kw)
        what = f"from {label_a} to {label_b} at seed {seeds[0]}"
    else:
        if args.label:
            kw["labels"] = label_a  # held along the walk
        legs = [engine.interpolate(a, b, frames=args.frames, **kw) for a, b in zip(seeds[:-1], seeds[1:])]
        frames = torch.cat([leg if i == 0 else leg[1:] for i, leg in enumerate(legs)])
        what = f"through seeds {', '.join(map(str, seeds))}"
    save_gif(to_pil_list(frames), args.out, fps=args.fps, boomerang=len(seeds) == 2 or bool(args.label_to))
    print(f"wrote {len(frames)} frames ({what}) to {args.out}")
    return 0


def _translate(args) -> int:
    """Every picture of INPUTS through a translation export, written as PNGs under --out with the same names."""
    from pathlib import PurePosixPath

    from tqdm.auto import tqdm

    from .data.prepare import load_dataset
    from .runs.export import load_export
    from .data.images import png_bytes, to_uint8
    from .runs.folder import atomic_write_bytes

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    engine = load_export(args.target, device=_device(args.device))
    if getattr(engine, "kind", "generate") != "translate":
        other = ("upscales pictures; `pokelab translate` needs a translation export (use `pokelab upscale`)"
                 if getattr(engine, "kind", "") == "upscale" else
                 "generates images; `pokelab translate` needs a translation export (use `pokelab sample` for generators)")
        raise ValueError(f"{args.target}: engine {engine.name!r} {other}")
    direction = engine.check_direction(args.direction)  # a clear error before the pictures are read
    # the training pipeline's preparation (pad to a square, never crop; optional rembg), at the engine's size
    pics = load_dataset(args.inputs, size=engine.image_size, background=args.background,
                        progress=args.progress, remove_background=args.remove_background or None,
                        **({"rembg_model": args.rembg_model} if args.rembg_model else {}))
    out = Path(args.out)
    written = 0
    with tqdm(total=len(pics.images), unit="img", desc=f"translating {direction}", disable=not args.progress) as bar:
        for s in range(0, len(pics.images), args.batch_size):
            y = to_uint8(engine.translate(pics.images[s:s + args.batch_size], direction)).cpu()
            for name, img in zip(pics.files[s:s + args.batch_size], y):
                rel = PurePosixPath(name).with_suffix(".png")
                atomic_write_bytes(out / rel, png_bytes(img.permute(1, 2, 0).numpy()))
                written += 1
            bar.update(len(y))
    print(f"translated {written} picture(s) {direction} with {engine.name} ({engine.image_size} px) into {out}"
          + (f"; skipped {len(pics.skipped)} unreadable file(s)" if pics.skipped else ""))
    return 0


def _gif(args) -> int:
    from .runs.timeline import write_timeline_gif

    out = write_timeline_gif(args.run, args.out, fps=args.fps, label=not args.no_label, max_size=args.max_size)
    print(f"wrote {out}")
    return 0


def _engines(args) -> int:
    from .registry import get_engine, list_engines

    for name in list_engines():
        cls = get_engine(name)
        doc = cls.__doc__ or sys.modules[cls.__module__].__doc__ or ""
        print(f"{name:14s} {cls.kind:9s} {(doc.strip().splitlines() or [''])[0]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pokelab", description="Train, sample and judge generative models on small image sets.")
    p.add_argument("--version", action="version", version=f"pokelab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train an engine (or --resume a run)")
    t.add_argument("engine", nargs="?", help="engine name (see `pokelab engines`)")
    t.add_argument("--data", help="image folder, .zip/.tar(.gz) or prepared dataset folder")
    t.add_argument("--source", help="translation engines: domain A images")
    t.add_argument("--target", help="translation engines: domain B images")
    t.add_argument("--runs", default="runs", help="where run directories are created (default: ./runs)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--max-hours", type=float, metavar="H",
                   help="wall-clock budget of training time (evaluation not counted); with --resume it replaces "
                        "the recorded one, so a finished budgeted run can be continued")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--image-size", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a trainer or engine setting, e.g. --set lr=1e-4 --set eval_every=0; with "
                        "--resume only the evaluation, sample and checkpoint cadence and best_metric "
                        "(e.g. --set eval_every=40)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    t.add_argument("--labels", metavar="FILE",
                   help="conditional engines: per-image labels, a CSV with an id or file column (matched to the "
                        "image file names) or stylegan2-ada's dataset.json; 'A|B' is two labels")
    t.add_argument("--label-column", metavar="COLUMN",
                   help="the CSV column holding the labels (e.g. types); several columns joined with commas "
                        "(types,egg_groups) pool their labels, the later ones named 'egg_groups:Monster'")
    t.add_argument("--tag", help="a tag stored in run.json (the studio groups runs by it; `pokelab sweep` sets it)")
    t.add_argument("--sweep-info", help=argparse.SUPPRESS)
    t.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on a terminal)")
    t.set_defaults(func=_train)

    s = sub.add_parser("sample", help="a grid of samples from an export or run")
    s.add_argument("target", help="export folder or run folder")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--truncation", type=float, help="truncation psi (engines that support it)")
    s.add_argument("--label", action="append", metavar="LABEL",
                   help="conditional exports: the label of every sample, e.g. Fire; repeat it (or write "
                        "'Grass|Poison') for a combination. Default: drawn from the training mix")
    s.add_argument("--prompt", metavar="TEXT",
                   help="text-to-image exports (stackgan): the caption of every sample. Default: training captions")
    s.add_argument("--out", default="samples.png")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=_sample)

    i = sub.add_parser("interpolate", help="a latent walk between seeds as an animated GIF")
    i.add_argument("target", help="export folder or run folder")
    i.add_argument("--seeds", type=int, nargs="+", help="the seeds walked through (default: 1 2; with --label-to "
                                                         "one seed, default 1)")
    i.add_argument("--label", action="append", metavar="LABEL",
                   help="conditional exports: the label held along the walk (repeat it, or 'A|B', for a combination); "
                        "with --label-to, where the walk between labels starts")
    i.add_argument("--label-to", action="append", metavar="LABEL",
                   help="conditional exports: walk from --label to this label at one seed's latent (repeatable)")
    i.add_argument("--frames", type=int, default=24, help="frames per leg")
    i.add_argument("--mode", help="slerp or lerp in z; StyleGAN2 also takes w (its default) — "
                                  "default: the engine's own")
    i.add_argument("--truncation", type=float)
    i.add_argument("--fps", type=float, default=12)
    i.add_argument("--out", default="walk.gif")
    i.add_argument("--device", default="auto")
    i.set_defaults(func=_interpolate)

    tr = sub.add_parser("translate", help="translate a folder of pictures with a translation export or run")
    tr.add_argument("target", help="translation export folder or run folder")
    tr.add_argument("inputs", help="pictures: folder, .zip/.tar(.gz) or prepared dataset")
    tr.add_argument("--out", required=True, help="folder for the translated PNGs (same names as the inputs)")
    tr.add_argument("--direction", default="AB", help="AB (source -> target, default) or BA where the engine has it")
    tr.add_argument("--background", default="white", help="background for transparent pictures (default: white)")
    tr.add_argument("--remove-background", action="store_true", help="cut the subject out first with rembg")
    tr.add_argument("--rembg-model", help="rembg model name (default: u2net)")
    tr.add_argument("--batch-size", type=int, default=16)
    tr.add_argument("--device", default="auto")
    tr.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    tr.set_defaults(func=_translate)

    g = sub.add_parser("gif", help="the sample-grid timeline of a run as an animated GIF")
    g.add_argument("run", help="run folder")
    g.add_argument("--out", help="default: RUN/progress.gif")
    g.add_argument("--fps", type=float, default=4)
    g.add_argument("--max-size", type=int, default=768, help="longest side of the frames in pixels")
    g.add_argument("--no-label", action="store_true", help="do not stamp the epoch on each frame")
    g.set_defaults(func=_gif)

    e = sub.add_parser("engines", help="list the available engines")
    e.set_defaults(func=_engines)

    from .sweep import add_sweep_command

    add_sweep_command(sub)

    from .data.prepare import add_data_commands
    from .data.fetch import add_fetch_command
    from .logsinks import add_export_tb_command

    add_fetch_command(add_data_commands(sub))
    from .upscale.cli import add_upscale_command

    add_upscale_command(sub)
    add_export_tb_command(sub)
    try:
        from .metrics.cli import add_eval_command
    except ImportError:
        pass
    else:
        add_eval_command(sub)
        from .metrics.paired_eval import add_eval_paired_command

        add_eval_paired_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from .errors import USER_ERRORS

    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"pokelab {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        dist = sys.modules.get("engines.distributed")
        if dist is not None:  # a torchrun job that failed before training still leaves its process group
            dist.shutdown()


if __name__ == "__main__":
    sys.exit(main())
