"""Do the metrics agree with the raters? Kendall's tau between the human ranking of review sources (Bradley-Terry,
``studio.review_stats``) and each metric's ranking of the same sources. Pure functions, no UI (docs/studio.md).

- Sources -> runs: a review source id is ``ENGINE:PATH`` of an export (``app.exports.ExportEntry.source_id``:
  the export folder relative to the repository, or absolute). It is matched to a run the studio has loaded from
  its configured folders (never a file outside them): the run whose folder is PATH's parent when PATH ends in
  ``export``, else the run named by the export's ``config.json`` (``trained.run_id``), read only when that
  file lies inside the folders. ``real:…`` and ``sd-pokemon:…`` sources have no run: their metrics are blank
  and they take no part in tau (they still shape the Bradley-Terry fit, which uses every rating).
- A run's metric is its latest logged value (the last evaluation line that has it; the trainer's and
  ``pokelab eval --log``'s lines alike), with that evaluation's epoch and sample count.
- Direction: lower FID/KID is better, higher precision/recall is better; each metric is turned into a
  "goodness" before ranking, so tau = +1 means the metric orders the sources exactly as the raters do.
- Kendall's tau-b (ties in either ranking handled: (concordant - discordant) / sqrt(pairs untied in x * pairs
  untied in y)); values closer than ``TIE_TOL`` count as ties. Undefined (NaN) with fewer than two sources,
  or when one side ties everything.
- Interval: percentile bootstrap over review judgements: resample the ratings of the question with replacement,
  refit Bradley-Terry (``review_stats.bootstrap_thetas``, the same resamples as the strength intervals' method),
  recompute tau against the fixed metric values. It covers the raters' noise, not the metrics' own (an FID from
  2000 samples has its own spread, see docs/metrics.md). With 3 sources tau can only take 4 values
  (-1, -1/3, 1/3, 1): the interval is then necessarily wide, and the page says so.
"""
from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import numpy as np
import pandas as pd

from engines.runs import folder as R
from studio import data as D
from studio import paths as PA
from studio import review_stats as RS

#: metric key in metrics.jsonl -> (display name, "lower" or "higher" is better)
METRICS: dict[str, tuple[str, str]] = {
    "fid": ("FID", "lower"),
    "kid": ("KID", "lower"),
    "precision": ("precision", "higher"),
    "recall": ("recall", "higher"),
}
TIE_TOL = 1e-9
#: with fewer sources than this the interval is flagged as uninformative
FEW_SOURCES = 5
#: bootstrap resamples on the studio page
DEFAULT_BOOT = 500
MAX_EXPORT_CONFIG_BYTES = 1 * 2**20


# ---- Kendall's tau-b -------------------------------------------------------------------------
def kendall_tau_b(x: Iterable[float], y: Iterable[float] | np.ndarray, tol: float = TIE_TOL) -> float | np.ndarray:
    """Kendall's tau-b of x and y (1-D, same length); ``y`` may be a batch [B, n] (one tau per row, used for the
    bootstrap). NaN where undefined (n < 2, or every pair tied on one side). Agrees with
    ``scipy.stats.kendalltau`` (variant 'b'); written out here because the bootstrap needs hundreds at once."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = x.shape[-1]
    if y.shape[-1] != n:
        raise ValueError(f"x and y differ in length ({n} vs {y.shape[-1]})")
    if n < 2:
        return np.full(y.shape[:-1], np.nan) if y.ndim > 1 else float("nan")
    i, j = np.triu_indices(n, 1)

    def signs(v):
        d = v[..., j] - v[..., i]
        return np.sign(d) * (np.abs(d) > tol)

    sx, sy = signs(x), signs(y)
    s = (sx * sy).sum(axis=-1)
    denom = np.sqrt(np.count_nonzero(sx, axis=-1) * np.count_nonzero(sy, axis=-1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(denom > 0, s / np.where(denom > 0, denom, 1.0), np.nan)
    return float(tau) if np.ndim(tau) == 0 else tau


# ---- sources -> runs -> metrics -------------------------------------------------------------------
def split_source(source: str) -> tuple[str, str]:
    """('dcgan', 'checkpoints/runs/<id>/export') of 'dcgan:checkpoints/runs/<id>/export'; ('', text) without a colon."""
    head, sep, rest = str(source).partition(":")
    return (head, rest) if sep else ("", head)


def _export_run_id(path: Path, allowed: list[Path]) -> str | None:
    """``trained.run_id`` of an export folder's config.json, read only inside the allowed folders."""
    cfg = path / "config.json"
    if not PA.is_inside(cfg, allowed):
        return None
    try:
        data = json.loads(R.read_regular_bytes(cfg, MAX_EXPORT_CONFIG_BYTES).decode("utf-8"))
    except (OSError, ValueError, R.RunFormatError, RecursionError):
        return None
    t = data.get("trained") if isinstance(data, dict) else None
    rid = t.get("run_id") if isinstance(t, dict) else None
    return rid if isinstance(rid, str) and rid and PurePosixPath(rid).name == rid else None


