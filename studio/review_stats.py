"""Statistics of blind side-by-side reviews (rows from ``engines.review.load``). Pure functions, no UI.

Conventions (docs/studio.md):
- A tie counts as half a win for each side, in the win rates and in the Bradley-Terry fit.
- Ratings comparing a source with itself carry no information about sources and are left out of the
  win rates and the ranking (they still count as ratings, and in rater agreement).
- Bradley-Terry: P(i beats j) = p_i / (p_i + p_j), fitted by maximum likelihood with Hunter's MM
  algorithm (2004); reported as log-strengths theta_i = log p_i centred to mean 0. The MLE exists only
  when every source has won and lost against the others in a connected way (the "beat" graph is
  strongly connected); otherwise a weak prior is added: ``prior`` virtual games, half won, against a
  virtual opponent of strength 1 (theta 0) for every source.
- Confidence intervals: from the observed Fisher information (normal approximation, theta +- z*SE),
  or a percentile bootstrap over ratings.
- Agreement: on pairs judged by >= 2 different raters (the same two items, in either order, same
  question); each rater's latest answer counts. Percent agreement = mean over pairs of the share of
  agreeing rater pairs; Fleiss' kappa with a varying number of raters per item (Fleiss 1971's P_i
  with per-item m_i, category shares pooled over all answers) - Fleiss, not Cohen, because different
  pairs are judged by different raters.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy.sparse.csgraph import connected_components

from engines.review import pair_key, winner_loser

Z95 = 1.959963984540054


def for_question(rows: Iterable[dict[str, Any]], question: str | None) -> list[dict[str, Any]]:
    return [r for r in rows if question is None or r.get("question") == question]


def source_list(rows: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({r["left_source"] for r in rows} | {r["right_source"] for r in rows})


def win_counts(rows: list[dict[str, Any]], sources: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(sources, W) with W[i, j] = wins of source i over source j, ties as 1/2 each. Games n = W + W.T."""
    sources = sources or source_list(rows)
    idx = {s: k for k, s in enumerate(sources)}
    w = np.zeros((len(sources), len(sources)))
    for r in rows:
        a, b = r["left_source"], r["right_source"]
        if a == b or a not in idx or b not in idx:
            continue
        wl = winner_loser(r)
        if wl is None:
            w[idx[a], idx[b]] += 0.5
            w[idx[b], idx[a]] += 0.5
        else:
            w[idx[wl[0]], idx[wl[1]]] += 1
    return sources, w


