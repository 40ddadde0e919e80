"""Precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020): how much of
what the generator draws lies on the real data's manifold (fidelity) and how much of the real manifold it
reaches (diversity), as separate numbers where FID and KID mix the two.

All four use k-nearest-neighbour balls in the Inception pool3 feature space FID already uses (the real features
come from the statistics cache). A set's manifold is the union of balls around its points, each with the
radius of the distance to the point's k-th nearest neighbour in its own set (itself excluded):

- precision: the fraction of generated points inside the real manifold (k = 3, distance <= radius, as
  stylegan2-ada-pytorch's ``pr50k3``; that implementation measures in VGG16 features, we in Inception's);
- recall: the fraction of real points inside the generated manifold (k = 3, <=);
- density: how many real balls contain each generated point, divided by k, averaged (k = 5, distance <
  radius, as clovaai/generative-evaluation-prdc); ~1 for samples from the real distribution, above 1 where
  samples crowd into dense real regions, below 1 for off-manifold samples. Unbounded; no generated ball is
  used, so outlying generated points cannot inflate it;
- coverage: the fraction of real points whose ball contains at least one generated point (k = 5, <).

Distances are Euclidean, in float64, computed with ``torch.cdist`` in row blocks so memory stays bounded
(``max_entries`` distances at a time) however large the sets; each set's radii take one pass over its own
pairs, and one pass over the real-generated pairs gives all four numbers.
"""
from __future__ import annotations

import numpy as np
import torch

from .fid import _linalg_device

#: neighbourhood sizes of the references: pr50k3 (precision/recall) and prdc's recommended k (density/coverage)
PR_K = 3
DC_K = 5
PRDC_METRICS = ("precision", "recall", "density", "coverage")
#: distances held at once (float64: 8 bytes each) — 2^23 is 64 MiB
MAX_ENTRIES = 1 << 23


def _rows(n_cols: int, max_entries: int) -> int:
    return max(1, int(max_entries) // max(1, n_cols))


def _as_features(f, dev: torch.device, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(f), dtype=torch.float64, device=dev)
    if t.dim() != 2:
        raise ValueError(f"{what} features must be a [N, D] array (got shape {tuple(t.shape)})")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} features contain NaN/Inf: the images are broken")
    return t


def kth_neighbour_radii(x: torch.Tensor, k: int, max_entries: int = MAX_ENTRIES) -> torch.Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row ([N]); the row itself, at distance 0, is
    the first of the k + 1 smallest (as both references count)."""
    if len(x) < k + 1:
        raise ValueError(f"k-NN radii with k = {k} need at least {k + 1} points (got {len(x)})")
    step = _rows(len(x), max_entries)
    return torch.cat([torch.cdist(x[s:s + step], x).kthvalue(k + 1, dim=1).values for s in range(0, len(x), step)])


def prdc(real_features, fake_features, metrics=PRDC_METRICS, pr_k: int = PR_K, dc_k: int = DC_K, device=None,
         max_entries: int = MAX_ENTRIES) -> dict[str, float]:
    """Those of precision, recall, density, coverage asked for in ``metrics``, from feature arrays [N, D]."""
    asked = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = sorted(set(asked) - set(PRDC_METRICS))
    metrics = [m for m in PRDC_METRICS if m in asked]
    if unknown or not metrics:
        raise ValueError(f"prdc computes {', '.join(PRDC_METRICS)}; asked for {unknown or 'none of them'}")
    if pr_k < 1 or dc_k < 1:
        raise ValueError("the neighbourhood sizes pr_k and dc_k must be >= 1")
    dev = _linalg_device(device)
    real = _as_features(real_features, dev, "real")
    fake = _as_features(fake_features, dev, "generated")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"mismatched feature sizes {real.shape[1]} (real) and {fake.shape[1]} (generated)")
    need_pr = {"precision", "recall"} & set(metrics)
    need_dc = {"density", "coverage"} & set(metrics)
    k_max = max(pr_k if need_pr else 0, dc_k if need_dc else 0)
    for name, x in (("real", real), ("generated", fake)):
        if len(x) < k_max + 1:
            raise ValueError(f"{', '.join(metrics)} with k = {k_max} need at least {k_max + 1} {name} images "
                             f"(got {len(x)})")

    r_real_pr = kth_neighbour_radii(real, pr_k, max_entries) if "precision" in metrics else None
    r_fake_pr = kth_neighbour_radii(fake, pr_k, max_entries) if "recall" in metrics else None
    r_real_dc = kth_neighbour_radii(real, dc_k, max_entries) if need_dc else None
    # one pass over the real-generated distances: per generated point, inside the real manifold (precision) and
    # real balls hit (density); per real point, reached by a generated ball (recall) and its nearest generated
    # point (coverage)
    real_reached = torch.zeros(len(real), dtype=torch.bool, device=dev)
    nearest_fake = torch.full((len(real),), float("inf"), dtype=torch.float64, device=dev)
    parts_in, parts_hit = [], []
    step = _rows(len(real), max_entries)
    for s in range(0, len(fake), step):
        d = torch.cdist(fake[s:s + step], real)  # [generated block, real]
        if r_real_pr is not None:
            parts_in.append((d <= r_real_pr).any(dim=1))
        if r_fake_pr is not None:
            real_reached |= (d <= r_fake_pr[s:s + step, None]).any(dim=0)
        if r_real_dc is not None:
            parts_hit.append((d < r_real_dc).sum(dim=1, dtype=torch.float64))
            nearest_fake = torch.minimum(nearest_fake, d.min(dim=0).values)
    out = {}
    if "precision" in metrics:
        out["precision"] = float(torch.cat(parts_in).double().mean())
    if "recall" in metrics:
        out["recall"] = float(real_reached.double().mean())
    if "density" in metrics:
        out["density"] = float(torch.cat(parts_hit).mean() / dc_k)
    if "coverage" in metrics:
        out["coverage"] = float((nearest_fake < r_real_dc).double().mean())
    return out
