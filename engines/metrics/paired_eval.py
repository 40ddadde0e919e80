"""``pokelab eval-paired RUN --baseline EXPORT``: a paired run (pix2pix) on its held-out ids, beside baselines.

One table, one row per translator, all on the same held-out source pictures and their true targets (paired by
id): the run's export; **do nothing** (the source picture itself, prepared at the run's size); and each
``--baseline`` translation export (e.g. the shipped CycleGAN). Columns: L1, SSIM and LPIPS to the true target
(``paired_scores``) and FID / KID of the outputs against the whole target set (``feature_scores``, the
trainer's cached statistics). A baseline trained at another size gets the pictures prepared at its own size,
and its outputs are resized (antialiased) to the run's size before they are measured.

The table is printed and, for a run folder, logged to its metrics.jsonl as one evaluation line at the
export's epoch (``eval_by: pokelab eval-paired``): the run's own figures under the usual keys
(``l1/target``, ``ssim/target``, ``lpips/target``, ``fid``, ``kid``), do-nothing under ``<key>_input`` (the
keys the trainer's evaluation uses for it) and each baseline under ``baseline/<name>/<key>``.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

from .cli import EVAL_SEED_OFFSET, _device, _match_training_precision, _prepare_options, _recorded, _training_facts
from .cli import _warn_on_differences

PAIRED_DEFAULT = "l1_target,ssim_target,lpips_target,fid,kid"
_ALLOWED = ("l1_target", "ssim_target", "lpips_target", "fid", "kid")
#: table columns: result key, heading, how to print
_COLUMNS = (("l1/target", "L1 ↓", "{:.4f}"), ("ssim/target", "SSIM ↑", "{:.4f}"),
            ("lpips/target", "LPIPS ↓", "{:.4f}"), ("fid", "FID ↓", "{:.1f}"), ("kid", "KID×10³ ↓", "{:.1f}"))
DO_NOTHING = "do nothing (input)"


def add_eval_paired_command(subparsers):
    p = subparsers.add_parser(
        "eval-paired", help="a paired run (pix2pix) on its held-out ids beside do-nothing and baseline exports",
        description="Translate the held-out source pictures of a paired run (pix2pix; the ids in its run.json) "
                    "with the run's export, with nothing (the input itself) and with each --baseline translation "
                    "export, and print L1 / SSIM / LPIPS to the true target of the same id and FID / KID against "
                    "the target set, one row each. For a run folder the table is also logged to its metrics.jsonl "
                    "(--no-log to skip).")
    p.add_argument("run", help="paired run folder (or its export)")
    p.add_argument("--baseline", action="append", default=[], metavar="EXPORT",
                   help="a translation export or run to compare (repeatable), e.g. a CycleGAN run")
    p.add_argument("--source", metavar="PICTURES",
                   help="evaluate these source pictures instead of the run's held-out ids (paired by file name)")
    p.add_argument("--against", metavar="TARGETS",
                   help="the target set (default: the one the run was trained on)")
    p.add_argument("--metrics", help=f"comma-separated subset of {','.join(_ALLOWED)} (default: all)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=None,
                   help=f"KID subset seed (default: the run's evaluation seed, its seed + {EVAL_SEED_OFFSET})")
    p.add_argument("--background", default=None, help="background for transparent pictures (default: as recorded)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--no-log", action="store_true", help="do not append the result to the run's metrics.jsonl")
    p.set_defaults(func=run_eval_paired)
    return p


def _metrics(text: str | None) -> list[str]:
    names = [m.strip() for m in (text or PAIRED_DEFAULT).split(",") if m.strip()]
    bad = [m for m in names if m not in _ALLOWED]
    if bad or not names:
        raise ValueError(f"unknown paired metric {bad[0]!r}; choose from {', '.join(_ALLOWED)}" if bad
                         else "--metrics is empty")
    return names


def _translate_all(engine, pictures, batch_size: int):
    """uint8 outputs of ``engine`` (A -> B) for uint8 pictures, on the CPU; NaN outputs are an error."""
    import torch

    from .inception import as_uint8_rgb

    out = []
    for s in range(0, len(pictures), batch_size):
        y = engine.translate(pictures[s:s + batch_size])
        if not torch.isfinite(y).all():
            raise ValueError(f"{getattr(engine, 'export_path', engine.name)}: the translator produced NaN/Inf pixels")
        out.append(as_uint8_rgb(y).cpu())
    return torch.cat(out)


def score_rows(rows: dict[str, Any], truth, target, metrics, device=None, batch_size: int = 50,
               seed: int = 0) -> dict[str, dict[str, float]]:
    """Per row (name -> uint8 outputs aligned with ``truth``): paired distances and FID/KID vs ``target``."""
    from .translation import feature_scores, paired_scores

    feats = [m for m in metrics if m in ("fid", "kid")]
    out = {}
    for name, images in rows.items():
        r = paired_scores(images, truth, metrics, device, batch_size)
        if feats:
            r.update(feature_scores(images, target, feats, batch_size, device, seed))
        out[name] = r
    return out


def evaluate_paired(engine, pictures, target, baselines: list | None = None, metrics=PAIRED_DEFAULT,
                    device=None, batch_size: int = 50, seed: int = 0,
                    baseline_pictures=None) -> tuple[dict[str, dict[str, float]], int]:
    """({row name: metrics}, pairs) for ``engine`` on ``pictures`` (a set with file names; their true targets
    are found in ``target`` by id), the do-nothing row and each baseline engine. ``baseline_pictures(engine)``
    gives a baseline the pictures at its own size (default: the same pictures, resized)."""
    import numpy as np
    import torch

    from .inception import as_uint8_rgb
    from .sources import resize_uint8
    from .translation import paired_indices, true_targets

    metrics = _metrics(metrics) if isinstance(metrics, str) else list(metrics)
    size = (engine.image_size, engine.image_size)
    i, j = paired_indices(list(pictures.files or []), list(target.files or []))
    if len(i) < 2:
        raise ValueError(f"{len(i)} of the {len(pictures.images)} source picture(s) have a target of the same id; "
                         "paired evaluation needs at least 2 pairs")
    keep = torch.as_tensor(i)
    inputs = resize_uint8(as_uint8_rgb(pictures.images[keep]), size)
    truth = true_targets(target, j, size)
    rows = {engine.name: _translate_all(engine, inputs, batch_size), DO_NOTHING: inputs}
    for b in baselines or []:
        if getattr(b, "kind", "") != "translate" or "AB" not in getattr(b, "directions", ()):
            raise ValueError(f"baseline {getattr(b, 'export_path', b.name)}: not a translation export with a "
                             "source -> target direction")
        name, k = b.name, 2
        while name in rows:
            name, k = f"{b.name}-{k}", k + 1
        bsize = (b.image_size, b.image_size)
        src = baseline_pictures(b) if baseline_pictures else None
        if src is None:
            src = resize_uint8(inputs, bsize)
        else:  # the same held-out ids, in the same order, prepared at the baseline's size
            where = {f: n for n, f in enumerate(src.files)}
            order = [where[pictures.files[n]] for n in np.asarray(i).tolist()]
            src = as_uint8_rgb(src.images[torch.as_tensor(order)])
        rows[name] = resize_uint8(_translate_all(b, src, batch_size), size)
    return score_rows(rows, truth, target, metrics, device, batch_size, seed), int(len(i))


def format_table(results: dict[str, dict[str, float]], head: str = "") -> str:
    cols = [c for c in _COLUMNS if any(c[0] in r for r in results.values())]
    name_w = max(len(n) for n in results)
    cells = [[n] + [("–" if k not in r else fmt.format(r[k] * (1000 if k == "kid" else 1))) for k, _, fmt in cols]
             for n, r in results.items()]
    widths = [name_w] + [max(len(h), *(len(c[i + 1]) for c in cells)) for i, (_, h, _) in enumerate(cols)]
    lines = [head] if head else []
    lines.append("  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i])
                           for i, h in enumerate(["translator"] + [h for _, h, _ in cols])))
    lines += ["  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row))
              for row in cells]
    return "\n".join(lines)


def log_values(results: dict[str, dict[str, float]], engine_name: str) -> dict[str, float]:
    """The metrics.jsonl keys: the run's row as is, do nothing as ``<key>_input``, baselines under
    ``baseline/<name>/``."""
    out: dict[str, float] = {}
    for name, r in results.items():
        for k, v in r.items():
            if name == engine_name:
                out[k] = v
            elif name == DO_NOTHING:
                if k != "kid_std":
                    out[f"{k}_input"] = v
            else:
                out[f"baseline/{name}/{k}"] = v
    return out


def run_eval_paired(args) -> int:
    from ..data.prepare import load_dataset
    from ..runs.export import load_export, read_export_config
    from ..paired import held_out_subset
    from ..runs.folder import RunWriter, is_run_dir, read_info

    run = Path(args.run)
    if not run.exists():
        raise FileNotFoundError(f"RUN {run}: no such run or export folder")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    metrics = _metrics(args.metrics)
    export_cfg = read_export_config(run)
    if export_cfg.get("kind") != "translate":
        raise ValueError(f"{run}: engine {export_cfg.get('engine')!r} is not a translation engine")
    pairing = (export_cfg.get("trained") or {}).get("pairing")
    if not args.source and not isinstance(pairing, dict):
        raise ValueError(f"{run}: no held-out split is recorded (not a paired run such as pix2pix); give the "
                         "pictures to evaluate with --source")
    log = is_run_dir(run) and not args.no_log
    if log and read_info(run).get("status") == "running":
        raise ValueError(f"{run} is still training (status 'running'); evaluate it when it has stopped, or --no-log")
    device = _device(args.device)
    facts = _training_facts(run, export_cfg)
    seed = args.seed if args.seed is not None else (facts.get("seed") or 0)
    recs = facts.get("datasets") or []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = load_export(run, device=device)
        _match_training_precision(engine, facts, device)
        _warn_on_differences(facts, device)
        against = Path(args.against) if args.against else _recorded(export_cfg, "dataset", "target (real) set")
        target = load_dataset(against, size=engine.image_size, progress=False,
                              **_prepare_options(recs[-1] if recs else None, args, recorded=not args.against))
        source = Path(args.source) if args.source else _recorded(export_cfg, "source_dataset", "source set")
        src_opts = _prepare_options(recs[0] if len(recs) > 1 else None, args, recorded=not args.source)
        pictures = load_dataset(source, size=engine.image_size, progress=False, **src_opts)
        if not args.source:
            pictures = held_out_subset(pictures, pairing)
        baselines = [load_export(b, device=device) for b in args.baseline]

        def at_own_size(b):  # the baseline's pictures prepared as the run's were, at its size
            return None if b.image_size == engine.image_size else \
                load_dataset(source, size=b.image_size, progress=False, **src_opts)

        results, pairs = evaluate_paired(engine, pictures, target, baselines, metrics, device, args.batch_size,
                                         seed, baseline_pictures=at_own_size)
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    split = "the given pictures" if args.source else f"held-out ids (val_fraction {pairing.get('val_fraction')})"
    head = (f"{run} ({engine.name}, {engine.image_size} px): {pairs} pairs, {split}; FID/KID against "
            f"{against} ({len(target.images)} pictures)")
    if log:
        epoch = facts.get("export_epoch") if facts.get("export_epoch") is not None else read_info(run).get("epoch")
        step = facts.get("export_step") if facts.get("export_step") is not None else read_info(run).get("step")
        values = log_values(results, engine.name)
        writer = RunWriter(run)
        writer.log("eval", int(epoch or 0), int(step or 0), **values, paired_n=float(pairs), eval_n=float(pairs),
                   eval_by="pokelab eval-paired", eval_seed=int(seed),
                   eval_split="given" if args.source else "held-out",
                   baselines=[str(b) for b in args.baseline])
        writer.append_log("pokelab eval-paired:\n" + format_table(results, head))
        for msg in notes:
            writer.append_log(f"warning: {msg}")
    if args.json:
        print(json.dumps({"run": str(run), "engine": engine.name, "image_size": engine.image_size, "pairs": pairs,
                          "split": "given" if args.source else "held-out", "against": str(against),
                          "baselines": [str(b) for b in args.baseline], "seed": seed, "rows": results,
                          "logged": log, "warnings": notes}, indent=2))
    else:
        for msg in notes:
            print(f"warning: {msg}", file=sys.stderr)
        print(format_table(results, head))
        if log:
            print(f"logged to {run / 'metrics.jsonl'}")
    return 0