def match_run(source: str, runs: list[D.Run], allowed: Iterable[Path] = (),
              base: Path | None = None) -> tuple[D.Run | None, str]:
    """The run behind a review source, and why not when there is none. PATH may name the export (``…/<run>/export``),
    the run folder itself (``…/<run>``), or an export copied elsewhere whose config.json names its run."""
    engine, rest = split_source(source)
    if not engine or engine == "real" or engine.startswith("sd-") or not rest:
        return None, "not a trained export"
    p = PurePosixPath(rest.replace("\\", "/"))
    by_id: dict[str, list[D.Run]] = {}
    for r in runs:
        rid = r.info.get("run_id") if isinstance(r.info.get("run_id"), str) else None
        for k in {r.path.name, rid} - {None}:
            by_id.setdefault(k, []).append(r)
    if p.name == "export":
        wanted = p.parent.name
    elif p.name in by_id:
        wanted = p.name
    else:  # an export copied out of its run folder (checkpoints/<name>): its config names the run
        local = Path(rest) if Path(rest).is_absolute() else (base or PA.REPO_ROOT) / rest
        wanted = _export_run_id(local, list(allowed))
        if wanted is None:
            return None, "no run folder found for this export"
    cands = [r for r in by_id.get(wanted, []) if r.engine == engine]
    if not cands:
        return None, f"no {engine} run {wanted} in the studio's run folders"
    if len(cands) > 1:  # the same run in two places: the one at the recorded path, else the first
        tail = str(p.parent if p.name == "export" else p)
        for r in cands:
            if str(r.path).replace("\\", "/").endswith(tail):
                return r, ""
    return cands[0], ""


def latest_metrics(run: D.Run) -> dict[str, Any]:
    """Each metric's latest value, and the epoch and sample count of the latest FID (else KID) evaluation."""
    out: dict[str, Any] = {}
    counts = D.eval_counts(run) if len(run.evals) else pd.Series(dtype=float)
    for key in METRICS:
        s = run.column("evals", key)
        out[key] = float(s.iloc[-1]) if s is not None and math.isfinite(float(s.iloc[-1])) else None
        if s is not None and "epoch" not in out:
            x = float(s.index[-1])
            out["epoch"] = x
            at = counts[(run.evals["x"] == x).to_numpy()] if len(counts) else []
            n = float(at.iloc[-1]) if len(at) else float("nan")
            out["eval_n"] = None if n != n else int(n)
    return out


def source_metrics(sources: list[str], runs: list[D.Run], allowed: Iterable[Path] = ()) -> pd.DataFrame:
    """One row per source: run (label), kind, image size, epoch and samples of the evaluation, fid, kid,
    precision, recall (NaN where not logged), note (why no run)."""
    rows = []
    for s in sources:
        run, why = match_run(s, runs, allowed)
        row: dict[str, Any] = {"source": s, "run": None, "kind": None, "size": None, "epoch": None,
                               "eval_n": None, **{k: None for k in METRICS}, "note": why}
        if run is not None:
            row.update(run=run.label or run.path.name, kind=run.kind, size=D.image_size(run), **latest_metrics(run))
            if all(row[k] is None for k in METRICS):
                row["note"] = "its run logged none of these metrics"
        rows.append(row)
    df = pd.DataFrame(rows, columns=["source", "run", "kind", "size", "epoch", "eval_n", *METRICS, "note"])
    for k in METRICS:
        df[k] = pd.to_numeric(df[k], errors="coerce").astype(float)
    return df


# ---- agreement -----------------------------------------------------------------------------------
def goodness(values: np.ndarray, key: str) -> np.ndarray:
    """Metric values turned so that larger is better."""
    return -values if METRICS[key][1] == "lower" else values


def comparability(metrics: pd.DataFrame, key: str) -> str:
    """A note when the sources' values of FID/KID/precision/recall come from evaluations that do not compare:
    different kinds (generation vs translation), image sizes, or (FID: biased in n) sample counts."""
    have = metrics[metrics[key].notna()]
    bits = []
    if have["kind"].nunique() > 1:
        bits.append("generation and translation runs")
    if have["size"].nunique() > 1:
        bits.append("image sizes " + ", ".join(f"{int(v)} px" for v in sorted(have["size"].dropna().unique())))
    if key == "fid" and have["eval_n"].nunique() > 1:
        bits.append("sample counts " + ", ".join(f"{int(v):,}" for v in sorted(have["eval_n"].dropna().unique())))
    return ("not strictly comparable: " + "; ".join(bits)) if bits else ""


