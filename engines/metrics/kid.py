"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets (mean and population std, as torch-fidelity).

The three Gram matrices are computed once (float64) and every subset only indexes into them, instead of
three matrix products per subset; for very large sets (Gram > ``max_gram`` entries) subsets are
computed one by one.
"""
from __future__ import annotations

import numpy as np
import torch

from .fid import _linalg_device


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
    return float(vals.mean()), float(vals.std())