def win_rate_matrix(rows: list[dict[str, Any]], sources: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rates, games): rates[i][j] = share of i-vs-j games won by i (row beats column), NaN where
    they never met or i == j; games[i][j] = number of such ratings."""
    sources, w = win_counts(rows, sources)
    n = w + w.T
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n > 0, w / np.where(n > 0, n, 1), np.nan)
    np.fill_diagonal(rate, np.nan)
    return (pd.DataFrame(rate, index=sources, columns=sources),
            pd.DataFrame(n.astype(int), index=sources, columns=sources))


def identifiable(w: np.ndarray) -> bool:
    """The Bradley-Terry MLE exists (finite) iff the graph i -> j (i beat j at least once, ties count
    both ways) is strongly connected."""
    if len(w) < 2:
        return len(w) == 1
    k, _ = connected_components((w > 0).astype(int), directed=True, connection="strong")
    return k == 1


def bradley_terry(w: np.ndarray, prior: float | np.ndarray = 0.0, max_iter: int = 100_000, tol: float = 1e-12,
                  center: bool = True) -> np.ndarray:
    """Log-strengths theta (mean 0 unless ``center=False``) maximising the Bradley-Terry likelihood of the win matrix, by MM.

    prior > 0 adds, for every source, ``prior`` games against a virtual opponent of strength 1, half of
    them won (keeps the estimate finite when the MLE does not exist). With prior = 0 and a win graph
    that is not strongly connected this raises ValueError.

    ``w`` may be a batch [B, m, m] with ``prior`` a scalar or [B] (the bootstrap fits all resamples at once: one
    vectorised MM loop instead of B Python loops); the caller then sees to identifiability (``identifiable_batch``)."""
    w = np.asarray(w, dtype=float)
    m = w.shape[-1]
    if m == 0:
        return np.zeros(w.shape[:-1])
    pr = np.asarray(prior, dtype=float)
    if (pr < 0).any():
        raise ValueError("prior must be >= 0")
    if w.ndim == 2 and pr.ndim == 0 and prior == 0 and not identifiable(w):
        raise ValueError("the Bradley-Terry maximum likelihood estimate does not exist for these ratings "
                         "(some source never lost or never won against the rest); use a prior > 0")
    pr = pr[..., None]  # per fit, broadcast over its sources
    n = w + np.swapaxes(w, -1, -2)
    wins = w.sum(axis=-1) + pr / 2
    p = np.ones(w.shape[:-1])
    for _ in range(max_iter):
        denom = (n / (p[..., :, None] + p[..., None, :])).sum(axis=-1) + pr / (p + 1.0)
        new = wins / denom
        # without a prior the scale is free: fix it (geometric mean 1)
        new = np.where(pr == 0, new / np.exp(np.log(new).mean(axis=-1, keepdims=True)), new)
        if np.max(np.abs(np.log(new) - np.log(p))) < tol:
            p = new
            break
        p = new
    theta = np.log(p)
    return theta - theta.mean(axis=-1, keepdims=True) if center else theta


def identifiable_batch(w: np.ndarray) -> np.ndarray:
    """``identifiable`` of each matrix of a batch [B, m, m]: the beat graph is strongly connected iff its
    reachability (transitive closure, by repeated squaring) is complete."""
    w = np.asarray(w, dtype=float)
    m = w.shape[-1]
    if m < 2:
        return np.full(w.shape[:-2], m == 1)
    reach = ((w > 0) | np.eye(m, dtype=bool)).astype(float)
    for _ in range(int(np.ceil(np.log2(m)))):
        reach = ((reach @ reach) > 0).astype(float)
    return reach.all(axis=(-1, -2))


def fisher_cov(theta: np.ndarray, w: np.ndarray, prior: float = 0.0) -> np.ndarray:
    """Covariance of the centred log-strengths from the observed information (inverse Hessian of the
    negative log-likelihood; the Moore-Penrose inverse when prior = 0, where the Hessian has the
    constant vector as its null space). With a prior, ``theta`` must be the uncentred estimate
    (``bradley_terry(..., center=False)``): the virtual opponent sits at theta = 0 of that scale."""
    w = np.asarray(w, dtype=float)
    n = w + w.T
    p = np.exp(theta)
    q = np.outer(p, p) / (p[:, None] + p[None, :]) ** 2  # p_ij (1 - p_ij)
    h = -n * q
    np.fill_diagonal(h, 0.0)
    np.fill_diagonal(h, -h.sum(axis=1))
    m = len(theta)
    if prior > 0:
        # centring is the linear map C = I - 11'/m, so Cov(C theta) = C Cov(theta) C'
        h = h + np.diag(prior * p / (p + 1.0) ** 2)
        c = np.eye(m) - 1.0 / m
        return c @ np.linalg.inv(h) @ c.T
    return np.linalg.pinv(h)


def _fit(w: np.ndarray, prior: float | str) -> tuple[np.ndarray, float]:
    """Uncentred log-strengths and the prior used."""
    if prior == "auto":
        prior = 0.0 if identifiable(w) else 1.0
    return bradley_terry(w, prior=float(prior), center=False), float(prior)


def rank_sources(rows: list[dict[str, Any]], ci: str = "fisher", prior: float | str = "auto",
                 n_boot: int = 200, seed: int = 0, level: float = 0.95) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Bradley-Terry ranking: (table sorted by strength, info). Table columns: source, theta, lo, hi,
    share (p_i / sum p), wins, games, win rate. info: prior used, CI method, notes."""
    sources, w = win_counts(rows)
    info: dict[str, Any] = {"sources": sources, "ci": ci, "notes": []}
    if len(sources) < 2 or w.sum() == 0:
        info["notes"].append("need ratings comparing at least two different sources")
        return pd.DataFrame(columns=["source", "theta", "lo", "hi", "share", "wins", "games", "win rate"]), info
    raw, used = _fit(w, prior)
    theta = raw - raw.mean()
    info["prior"] = used
    if used > 0 and prior == "auto":
        info["notes"].append(f"the maximum likelihood estimate does not exist for these ratings (a source never "
                             f"lost or never won against the others): a weak prior of {used:g} tied game(s) "
                             f"per source against an average opponent keeps the strengths finite")
    z = _z(level)
    if ci == "fisher":
        se = np.sqrt(np.clip(np.diag(fisher_cov(raw, w, used)), 0, None))
        lo, hi = theta - z * se, theta + z * se
    elif ci == "bootstrap":
        lo, hi = _bootstrap(rows, sources, used, n_boot, seed, level)
        info["n_boot"] = n_boot
    else:
        raise ValueError("ci must be 'fisher' or 'bootstrap'")
    p = np.exp(theta)
    games = (w + w.T).sum(axis=1)
    wins = w.sum(axis=1)
    df = pd.DataFrame({"source": sources, "theta": theta, "lo": lo, "hi": hi, "share": p / p.sum(),
                       "wins": wins, "games": games, "win rate": np.where(games > 0, wins / np.maximum(games, 1), np.nan)})
    return df.sort_values("theta", ascending=False, kind="stable").reset_index(drop=True), info


