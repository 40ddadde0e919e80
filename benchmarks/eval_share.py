"""Evaluation's share of a CPU run's time: as logged, at the protocol cadence, and with the evaluation budget.

    python benchmarks/eval_share.py checkpoints/runs/*        # runs to read (their run.json and metrics.jsonl)
    python benchmarks/eval_share.py RUN --budget 0.15 --n 2000 --every 10 --epochs 1000   # at the protocol's length

Per run, from its own log (nothing is trained or evaluated here):
  training seconds  the sum of its epochs' ``epoch_seconds`` (grids, checkpoints and evaluation excluded)
  cost of one evaluation at --n samples: a logged evaluation at that n if there is one (e.g. a `pokelab eval --log`
      line), else the trainer's evaluations scaled by n (their median seconds per sample; the Inception passes
      dominate and grow with n)
  as logged    the trainer's own evaluations (their eval_seconds) against the training seconds
  protocol     every --every epochs and the last, each at the cost above
  budget       the cadence engines/eval_cadence.py would choose (replayed over the logged epoch times)
The replay gives generators the cost before their first evaluation (the trainer's probe estimates it), so that one
can be skipped too; translation runs learn it from their first evaluation, as the trainer does.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.config import TrainConfig  # noqa: E402
from engines.eval_cadence import EvalCadence, replay  # noqa: E402
from engines.runs.folder import is_run_dir, read_info, read_metrics  # noqa: E402


def eval_cost(evals: list[dict], n: int) -> tuple[float | None, str]:
    """(seconds of one evaluation of n samples, where the figure comes from)."""
    at_n = [e["eval_seconds"] for e in evals if e.get("eval_n") == n and e.get("eval_seconds")]
    if at_n:
        return float(statistics.median(at_n)), f"logged at n={n}"
    per = [e["eval_seconds"] / e["eval_n"] for e in evals if e.get("eval_n") and e.get("eval_seconds")]
    if not per:
        return None, "no evaluation logged"
    return float(statistics.median(per)) * n, f"scaled from n={int(evals[-1].get('eval_n', 0))}"


def share(train: float, evals: float) -> float:
    return evals / (train + evals) if train + evals else 0.0


def analyse(run: Path, n: int, every: int, budget: float, length: int | None = None) -> dict | None:
    info = read_info(run)
    m = read_metrics(run)
    epochs = {int(t["epoch"]): float(t["epoch_seconds"]) for t in m.train if t.get("epoch_seconds")}
    if not epochs:
        return None
    seconds = [epochs.get(e, 0.0) for e in range(1, max(epochs) + 1)]
    if length:  # the run at another length: its last epochs' median pace carried on (or cut)
        pace = statistics.median(seconds[-10:])
        seconds = (seconds + [pace] * max(0, length - len(seconds)))[:length]
    train = sum(seconds)
    trainer_evals = [e for e in m.eval if "eval_by" not in e and e.get("eval_seconds")]
    cost, source = eval_cost(m.eval, n)
    out = {"run": run.name, "engine": info.get("engine", "?"), "device": str(info.get("device", "?")),
           "epochs": len(seconds), "train_s": train, "logged_evals": len(trainer_evals),
           "logged_share": share(train, sum(e["eval_seconds"] for e in trainer_evals)),
           "cost_s": cost, "cost_from": source}
    if cost is None:
        return out
    protocol_count = len([e for e in range(1, len(seconds) + 1) if e % every == 0 or e == len(seconds)])
    out["protocol_evals"], out["protocol_share"] = protocol_count, share(train, protocol_count * cost)
    cfg = TrainConfig(epochs=len(seconds), eval_every=every, eval_n=n, eval_budget=budget)
    cadence = EvalCadence(cfg, "budget", "replayed", [], n)  # the budget's choice with this protocol cadence
    if info.get("kind", "generate") == "generate":
        cadence.estimate = cost  # the trainer's probe, before the first evaluation (translation: none)
    evaluated, budget_share = replay(cadence, seconds, cost)
    out["budget_evals"], out["budget_share"], out["budget_epochs"] = len(evaluated), budget_share, evaluated
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders")
    ap.add_argument("--n", type=int, default=2000, help="samples per evaluation (default: the protocol's 2000)")
    ap.add_argument("--every", type=int, default=10, help="protocol cadence in epochs (default 10)")
    ap.add_argument("--epochs", type=int, help="replay each run at this length (e.g. the protocol's 1000), its last "
                                               "epochs' median time carried on; default: as long as it ran")
    ap.add_argument("--budget", type=float, default=TrainConfig.eval_budget,
                    help=f"evaluation budget (default {TrainConfig.eval_budget})")
    args = ap.parse_args()
    rows = [r for p in args.runs
            if is_run_dir(Path(p)) and (r := analyse(Path(p), args.n, args.every, args.budget, args.epochs))]
    if not rows:
        raise SystemExit("no run with per-epoch epoch_seconds among the given folders")
    print(f"evaluation share of wall time (training + evaluation), n={args.n}, protocol every {args.every} epochs, "
          f"budget {args.budget:.0%}" + (f", each run replayed at {args.epochs} epochs" if args.epochs else "") + "\n")
    print(f"{'run':<46} {'epochs':>6} {'train h':>7} {'eval s':>7} {'logged':>14} {'protocol':>14} "
          f"{'budget':>14}  cost from")
    for r in rows:
        def cell(count, sh):
            return f"{count:>4} {sh:>8.0%}" if sh is not None else f"{'':>14}"
        cost = "" if r["cost_s"] is None else f"{r['cost_s']:.0f}"
        print(f"{r['run'][:46]:<46} {r['epochs']:>6} {r['train_s'] / 3600:>7.2f} {cost:>7} "
              f"{cell(r['logged_evals'], r['logged_share'])} "
              f"{cell(r.get('protocol_evals', 0), r.get('protocol_share'))} "
              f"{cell(r.get('budget_evals', 0), r.get('budget_share'))}  {r['cost_from']}")
    print("\ncolumns: evaluations and their share of the run's time. budget: the epochs evaluated are "
          "engines/eval_cadence.py's choice replayed over the logged epoch times (the last epoch always).")
    for r in rows:
        e = r.get("budget_epochs")
        if e:
            shown = ", ".join(map(str, e)) if len(e) <= 8 else ", ".join(map(str, e[:5])) + ", ..., " + \
                ", ".join(map(str, e[-2:]))
            print(f"  {r['run']}: the budget evaluates at epochs {shown}")


if __name__ == "__main__":
    main()
