"""Quality at equal compute: FID and KID of each run after 0.5, 1, 2 and 3 hours of training, side by side.

    python benchmarks/quality_per_hour.py                       # the shipped runs (checkpoints/runs)
    python benchmarks/quality_per_hour.py runs/ RUN ...         # runs, or folders holding runs
    python benchmarks/quality_per_hour.py --marks 0.25 0.5 1    # other marks (hours)
    python benchmarks/quality_per_hour.py --x images            # at equal images seen: 25, 50, 100, 200 kimg
    python benchmarks/quality_per_hour.py --show-at             # where each value was measured

One row per run: engine, kind, image size, samples per evaluation, training hours and kimg in all, then FID
and KID at each mark: the value of the last evaluation at or before the mark. "—": the run trained less than
the mark; "·": no evaluation by then (an evaluation up to 1 % past a mark counts for it: a run stopped by
``--max-hours 3`` ends on the step that crosses 3 h). Training hours are the training wall clock with evaluation
left out (pokelab: the cumulative ``epoch_seconds``; stylegan2-ada folders: ``Timing/sec_per_tick``); images seen are
step x batch size (translation runs: source-domain images). Runs are read with the studio's reader
(``studio.data``: the same numbers as the studio's "training hours" and "images seen" axes); runs that did not
log what an axis needs are listed with the reason. FID depends on the number of samples (biased upwards below
2048) and on the image size, so compare rows with the same size and sample count; KID is unbiased.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))

from studio import data as D  # noqa: E402

AXES = {"hours": "hours", "images": "kimg"}
DEFAULT_MARKS = {"hours": (0.5, 1.0, 2.0, 3.0), "kimg": (25.0, 50.0, 100.0, 200.0)}
SHORTER, NONE_YET, UNKNOWN = "—", "·", "n/a"
_EPS = 1e-9
# A run stopped by --max-hours H (or an image budget) finishes the step that crosses H and is evaluated there:
# an evaluation up to 1 % past a mark counts for it, so a 3 h run's last evaluation is its 3 h value.
MARK_TOLERANCE = 0.01


def mark_label(mark: float, axis: str) -> str:
    return f"{mark:g}h" if axis == "hours" else f"{mark:g}kimg"


def _total(run: D.Run, axis: str, m: D.XMap | None) -> float | None:
    """Training hours, or kimg, of the whole run so far."""
    if axis == "hours":
        return D.training_hours(run)
    if m is not None and m.identity:  # stylegan2-ada: its own kimg
        return run.done
    return m.end if m is not None else None


def values_at(run: D.Run, m: D.XMap, metric: str, marks: list[float], total: float | None) -> list[dict[str, Any]]:
    """Per mark: {"value", "x" (the run's own x of the evaluation used), "at" (its position on the axis)} of the
    last evaluation of ``metric`` at or before the mark (or within MARK_TOLERANCE past it); {"value": None,
    "why": "shorter" | "none"} where the run trained less than the mark or had no evaluation by then."""
    s = run.column("evals", metric)
    pos = m(s.index.to_numpy(dtype=float)) if s is not None else None
    out = []
    for mark in marks:
        if total is None or total < mark - _EPS:
            out.append({"value": None, "why": "shorter"})
            continue
        if s is None:
            out.append({"value": None, "why": "none"})
            continue
        ok = [i for i, p in enumerate(pos) if p == p and p <= mark * (1 + MARK_TOLERANCE) + _EPS]
        if not ok:
            out.append({"value": None, "why": "none"})
            continue
        i = max(ok, key=lambda k: pos[k])
        out.append({"value": float(s.iloc[i]), "x": float(s.index[i]), "at": float(pos[i])})
    return out


def table_rows(runs: list[D.Run], axis: str, marks: list[float]) -> list[dict[str, Any]]:
    """One dict per run: facts, totals and the FID/KID cells (``values_at``); ``why`` when the run cannot be put on
    the axis (its cells are then unknown)."""
    rows = []
    for r in runs:
        m, why = D.x_map(r, axis)
        hm, _ = D.x_map(r, "hours") if axis != "hours" else (m, why)
        km, _ = D.x_map(r, "kimg") if axis != "kimg" else (m, why)
        row = {"run": r.label, "engine": r.engine, "kind": r.kind, "size": D.image_size(r), "eval_n": D.eval_count(r),
               "hours": _total(r, "hours", hm), "kimg": _total(r, "kimg", km), "why": why, "unit": r.x_unit}
        total = _total(r, axis, m)
        for metric in ("fid", "kid"):
            row[metric] = values_at(r, m, metric, marks, total) if m is not None else None
        rows.append(row)
    # comparable rows next to each other: kind, image size, sample count, then engine
    return sorted(rows, key=lambda x: (x["kind"], x["size"] or 0, x["eval_n"] or 0, x["engine"], x["run"]))


def _cell(c: dict[str, Any] | None, fmt: str, axis: str, unit: str, show_at: bool) -> str:
    if c is None:
        return UNKNOWN
    if c["value"] is None:
        return SHORTER if c["why"] == "shorter" else NONE_YET
    text = format(c["value"], fmt)
    if show_at:
        where = f"{c['at']:.2f}h" if axis == "hours" else f"{c['at']:.1f}k"
        text += f" ({unit} {D.fmt_x(c['x'])}, {where})"
    return text


def format_table(rows: list[dict[str, Any]], axis: str, marks: list[float], show_at: bool = False) -> str:
    head = ["run", "engine", "kind", "size", "eval n", "hours", "kimg"]
    for mk in marks:
        head += [f"FID@{mark_label(mk, axis)}", f"KID@{mark_label(mk, axis)}"]
    body = []
    for r in rows:
        line = [r["run"], r["engine"], r["kind"], str(r["size"] or "?"), str(r["eval_n"] or "?"),
                "?" if r["hours"] is None else f"{r['hours']:.2f}", "?" if r["kimg"] is None else f"{r['kimg']:.1f}"]
        for k in range(len(marks)):
            for metric, fmt in (("fid", ".1f"), ("kid", ".4f")):
                cells = r[metric]
                line.append(_cell(cells[k] if cells is not None else None, fmt, axis, r["unit"], show_at))
        body.append(line)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    left = {0, 1, 2}

    def fmt_line(cols: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths))).rstrip()

    out = [fmt_line(head), fmt_line(["-" * w for w in widths])] + [fmt_line(b) for b in body]
    what = ("training hours (evaluation excluded)" if axis == "hours" else "images seen (kimg = step x batch size "
            "/ 1000; translation: source images)")
    out.append("")
    out.append(f"marks: {what}; each cell is the last evaluation at or before the mark. {SHORTER}: the run trained "
               f"less than the mark; {NONE_YET}: no evaluation by then; {UNKNOWN}: see below.")
    out.append("FID depends on the sample count (eval n) and the image size: compare rows that share both."
               + (" Equal hours are equal compute only on the same hardware." if axis == "hours" else ""))
    for r in rows:
        if r["why"]:
            out.append(f"{UNKNOWN} {r['run']}: {r['why']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="runs or folders holding runs (default: checkpoints/runs)")
    ap.add_argument("--x", choices=list(AXES), default="hours", help="marks in training hours or images seen (kimg)")
    ap.add_argument("--marks", type=float, nargs="+", help="the marks (default: 0.5 1 2 3 h, or 25 50 100 200 kimg)")
    ap.add_argument("--show-at", action="store_true", help="add where each value was measured")
    args = ap.parse_args(argv)
    axis = AXES[args.x]
    marks = sorted(args.marks or DEFAULT_MARKS[axis])
    roots = [Path(p) for p in args.runs] or [_REPO / "checkpoints" / "runs"]
    missing = [p for p in roots if not p.exists()]
    if missing:
        print(f"error: no such folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    runs = D.load_runs(roots)
    if not runs:
        print(f"no runs found in {', '.join(map(str, roots))}", file=sys.stderr)
        return 1
    print(format_table(table_rows(runs, axis, marks), axis, marks, args.show_at))
    problems = [(r.label, w) for r in runs for w in r.warnings]
    for label, w in problems:
        print(f"warning: {label}: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