def _z(level: float) -> float:
    if abs(level - 0.95) < 1e-12:
        return Z95
    from scipy.stats import norm
    return float(norm.ppf(0.5 + level / 2))


def bootstrap_thetas(rows: list[dict[str, Any]], sources: list[str], prior: float, n_boot: int,
                     seed: int) -> np.ndarray:
    """Centred log-strengths refitted on ratings resampled with replacement: [n_boot, len(sources)]. A
    resample whose MLE does not exist is fitted with a weak prior (1 game) rather than dropped, which would
    narrow the intervals exactly where the data are thin. Self-comparisons are left out before resampling."""
    usable = [r for r in rows if r["left_source"] != r["right_source"]
              and r["left_source"] in sources and r["right_source"] in sources]
    m = len(sources)
    # each rating as its two cells of the win matrix (ties: half to each side), so a resample's matrix is
    # one bincount instead of a pass over dicts
    idx = {s: k for k, s in enumerate(sources)}
    a = np.array([idx[r["left_source"]] for r in usable], dtype=np.int64)
    b = np.array([idx[r["right_source"]] for r in usable], dtype=np.int64)
    wl = np.array([{"left": 1.0, "right": 0.0}.get(r["answer"], 0.5) for r in usable])
    rng = np.random.default_rng(seed)
    w = np.empty((n_boot, m, m))
    for k in range(n_boot):
        pick = rng.integers(0, len(usable), len(usable))
        w[k] = (np.bincount(a[pick] * m + b[pick], weights=wl[pick], minlength=m * m)
                + np.bincount(b[pick] * m + a[pick], weights=1.0 - wl[pick], minlength=m * m)).reshape(m, m)
    pb = np.where((prior > 0) | identifiable_batch(w), prior, 1.0) if n_boot else np.zeros(0)
    return bradley_terry(w, prior=pb, max_iter=20_000, tol=1e-9)


def _bootstrap(rows: list[dict[str, Any]], sources: list[str], prior: float, n_boot: int, seed: int,
               level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of the strengths over ``bootstrap_thetas``."""
    thetas = bootstrap_thetas(rows, sources, prior, n_boot, seed)
    a = (1 - level) / 2
    return np.quantile(thetas, a, axis=0), np.quantile(thetas, 1 - a, axis=0)


# ---- agreement ------------------------------------------------------------------------------------
def _outcome(row: dict[str, Any], key: tuple) -> str | None:
    """The answer in the pair's own order: 'first' / 'second' (the item of key[1] / key[2] won) or 'tie'."""
    if row["answer"] == "tie":
        return "tie"
    if key[1] == key[2]:
        return None  # the same item on both sides: left/right carries no meaning
    won = (row["left_source"], row["left_item"]) if row["answer"] == "left" else (row["right_source"], row["right_item"])
    return "first" if won == key[1] else "second"


def agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement between raters on repeated pairs (see the module notes)."""
    items: dict[tuple, dict[str, str]] = defaultdict(dict)
    for r in sorted(rows, key=lambda r: (r.get("created", 0), r.get("id", 0))):
        key = pair_key(r)
        out = _outcome(r, key)
        if out is not None:
            items[key][str(r["rater"])] = out  # a rater's latest answer replaces an earlier one
    multi = [v for v in items.values() if len(v) >= 2]
    res: dict[str, Any] = {"pairs": len(items), "repeated_pairs": len(multi),
                           "answers": int(sum(len(v) for v in multi)), "percent": float("nan"),
                           "unanimous": float("nan"), "kappa": float("nan"), "expected": float("nan")}
    if not multi:
        return res
    cats = ("first", "second", "tie")
    counts = np.array([[sum(1 for a in v.values() if a == c) for c in cats] for v in multi], dtype=float)
    m = counts.sum(axis=1)
    p_i = (counts * (counts - 1)).sum(axis=1) / (m * (m - 1))
    p_bar = float(p_i.mean())
    p_j = counts.sum(axis=0) / m.sum()
    p_e = float((p_j ** 2).sum())
    res.update(percent=p_bar, unanimous=float((counts.max(axis=1) == m).mean()), expected=p_e,
               kappa=(p_bar - p_e) / (1 - p_e) if p_e < 1 else float("nan"))
    return res


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts for one question: ratings, raters, sessions, ties, self-comparisons, sources."""
    return {
        "ratings": len(rows),
        "raters": len({r["rater"] for r in rows}),
        "sessions": len({r.get("session") for r in rows}),
        "ties": sum(1 for r in rows if r["answer"] == "tie"),
        "self_pairs": sum(1 for r in rows if r["left_source"] == r["right_source"]),
        "sources": len(source_list(rows)) if rows else 0,
    }
