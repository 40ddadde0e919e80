"""FID that can be compared at small sample counts: FID∞ and resampling intervals (docs/metrics.md, "FID at
small n").

FID of n generated images is biased upwards by an amount that falls with n (roughly linearly in 1/n once n is
large enough; Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score and where to find them").

- ``fid_infinity``: FID at ``points`` sample counts drawn (without replacement, one draw each, as the reference
  github:mchong6/FID_IS_infinity does) from the n generated features, a least-squares line of FID against 1/n,
  and its intercept: the FID of infinitely many generated images against the same real statistics. The reference
  spaces the counts from 5,000 to 50,000; we take ``min(5000, n // 2)`` to n, which is the reference's range at
  50,000 and keeps the line inside the near-linear regime at our n of a few thousand or fewer (measured on
  2048-d Gaussians with a pool3-like spectrum: from n/2 the line lands within 2-4 % of the truth at n = 500 and
  1 % at 2000; from n/10, the reference's proportion, it misses by 32-35 % at n = 500).
  The real set's own finite size still biases the value: FID∞ is comparable across generated sample counts,
  against one real set.
- ``fid_interval``: a ``level`` (95 %) interval of FID from resampling the generated features: the spread of the
  FID of ``replicates`` random halves (drawn without replacement: the delete-half jackknife, whose variance
  equals that of the full-n statistic, Shao & Wu 1989), as point +- z * std. The plain bootstrap (resampling
  with replacement) overstates the spread here: a resample holds ~37 % duplicates, and FID in 2048 dimensions
  reacts to them far more than to a fresh draw (on 2048-d Gaussians with a pool3-like spectrum its std was
  2.1-5.5x the std of FID over independent draws; the halves' std was 1.3-1.7x; ``benchmarks/fid_intervals.py``).
  The interval says how far this n's value moves with another draw of n images; it does not remove FID's
  small-n bias (FID∞ does that).

Every FID here is one ``WeightedFID`` call: the generated features weighted by counts (a subset: 0/1), with the
real-by-generated product computed once, so each further FID costs one eigendecomposition of
min(n_real, subset size) squared instead of a new pass over the features. With all counts 1 it is the plain FID
(``fid.fid_between_features``) to rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch

from .fid import RealStats, _eigh, _features_tensor, _linalg_device, feature_statistics, sqrt_psd

FID_INF_POINTS = 15       # the reference's num_points
FID_INF_FIRST = 5000      # the reference's smallest count (at 50,000 images)
REPLICATES = 100          # half-samples per interval
LEVEL = 0.95
#: the real-by-generated product is kept when it has at most this many entries (float64: 200 MB), else FIDs go
#: through d x d statistics (slower: one d^3 eigendecomposition each)
MAX_CROSS = 25_000_000


class WeightedFID:
    """FID between a real set and the generated features ``fake`` weighted by counts ``w`` (``__call__``)."""

    def __init__(self, fake_features, real: RealStats | np.ndarray, device=None, max_cross: int = MAX_CROSS):
        self.dev = _linalg_device(device)
        self.xg = _features_tensor(fake_features, self.dev)
        self.sq = (self.xg * self.xg).sum(1)
        if isinstance(real, RealStats):
            feats, mu_r, trace_r = real.features, real.mu, float(np.trace(real.sigma))
        else:
            feats = np.asarray(real)
            mu_r, sigma = feature_statistics(feats)
            trace_r = float(np.trace(sigma))
        if np.shape(feats)[1] != self.xg.shape[1]:
            raise ValueError(f"mismatched feature sizes {np.shape(feats)[1]} (real) and {self.xg.shape[1]} (generated)")
        self.mu_r = torch.as_tensor(np.asarray(mu_r, np.float64), device=self.dev)
        self.trace_r = trace_r
        n_r, n_g = len(feats), len(self.xg)
        self.n_r = n_r
        # the features route (module fid, "from features") while the cross product is small; else statistics
        self.cross = n_r <= self.xg.shape[1] and n_r * n_g <= max_cross
        if self.cross:
            self.xr = _features_tensor(feats, self.dev) - self.mu_r  # centred real features
            self.a = self.xr @ self.xg.T                              # [n_r, n_g], once
            self._aa: torch.Tensor | None = None                      # a'a [n_g, n_g], for subsets below n_r
        elif isinstance(real, RealStats):
            self.sqrt_r = real.sqrt_sigma(self.dev)
        else:
            self.sqrt_r = sqrt_psd(sigma, self.dev)

    @property
    def n(self) -> int:
        return len(self.xg)

    def __call__(self, w) -> float:
        w = torch.as_tensor(w, dtype=torch.float64, device=self.dev)
        m = float(w.sum())
        if w.shape != (self.n,) or (w < 0).any() or m < 2:
            raise ValueError(f"weights must be {self.n} non-negative counts summing to at least 2")
        mu = (w @ self.xg) / m
        trace_g = float((w @ self.sq - m * (mu @ mu)) / (m - 1))
        diff = self.mu_r - mu
        if self.cross:
            # the trace term: the singular values of the weighted, centred cross product B W^(1/2) with
            # B = X_r (X_g - mu)'; eigenvalues of B W B' (n_r x n_r) or, for fewer kept images, of W^(1/2) B'B W^(1/2)
            v = self.xr @ mu
            keep = torch.nonzero(w).squeeze(1)
            if len(keep) < self.n_r:
                if self._aa is None:
                    self._aa = self.a.T @ self.a
                av = (self.a.T @ v)[keep]
                bb = self._aa[keep][:, keep] - av[:, None] - av[None, :] + v @ v
                r = w[keep].sqrt()
                k = bb * r[:, None] * r[None, :]
            else:
                b = self.a - v[:, None]
                k = (b * w) @ b.T
            ev = _eigh((k + k.T) / 2, values_only=True)
            tr_covmean = float(ev.clamp_min(0).sqrt().sum()) / float(np.sqrt((self.n_r - 1) * (m - 1)))
        else:
            xc = (self.xg - mu) * w.sqrt()[:, None]
            s = xc.T @ xc / (m - 1)
            k = self.sqrt_r @ s @ self.sqrt_r
            tr_covmean = float(_eigh((k + k.T) / 2, values_only=True).clamp_min(0).sqrt().sum())
        return float(diff @ diff) + self.trace_r + trace_g - 2 * tr_covmean


@dataclass
class FidInfinity:
    value: float          # the intercept: FID at 1/n = 0
    slope: float          # FID per unit of 1/n (the bias of FID_n is about slope / n)
    counts: np.ndarray    # the sample counts used
    fids: np.ndarray      # FID at each count


def fid_inf_counts(n: int, points: int = FID_INF_POINTS, first: int | None = None) -> np.ndarray:
    """The sample counts of the line: ``points`` counts evenly spaced from ``first`` (default min(5000, n // 2))
    to n, de-duplicated."""
    first = min(FID_INF_FIRST, n // 2) if first is None else int(first)
    if n < 4 or not 2 <= first < n:
        raise ValueError(f"FID∞ needs at least 4 generated images and a first count in [2, n) (n = {n}, "
                         f"first = {first})")
    if points < 2:
        raise ValueError("FID∞ needs at least 2 points for its line")
    return np.unique(np.linspace(first, n, points).astype(np.int64))


def fid_infinity(fake_features, real: RealStats | np.ndarray, points: int = FID_INF_POINTS,
                 first: int | None = None, seed: int = 0, device=None, *, weighted: WeightedFID | None = None
                 ) -> FidInfinity:
    """FID∞ (Chong & Forsyth 2020) of the generated features against ``real`` (statistics or features)."""
    wf = weighted or WeightedFID(fake_features, real, device)
    counts = fid_inf_counts(wf.n, points, first)
    rng = np.random.default_rng(seed)
    fids = np.empty(len(counts))
    for i, m in enumerate(counts):
        w = np.zeros(wf.n)
        w[rng.permutation(wf.n)[:m]] = 1.0
        fids[i] = wf(w)
    slope, value = np.polyfit(1.0 / counts, fids, 1)
    return FidInfinity(float(value), float(slope), counts, fids)


def half_samples(n: int, replicates: int, seed: int) -> np.ndarray:
    """[replicates, n] 0/1 weights, each row a random half (n // 2 items) drawn without replacement."""
    if replicates < 2:
        raise ValueError("an interval needs at least 2 resamples")
    if n < 4:
        raise ValueError(f"an interval needs at least 4 generated images (got {n})")
    rng = np.random.default_rng(seed)
    w = np.zeros((int(replicates), n))
    for row in w:
        row[rng.permutation(n)[:n // 2]] = 1.0
    return w


def jackknife_interval(point: float, half_values, level: float = LEVEL) -> tuple[float, float]:
    """point -+ z * std of the half-sample values: the delete-half jackknife's estimate of the std of the statistic
    at the full n (its variance factor (n - d) / d is 1 for d = n / 2)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    v = np.asarray(half_values, np.float64)
    if len(v) < 2:
        raise ValueError("an interval needs at least 2 resamples")
    half = NormalDist().inv_cdf((1 + level) / 2) * float(v.std(ddof=1))
    return float(point - half), float(point + half)


def fid_interval(fake_features, real: RealStats | np.ndarray, point: float | None = None,
                 replicates: int = REPLICATES, level: float = LEVEL, seed: int = 0, device=None, *,
                 weighted: WeightedFID | None = None) -> tuple[float, float]:
    """(lo, hi): the ``level`` interval of FID around ``point`` (default: the FID of all the generated features)
    from ``replicates`` half-samples of the generated features (module doc)."""
    wf = weighted or WeightedFID(fake_features, real, device)
    if point is None:
        point = wf(np.ones(wf.n))
    values = [wf(w) for w in half_samples(wf.n, replicates, seed)]
    return jackknife_interval(point, values, level)