def agreement(rows: list[dict[str, Any]], metrics: pd.DataFrame, n_boot: int = 500, seed: int = 0,
              level: float = 0.95, prior: float | str = "auto") -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """For the ratings of one question: (scores, taus, notes).

    scores: per source, Bradley-Terry strength beside the source's metrics (``source_metrics`` columns), strongest
    first. taus: per metric, better (lower/higher), sources (with a strength and a value), tau, lo, hi (bootstrap
    percentile interval at ``level``), p_pos (share of resamples with tau > 0), note."""
    table, info = RS.rank_sources(rows, ci="fisher", prior=prior)
    notes = list(info["notes"])
    cols = ["metric", "key", "better", "sources", "tau", "lo", "hi", "p_pos", "note"]
    if not len(table):
        return pd.DataFrame(columns=["source", "strength"]), pd.DataFrame(columns=cols), notes
    scores = table[["source", "theta"]].rename(columns={"theta": "strength"}).merge(
        metrics, on="source", how="left")
    sources = info["sources"]
    strength = table.set_index("source")["theta"].reindex(sources).to_numpy()
    boot = RS.bootstrap_thetas(rows, sources, info.get("prior", 0.0), n_boot, seed) if n_boot > 0 else None
    m = metrics.set_index("source").reindex(sources)
    a = (1 - level) / 2
    out = []
    for key, (name, better) in METRICS.items():
        vals = m[key].to_numpy(dtype=float)
        use = np.isfinite(vals)
        k = int(use.sum())
        row = {"metric": name, "key": key, "better": better, "sources": k, "tau": np.nan, "lo": np.nan,
               "hi": np.nan, "p_pos": np.nan, "note": ""}
        if k < 2:
            row["note"] = (f"undefined: {k} source(s) with both a human score and a {name}" if k else
                           f"no source has a {name}")
            out.append(row)
            continue
        g = goodness(vals[use], key)
        row["tau"] = kendall_tau_b(strength[use], g)
        if boot is not None:
            taus = kendall_tau_b(g, boot[:, use])
            ok = taus[np.isfinite(taus)]
            if len(ok):
                row["lo"], row["hi"] = float(np.quantile(ok, a)), float(np.quantile(ok, 1 - a))
                row["p_pos"] = float((ok > 0).mean())
        bits = []
        if not np.isfinite(row["tau"]):
            bits.append(f"undefined: every source has the same {'strength' if np.ptp(g) > TIE_TOL else name}")
        elif k == 2:
            bits.append("only 2 sources: τ is −1 or +1, a direction at most")
        elif k < FEW_SOURCES:
            bits.append(f"only {k} sources: τ moves in steps of {4 / (k * (k - 1)):.2g}; a direction, not a measure")
        c = comparability(metrics[metrics["source"].isin(np.asarray(sources)[use])], key)
        if c:
            bits.append(c)
        row["note"] = "; ".join(bits)
        out.append(row)
    if boot is not None:
        notes.append(f"intervals: {n_boot} bootstrap resamples of the ratings (seed {seed}), Bradley-Terry refitted "
                     f"on each; the metric values are held fixed")
    return scores.reset_index(drop=True), pd.DataFrame(out, columns=cols), notes


def all_questions(rows: list[dict[str, Any]], metrics: pd.DataFrame, questions: list[str], n_boot: int = 500,
                  seed: int = 0) -> pd.DataFrame:
    """The taus of every question in one table (question first)."""
    frames = []
    for q in questions:
        _, taus, _ = agreement(RS.for_question(rows, q), metrics, n_boot=n_boot, seed=seed)
        if len(taus):
            frames.append(taus.assign(question=q))
    if not frames:
        return pd.DataFrame(columns=["question", "metric", "key", "better", "sources", "tau", "lo", "hi", "p_pos",
                                     "note"])
    df = pd.concat(frames, ignore_index=True)
    return df[["question"] + [c for c in df.columns if c != "question"]]


# ---- tables for the page --------------------------------------------------------------------------
_FORMATS = {"fid": "{:.2f}", "kid": "{:.4f}", "precision": "{:.3f}", "recall": "{:.3f}"}


def scores_display(scores: pd.DataFrame) -> pd.DataFrame:
    """The per-source table as shown: strength, then each metric as text ("—" where the run did not log it)."""
    out = pd.DataFrame({"source": scores["source"], "human strength": scores["strength"].astype(float)})
    for key, (name, _) in METRICS.items():
        out[name] = [("—" if v is None or v != v else _FORMATS[key].format(v)) for v in scores.get(key, [])]
    out["run"] = [r if isinstance(r, str) else "—" for r in scores.get("run", [])]

    def when(row) -> str:
        if row.get("epoch") is None or row.get("epoch") != row.get("epoch"):
            return row.get("note") or ""
        n = row.get("eval_n")
        return f"epoch {D.fmt_x(row['epoch'])}" + (f" · n = {int(n):,}" if n is not None and n == n else "")

    out["evaluation"] = [when(r) for r in scores.to_dict("records")]
    return out


def taus_display(taus: pd.DataFrame) -> pd.DataFrame:
    return taus.rename(columns={"tau": "Kendall τ", "lo": "95% low", "hi": "95% high", "p_pos": "P(τ > 0)"}).drop(
        columns=["key"])
