"""How long the studio takes to read and aggregate many runs (target: < 1 s for 20 runs x 1000 epochs).

    python benchmarks/studio_load.py [--runs 20] [--epochs 1000] [--repeat 3]

Writes synthetic pokelab runs (metrics only: one train line per epoch, an eval line every 10 epochs)
into a temp dir, then times the studio's own loading code, cold (nothing cached):
discover -> load every run (parse metrics.jsonl, build the frames) -> runs table -> verdicts.
Also times the per-run change check the page does on every refresh (signatures only).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio import data as D  # noqa: E402
from studio.demo import write_synthetic  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_synthetic(tmp, runs=args.runs, epochs=args.epochs)
        size = sum(p.stat().st_size for p in Path(tmp).rglob("metrics.jsonl"))
        lines = sum(1 for p in Path(tmp).rglob("metrics.jsonl") for _ in open(p, "rb"))
        print(f"wrote {args.runs} runs x {args.epochs} epochs: {lines} metric lines, {size / 2**20:.1f} MiB "
              f"({time.perf_counter() - t0:.1f} s)")
        times, sig_times = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            runs = D.load_runs([tmp])
            table = D.runs_table(runs)
            verdicts = [D.verdict(r) for r in runs]
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
            sigs = [D.signature(p, tool) for p, tool, _ in D.discover([tmp])]
            sig_times.append(time.perf_counter() - t)
        assert len(runs) == args.runs and len(table) == args.runs and len(verdicts) == args.runs and len(sigs) == args.runs
        assert all(len(r.train) == args.epochs for r in runs)
        best = min(times)
        print(f"load + aggregate {args.runs} runs x {args.epochs} epochs: best {best:.3f} s, "
              f"median {statistics.median(times):.3f} s over {args.repeat} (target < 1 s: "
              f"{'met' if best < 1 else 'NOT met'})")
        print(f"refresh check (discover + signatures, nothing changed): {min(sig_times) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
