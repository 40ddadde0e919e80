"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets (mean and population std, as torch-fidelity).

The three Gram matrices are computed once (float64) and every subset only indexes into them, instead of
three matrix products per subset; for very large sets (Gram > ``max_gram`` entries) subsets are
computed one by one.

``kid_interval``: a 95 % interval around KID from the generated features' half-samples (the delete-half
jackknife, as ``small_n.fid_interval``): the unbiased MMD^2 of all real features against each random half,
weighted sums over the Gram matrix of the generated set (read in row blocks when it is not kept whole).
Why not from the subset values themselves: on a 649-image real set every subset holds all real images and a
third of the generated ones, so the subsets' spread measures how the subsets were drawn, not how KID moves with
another draw of the generated images.
"""
from __future__ import annotations

import numpy as np
import torch

from .fid import _linalg_device
from .small_n import LEVEL, REPLICATES, half_samples, jackknife_interval


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef0: float = 1.0) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(kxx: torch.Tensor, kyy: torch.Tensor, kxy: torch.Tensor) -> float:
    """Unbiased MMD^2 from square Gram blocks of m samples each: diagonals excluded within a set."""
    m = kxx.shape[0]
    sxx = kxx.sum() - kxx.diagonal().sum()
    syy = kyy.sum() - kyy.diagonal().sum()
    return float((sxx + syy) / (m * (m - 1)) - 2 * kxy.mean())


def kid(real_features: np.ndarray, fake_features: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0, degree: int = 3, device=None, max_gram: int = 25_000_000) -> tuple[float, float]:
    """KID (mean, std) over ``subsets`` random subsets of size min(subset_size, n_real, n_fake)."""
    mean, std, _ = kid_and_interval(real_features, fake_features, subsets, subset_size, seed, degree, device,
                                    max_gram, replicates=0)
    return mean, std


def kid_and_interval(real_features: np.ndarray, fake_features: np.ndarray, subsets: int = 100,
                     subset_size: int = 1000, seed: int = 0, degree: int = 3, device=None,
                     max_gram: int = 25_000_000, replicates: int = REPLICATES,
                     level: float = LEVEL) -> tuple[float, float, tuple[float, float] | None]:
    """(KID, its std over subsets, its ``level`` interval from ``replicates`` half-samples of the generated
    features or None when ``replicates`` is 0), sharing one set of Gram matrices."""
    nx, ny = len(real_features), len(fake_features)
    m = min(int(subset_size), nx, ny)
    if m < 2:
        raise ValueError(f"KID needs at least 2 real and 2 generated images (got {nx} and {ny})")
    if subsets < 1:
        raise ValueError("KID needs at least one subset")
    dev = _linalg_device(device)
    x = torch.as_tensor(np.asarray(real_features), device=dev, dtype=torch.float64)
    y = torch.as_tensor(np.asarray(fake_features), device=dev, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    full = max(nx, ny) ** 2 <= max_gram
    kxx = kyy = kxy = None
    if full:
        kxx, kyy, kxy = (polynomial_kernel(x, x, degree), polynomial_kernel(y, y, degree),
                         polynomial_kernel(x, y, degree))
    vals = np.empty(subsets)
    for i in range(subsets):
        ix = torch.as_tensor(rng.choice(nx, m, replace=False), device=dev)
        iy = torch.as_tensor(rng.choice(ny, m, replace=False), device=dev)
        if full:
            vals[i] = mmd2_unbiased(kxx[ix][:, ix], kyy[iy][:, iy], kxy[ix][:, iy])
        else:
            xs, ys = x[ix], y[iy]
            vals[i] = mmd2_unbiased(polynomial_kernel(xs, xs, degree), polynomial_kernel(ys, ys, degree),
                                    polynomial_kernel(xs, ys, degree))
    mean = float(vals.mean())
    interval = None
    if replicates:
        w = torch.as_tensor(half_samples(ny, replicates, seed), device=dev)
        halves = _weighted_mmd2(x, y, w, degree, kxx, kyy, kxy, max(1, max_gram // max(nx, ny)))
        interval = jackknife_interval(mean, halves.cpu().numpy(), level)
    return mean, float(vals.std()), interval


def _weighted_mmd2(x, y, w, degree, kxx=None, kyy=None, kxy=None, rows: int = 4096) -> torch.Tensor:
    """Unbiased MMD^2 of all of ``x`` against each 0/1-weighted subset of ``y`` (rows of ``w``) [R]: the Gram
    matrices given, or computed ``rows`` rows at a time (memory stays bounded)."""
    nx, ny = len(x), len(y)
    sxx = 0.0
    for s in range(0, nx, rows):
        k = kxx[s:s + rows] if kxx is not None else polynomial_kernel(x[s:s + rows], x, degree)
        sxx += float(k.sum() - k.diagonal(offset=s).sum())
    quad = torch.zeros(len(w), dtype=torch.float64, device=w.device)   # w' Kyy w per subset
    diag = torch.empty(ny, dtype=torch.float64, device=w.device)
    for s in range(0, ny, rows):
        k = kyy[s:s + rows] if kyy is not None else polynomial_kernel(y[s:s + rows], y, degree)
        quad += ((w[:, s:s + rows] @ k) * w).sum(1)
        diag[s:s + rows] = k.diagonal(offset=s)
    col = torch.zeros(ny, dtype=torch.float64, device=w.device)         # sum over x of k(x, y_j)
    for s in range(0, nx, rows):
        col += (kxy[s:s + rows] if kxy is not None else polynomial_kernel(x[s:s + rows], y, degree)).sum(0)
    m = w.sum(1)
    syy = quad - (w * w) @ diag  # 0/1 weights: the pairs i != j inside the subset
    return sxx / (nx * (nx - 1)) + syy / (m * (m - 1)) - 2 * (w @ col) / (nx * m)
