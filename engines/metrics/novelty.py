"""Novelty: is a "new Pokémon" a copy of a training image?

Each generated sample gets its nearest real training image in Inception pool3 space under the cosine
distance 1 - cos(f_fake, f_real) (pool3 features are non-negative, so it lies in [0, 1]; cosine ignores
the overall feature magnitude, which tracks contrast/busyness more than content).

Memorisation score: the fraction of samples closer to some training image than ``threshold``, the
``percentile``-th percentile (default 5th) of the real set's own leave-one-out nearest-neighbour
distances. A sample that near a training image is nearer than 95% of real Pokémon are to any other
real Pokémon: suspicious. Fresh samples from the data distribution score about percentile/100;
a generator that copies its training set scores close to 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

#: default percentile of real-to-real nearest-neighbour distances below which a sample counts as a copy
MEMORISATION_PERCENTILE = 5.0


@dataclass
class NoveltyResult:
    index: np.ndarray            # [N_fake] index of the nearest real image
    distance: np.ndarray         # [N_fake] its cosine distance
    threshold: float             # distance below which a sample counts as memorised
    memorisation: float          # fraction of samples below the threshold
    real_nn_distance: np.ndarray  # [N_real] leave-one-out nearest-neighbour distances within the real set
    files: list[str] = field(default_factory=list)  # names of the nearest real images, when known

    def as_dict(self) -> dict:
        return {"index": self.index.tolist(), "distance": self.distance.tolist(), "threshold": self.threshold,
                "memorisation": self.memorisation, "files": list(self.files)}


def _unit(f: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(f), dtype=torch.float64)
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def nearest_real(fake_features: np.ndarray, real_features: np.ndarray, exclude_self: bool = False,
                 chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(index, cosine distance) of the nearest real feature for each row of ``fake_features``.
    ``exclude_self`` (fake is the real set itself) skips the diagonal: leave-one-out neighbours."""
    a, r = _unit(fake_features), _unit(real_features)
    if len(r) < (2 if exclude_self else 1):
        raise ValueError("novelty needs at least 2 real images")
    idx, dist = [], []
    for s in range(0, len(a), chunk):
        sim = a[s:s + chunk] @ r.T
        if exclude_self:
            rows = torch.arange(sim.shape[0])
            sim[rows, rows + s] = -float("inf")
        best, where = sim.max(dim=1)
        idx.append(where)
        dist.append((1 - best).clamp_min(0))
    return torch.cat(idx).numpy(), torch.cat(dist).numpy()


def novelty(fake_features: np.ndarray, real_features: np.ndarray, percentile: float = MEMORISATION_PERCENTILE,
            files: list[str] | None = None) -> NoveltyResult:
    if len(fake_features) < 1:
        raise ValueError("novelty needs at least one generated image")
    index, distance = nearest_real(fake_features, real_features)
    _, real_nn = nearest_real(real_features, real_features, exclude_self=True)
    threshold = float(np.percentile(real_nn, percentile))
    names = [files[i] for i in index] if files is not None and len(files) == len(real_features) else []
    return NoveltyResult(index=index, distance=distance, threshold=threshold,
                         memorisation=float(np.mean(distance < threshold)), real_nn_distance=real_nn, files=names)
