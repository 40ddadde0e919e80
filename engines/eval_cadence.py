"""When the trainer evaluates (docs/training.md, "Evaluation cadence").

The protocol evaluates every ``eval_every`` (10) epochs with ``eval_n`` (2000) samples. On a GPU that is a few
seconds per evaluation; on a CPU the Inception passes alone take minutes (0.1-0.4 s per image), so a small model
would spend most of its run evaluating. Hence:

- **budget** (the default off CUDA, ``eval_budget`` = 0.15): evaluations stay on the protocol's epochs
  (multiples of ``eval_every``), but one is skipped unless, right after it, evaluation has taken at most
  ``eval_budget`` of the run's time so far (evaluation seconds / (training + evaluation seconds)), and unless it
  still leaves room for the final evaluation within the budget at the planned end of the run. The cost of an
  evaluation is the last one's ``eval_seconds``; before the first, a probe times generating and embedding a few
  images (generators; other kinds learn it from their first evaluation). The last epoch is always evaluated: the
  run's final number. Training seconds are ``wall_seconds`` (epochs only: no grids, checkpoints or evaluation);
- **protocol**: every ``eval_every`` epochs and the last (on CUDA, under torchrun - every rank must agree on when
  to evaluate - or with ``eval_budget=0``);
- **explicit**: ``--set eval_every=N`` (or a TrainConfig whose eval_every differs from the engine's protocol) is
  kept as given: an explicit setting always wins over the budget;
- **off**: ``eval_every=0``.

Smoke runs (``epochs`` <= 5, ``eval_n`` not set explicitly) evaluate with ``SMOKE_EVAL_N`` samples instead of
``eval_n``: they check the pipeline, not the model. An event says so and run.json's ``eval_cadence`` records it,
with the mode, the epochs evaluated, the effective cadence and evaluation's share of the run's time.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import TrainConfig, explicit_settings

SMOKE_EPOCHS = 5
SMOKE_EVAL_N = 250
#: generated images the probe times (after one warm-up batch that loads the Inception network)
PROBE_IMAGES = 8
#: settings whose explicit value the cadence honours
_CADENCE_SETTINGS = ("eval_every", "eval_n", "eval_budget")


@dataclass
class EvalCadence:
    cfg: TrainConfig
    mode: str                     # budget | protocol | explicit | off
    reason: str                   # why this mode, in words
    explicit: list[str]
    eval_n: int
    smoke: bool = False
    probe: Callable[[], float | None] | None = None
    note: Callable[[int, str], None] | None = None  # (epoch, message): an event in the run's log
    evaluated: list[int] = field(default_factory=list)
    eval_seconds: float = 0.0     # all evaluations so far
    last_seconds: float | None = None  # the last evaluation's (the cost estimate of the next one)
    estimate: float | None = None      # the probe's estimate, before the first evaluation
    notes_given: list[str] = field(default_factory=list)

    @classmethod
    def plan(cls, cfg: TrainConfig, engine_cls, device_type: str, world: int = 1,
             probe: Callable[[], float | None] | None = None, note: Callable[[int, str], None] | None = None,
             explicit: set[str] | None = None) -> "EvalCadence":
        """The cadence of a run: ``explicit`` adds settings recorded as explicit (a resumed run's run.json) to
        those marked by ``--set`` and those that differ from the engine's protocol defaults."""
        protocol = TrainConfig.for_engine(engine_cls)
        marked = set(explicit or ()) | explicit_settings(cfg)
        marked |= {k for k in _CADENCE_SETTINGS if getattr(cfg, k) != getattr(protocol, k)}
        marked &= set(_CADENCE_SETTINGS)
        if not cfg.eval_every:
            mode, reason = "off", "eval_every=0"
        elif "eval_every" in marked:
            mode, reason = "explicit", f"eval_every={cfg.eval_every} set explicitly"
        elif device_type == "cuda":
            mode, reason = "protocol", "CUDA: the protocol cadence"
        elif world > 1:
            mode, reason = "protocol", "several processes: the protocol cadence (every rank evaluates together)"
        elif not cfg.eval_budget:
            mode, reason = "protocol", "eval_budget=0"
        else:
            mode, reason = "budget", (f"{device_type.upper()}: evaluation kept within {cfg.eval_budget:.0%} of the "
                                      f"run's time")
        smoke = cfg.epochs <= SMOKE_EPOCHS and "eval_n" not in marked and cfg.eval_n > SMOKE_EVAL_N
        return cls(cfg, mode, reason, sorted(marked), SMOKE_EVAL_N if smoke else int(cfg.eval_n), smoke,
                   probe if mode == "budget" else None, note)

    # ---- deciding ----------------------------------------------------------------------------------
    def known_cost(self) -> float | None:
        """Seconds the next evaluation is expected to take: the last one's, else the probe's, if made."""
        return self.last_seconds if self.last_seconds is not None else self.estimate

    def _cost(self, epoch: int) -> float | None:
        """``known_cost``, probing once when nothing is known yet."""
        if self.known_cost() is None and self.probe is not None:
            probe, self.probe = self.probe, None
            try:
                self.estimate = probe()
            except Exception as e:  # noqa: BLE001 — a failed probe must not stop training: learn from the first
                if self.note:
                    self.note(epoch, f"could not time an evaluation in advance ({type(e).__name__}: {e}); the first "
                                     "one will tell its cost")
                return None
            if self.estimate is not None and self.note:
                self.note(epoch, f"an evaluation of {self.eval_n} samples should take about {self.estimate:.0f} s "
                                 f"here (timed on {PROBE_IMAGES} images); evaluations are kept within "
                                 f"{self.cfg.eval_budget:.0%} of the run's time")
        return self.known_cost()

    def _fits(self, train_seconds: float, epoch: int, cost: float) -> bool:
        """Condition A (the share right after an evaluation now) and B (room for the final one)."""
        b, spent = float(self.cfg.eval_budget), self.eval_seconds
        if spent + cost > b * (train_seconds + spent + cost):
            return False
        end = self.planned_train_seconds(train_seconds, epoch)
        return spent + 2 * cost <= b * (end + spent + 2 * cost)

    def planned_train_seconds(self, train_seconds: float, epoch: int) -> float:
        """Training seconds at the end of the run, at the pace so far (capped by max_hours)."""
        end = train_seconds / max(epoch, 1) * int(self.cfg.epochs)
        return min(end, float(self.cfg.max_hours) * 3600) if self.cfg.max_hours else end

    def due(self, epoch: int, last: bool, train_seconds: float) -> bool:
        """Whether to evaluate at the end of ``epoch`` (``train_seconds``: the run's training time so far)."""
        if self.mode == "off":
            return False
        if last:
            return True
        if epoch % int(self.cfg.eval_every):
            return False
        if self.mode != "budget":
            return True
        cost = self._cost(epoch)
        return cost is None or self._fits(train_seconds, epoch, cost)

    def next_epoch(self, epoch: int, train_seconds: float) -> int | None:
        """The next epoch ``due`` will pick, at the training pace so far (None: only the final evaluation)."""
        every, end = int(self.cfg.eval_every), int(self.cfg.epochs)
        first = (epoch // every + 1) * every
        if self.mode != "budget" or first >= end:
            return first if first < end else None
        cost = self.known_cost()
        if cost is None:
            return first
        pace = train_seconds / max(epoch, 1)
        for e in range(first, end, every):
            if self._fits(train_seconds + (e - epoch) * pace, e, cost):
                return e
        return None

    # ---- recording -----------------------------------------------------------------------------------
    def record(self, epoch: int, seconds: float, train_seconds: float) -> list[str]:
        """Count an evaluation; the messages worth an event in the run's log (smoke run, stretched cadence) go to
        ``note`` and are returned."""
        self.evaluated.append(int(epoch))
        self.eval_seconds += float(seconds)
        self.last_seconds = float(seconds)
        notes = []
        if self.smoke and "smoke" not in self.notes_given:
            self.notes_given.append("smoke")
            notes.append(f"smoke run ({self.cfg.epochs} epochs <= {SMOKE_EPOCHS}): evaluated with {self.eval_n} "
                         f"samples instead of eval_n={self.cfg.eval_n} (set eval_n explicitly to keep it)")
        if self.mode == "budget" and epoch < int(self.cfg.epochs):
            nxt = self.next_epoch(epoch, train_seconds)
            protocol_next = (epoch // int(self.cfg.eval_every) + 1) * int(self.cfg.eval_every)
            if nxt != protocol_next:
                share = self.share(train_seconds)
                where = f"epoch {nxt}" if nxt is not None else f"the last epoch ({self.cfg.epochs})"
                notes.append(f"evaluation took {seconds:.0f} s ({share:.0%} of the run's time so far; budget "
                             f"{self.cfg.eval_budget:.0%}): next evaluation at {where} instead of epoch "
                             f"{protocol_next} (set eval_every explicitly, or eval_budget=0, to keep the protocol "
                             f"cadence)")
        for text in notes if self.note else ():
            self.note(epoch, text)
        return notes

    def share(self, train_seconds: float) -> float:
        total = train_seconds + self.eval_seconds
        return self.eval_seconds / total if total > 0 else 0.0

    def summary(self, train_seconds: float, epoch: int = 0) -> dict[str, Any]:
        """run.json's ``eval_cadence``."""
        out: dict[str, Any] = {
            "mode": self.mode, "reason": self.reason, "every": int(self.cfg.eval_every),
            "budget": float(self.cfg.eval_budget), "explicit": list(self.explicit), "eval_n": int(self.eval_n),
            "smoke": self.smoke, "evaluated": list(self.evaluated),
            "effective_every": round(self.evaluated[-1] / len(self.evaluated), 2) if self.evaluated else None,
            "eval_seconds": round(self.eval_seconds, 2), "eval_share": round(self.share(train_seconds), 4),
        }
        if self.mode != "off" and epoch < int(self.cfg.epochs):
            out["next"] = self.next_epoch(epoch, train_seconds)
        return out

    # ---- resume ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"evaluated": list(self.evaluated), "eval_seconds": float(self.eval_seconds),
                "last_seconds": self.last_seconds, "notes_given": list(self.notes_given)}

    def load_state_dict(self, st: dict[str, Any] | None) -> None:
        if not isinstance(st, dict):  # a checkpoint from before the cadence was recorded
            return
        self.evaluated = [int(e) for e in st.get("evaluated", [])]
        self.eval_seconds = float(st.get("eval_seconds", 0.0))
        last = st.get("last_seconds")
        self.last_seconds = float(last) if last is not None else None
        self.notes_given = [str(n) for n in st.get("notes_given", [])]


def explicit_from_info(info: dict[str, Any]) -> list[str]:
    """The settings a run recorded as explicit (run.json's eval_cadence.explicit)."""
    rec = info.get("eval_cadence")
    names = rec.get("explicit") if isinstance(rec, dict) else None
    return [n for n in names if n in _CADENCE_SETTINGS] if isinstance(names, list) else []


def probe_eval_seconds(engine, real, eval_n: int, device, seed: int, batch_size: int = 50) -> float | None:
    """A rough cost of one evaluation before any was made: ``PROBE_IMAGES`` generated images timed through the
    generator and the Inception network (after a warm-up batch), times ``eval_n``, plus the real set's own pass
    when its statistics are not cached yet. None for engines that do not sample (translation, upscaling)."""
    if getattr(engine, "kind", "generate") != "generate":
        return None
    import torch

    from .base import metrics_sampling
    from .metrics.fid import stats_cached
    from .metrics.inception import as_uint8_rgb, features_of_batch

    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        for warm in (True, False):
            t0 = time.perf_counter()
            with metrics_sampling():
                x = engine.sample(n=PROBE_IMAGES, seed=seed)
            t1 = time.perf_counter()
            features_of_batch(as_uint8_rgb(x), device)
            t2 = time.perf_counter()
    per_image, per_feature = (t2 - t0) / PROBE_IMAGES, (t2 - t1) / PROBE_IMAGES
    cost = per_image * eval_n
    size = (int(real.images.shape[-2]), int(real.images.shape[-1]))
    if not stats_cached(real.key, size, getattr(real, "name", "real")):
        cost += per_feature * len(real.images)
    return float(cost) if math.isfinite(cost) else None


def replay(cadence: EvalCadence, epoch_seconds: list[float], eval_seconds: float) -> tuple[list[int], float]:
    """The epochs ``cadence`` evaluates over a run whose epochs took ``epoch_seconds`` of training each and whose
    evaluations take ``eval_seconds`` each, and evaluation's final share of the time (benchmarks, tests)."""
    train = 0.0
    for epoch, sec in enumerate(epoch_seconds, start=1):
        train += float(sec)
        if cadence.due(epoch, epoch == len(epoch_seconds), train):
            cadence.record(epoch, eval_seconds, train)
    return list(cadence.evaluated), cadence.share(train)
