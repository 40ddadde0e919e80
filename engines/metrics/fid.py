"""Fréchet Inception Distance and the on-disk cache of real-image statistics.

FID = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)). Only the trace of the matrix square root
is needed, and it never needs scipy's general ``sqrtm`` (slow on 2048x2048, can go complex):

- from features (the usual case, fewer images than 2048^2 pairs): with centred features X1 [n1, d],
  X2 [n2, d], S1 S2 = X1'X1 X2'X2 / ((n1-1)(n2-1)) has the non-zero eigenvalues of C C' with
  C = X1 X2' [n1, n2], so Tr((S1 S2)^(1/2)) = (sum of singular values of C) / sqrt((n1-1)(n2-1)).
  One [n1, n2] product and its singular values; no covariance of the generated set at all.
- from statistics: Tr((S1 S2)^(1/2)) = Tr((A S2 A)^(1/2)) with A = S1^(1/2) (same eigenvalues), a
  symmetric PSD matrix, so two symmetric eigendecompositions; A is cached with the real statistics.
- ``method="sqrtm"`` keeps pytorch-fid's reference computation (with its safeguards) for comparison.
All three agree to ~1e-8 relative; the tests pin them against each other and against the pytorch-fid CLI.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..runs.folder import atomic_write_bytes
from .inception import FEATURE_DIM, PREPROCESS_VERSION, inception_features, resolve_device


class SmallSampleWarning(UserWarning):
    """FID from fewer samples than feature dimensions: the covariance is rank-deficient and the value is
    biased upwards (compare FIDs only at equal sample counts)."""


def warn_if_small(n: int, what: str) -> None:
    if n < FEATURE_DIM:
        warnings.warn(f"FID from {n} {what} images, fewer than the {FEATURE_DIM} feature dimensions: the covariance "
                      "is rank-deficient and FID is biased upwards; compare FIDs only at the same sample counts "
                      "(KID is unbiased on small sets)", SmallSampleWarning, stacklevel=3)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64, unbiased like np.cov) of features [N, D]."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"FID needs at least 2 images (feature array of shape {f.shape})")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _eigh(a: torch.Tensor, values_only: bool = False):
    # LAPACK through numpy is about 2x faster than torch's CPU path here; CUDA uses cuSOLVER
    if a.is_cuda:
        return torch.linalg.eigvalsh(a) if values_only else torch.linalg.eigh(a)
    if values_only:
        return torch.from_numpy(np.linalg.eigvalsh(a.numpy()))
    w, v = np.linalg.eigh(a.numpy())
    return torch.from_numpy(w), torch.from_numpy(v)


def _psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    w, v = _eigh(sigma)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def sqrt_psd(sigma: np.ndarray, device=None) -> torch.Tensor:
    """Symmetric square root of a covariance matrix (float64 tensor on ``device``)."""
    dev = _linalg_device(device)
    return _psd_sqrt(torch.as_tensor(np.asarray(sigma, np.float64), device=dev))


def _linalg_device(device) -> torch.device:
    # float64 linear algebra: CUDA has it, MPS does not
    dev = resolve_device(device)
    return dev if dev.type == "cuda" else torch.device("cpu")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     eps: float = 1e-6, method: str = "eigh", sqrt_sigma1: torch.Tensor | None = None,
                     device=None) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``method="eigh"`` (default): via the symmetric form above; ``sqrt_sigma1`` may pass a cached S1^(1/2).
    ``method="sqrtm"``: scipy's sqrtm of S1 S2 as pytorch-fid does it, with its safeguards (eps*I added
    to both covariances when the product is singular, a negligible imaginary part dropped).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"FID statistics contain NaN/Inf ({name}): the images or features are broken")
    diff = mu1 - mu2
    if method == "eigh":
        dev = sqrt_sigma1.device if sqrt_sigma1 is not None else _linalg_device(device)
        a = sqrt_sigma1 if sqrt_sigma1 is not None else _psd_sqrt(torch.as_tensor(sigma1, device=dev))
        m = a @ torch.as_tensor(sigma2, device=dev) @ a
        ev = _eigh((m + m.T) / 2, values_only=True)  # symmetrise away rounding
        tr_covmean = float(ev.clamp_min(0).sqrt().sum())
    elif method == "sqrtm":
        tr_covmean = _trace_sqrtm_reference(sigma1, sigma2, eps)
    else:
        raise ValueError(f"unknown method {method!r} (eigh or sqrtm)")
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def _trace_sqrtm_reference(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    from scipy import linalg

    def sqrtm(a):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's deprecation / ill-conditioning chatter
            out = linalg.sqrtm(a)
        return out[0] if isinstance(out, tuple) else out

    covmean = sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: singular covariance product, adding {eps} to the diagonals", RuntimeWarning, stacklevel=3)
        offset = np.eye(len(sigma1)) * eps
        covmean = sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: matrix square root has a large imaginary part ({np.abs(covmean.imag).max():.3g}); "
                             "the statistics are degenerate")
        covmean = covmean.real
    return float(np.trace(covmean))


# ---- real-image statistics, cached on disk ------------------------------------------------------
@dataclass
class RealStats:
    mu: np.ndarray                 # [2048] float64
    sigma: np.ndarray              # [2048, 2048] float64
    features: np.ndarray           # [N, 2048] float32 (KID, novelty)
    key: str                       # cache key (content key + resolution + preprocessing)
    path: Path | None = None
    meta: dict = field(default_factory=dict)
    _sqrt: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.features)

    def sqrt_sigma(self, device=None) -> torch.Tensor:
        """S^(1/2), computed once per device and kept with the statistics."""
        dev = _linalg_device(device)
        if str(dev) not in self._sqrt:
            self._sqrt[str(dev)] = sqrt_psd(self.sigma, dev)
        return self._sqrt[str(dev)]


class _StatsCorrupt(Exception):
    pass


_mem_lock = threading.Lock()
_mem: "OrderedDict[str, RealStats]" = OrderedDict()
_MEM_ENTRIES = 4


def stats_cache_dir() -> Path:
    """``fid-stats/`` in the project cache ($POKELAB_CACHE, default ~/.cache/pokelab); read at call time."""
    from ..data.prepare import default_cache_dir

    return default_cache_dir() / "fid-stats"


def stats_key(content_key: str, size: tuple[int, int]) -> str:
    ident = json.dumps({"content": str(content_key), "size": [int(size[0]), int(size[1])],
                        "preprocess": PREPROCESS_VERSION}, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def _checksum(mu: np.ndarray, sigma: np.ndarray, features: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (mu, sigma, features):
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _read_stats(path: Path, key: str) -> RealStats:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("mu", "sigma", "features", "checksum", "meta")}
    except Exception as e:  # noqa: BLE001 — truncated zip, missing member, garbage bytes: all mean "rebuild"
        raise _StatsCorrupt(f"unreadable ({type(e).__name__}: {e})") from e
    mu, sigma, feats = arrays["mu"], arrays["sigma"], arrays["features"]
    if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM) or feats.ndim != 2 \
            or feats.shape[1] != FEATURE_DIM or len(feats) < 2:
        raise _StatsCorrupt(f"wrong shapes mu{mu.shape} sigma{sigma.shape} features{feats.shape}")
    if str(arrays["checksum"]) != _checksum(mu, sigma, feats):
        raise _StatsCorrupt("checksum mismatch")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all() and np.isfinite(feats).all()):
        raise _StatsCorrupt("non-finite values")
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError as e:
        raise _StatsCorrupt("malformed metadata") from e
    if meta.get("key") != key:
        raise _StatsCorrupt("belongs to another dataset")
    return RealStats(mu, sigma, feats, key, path, meta)


def _write_stats(path: Path, st: RealStats) -> None:
    buf = io.BytesIO()
    np.savez(buf, mu=st.mu, sigma=st.sigma, features=st.features,
             checksum=np.array(_checksum(st.mu, st.sigma, st.features)), meta=np.array(json.dumps(st.meta)))
    atomic_write_bytes(path, buf.getvalue())


def _stats_path(key: str, size: tuple[int, int], name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(name))[:40] or "real"
    return stats_cache_dir() / f"{safe}-{size[0]}x{size[1]}-{key}.npz"


def stats_cached(content_key: str, size: tuple[int, int], name: str = "real") -> bool:
    """Whether ``real_statistics`` would find these statistics in memory or on disk (not checked for damage)."""
    key = stats_key(content_key, size)
    with _mem_lock:
        if key in _mem:
            return True
    return _stats_path(key, size, name).is_file()


def real_statistics(content_key: str, size: tuple[int, int], images: Callable[[], torch.Tensor], *,
                    name: str = "real", device=None, batch_size: int = 50, progress: bool = False,
                    use_cache: bool = True) -> RealStats:
    """Statistics of a real image set at one resolution, from memory, the disk cache, or computed.

    ``images`` is called only on a cache miss and returns the uint8 NCHW images at ``size``; the cache
    key is (content key, size, preprocessing version). A corrupt cache file is reported and rebuilt.
    """
    key = stats_key(content_key, size)
    with _mem_lock:
        if use_cache and key in _mem:
            _mem.move_to_end(key)
            return _mem[key]
    path = _stats_path(key, size, name)
    st = None
    if use_cache and path.exists():
        try:
            st = _read_stats(path, key)
        except _StatsCorrupt as e:
            warnings.warn(f"FID statistics cache {path} is corrupt ({e}); recomputing it", RuntimeWarning,
                          stacklevel=2)
    if st is None:
        imgs = images()
        if len(imgs) < 2:
            raise ValueError(f"the real set {name!r} has {len(imgs)} image(s); FID/KID need at least 2")
        feats = inception_features(imgs, device=device, batch_size=batch_size, progress=progress)
        mu, sigma = feature_statistics(feats)
        meta = {"key": key, "content_key": str(content_key), "name": str(name), "size": list(size),
                "n": int(len(feats)), "preprocess": PREPROCESS_VERSION,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        st = RealStats(mu, sigma, feats, key, path if use_cache else None, meta)
        if use_cache:
            try:
                _write_stats(path, st)
            except OSError as e:  # read-only home, full disk: evaluation still works, only slower next time
                warnings.warn(f"could not write the FID statistics cache {path}: {e}", RuntimeWarning, stacklevel=2)
                st.path = None
    if use_cache:
        with _mem_lock:
            _mem[key] = st
            _mem.move_to_end(key)
            while len(_mem) > _MEM_ENTRIES:
                _mem.popitem(last=False)
    return st


def clear_memory_cache() -> None:
    with _mem_lock:
        _mem.clear()


def _features_tensor(f, dev) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(f), dtype=torch.float64, device=dev)
    if t.dim() != 2 or len(t) < 2:
        raise ValueError(f"FID needs at least 2 images (feature array of shape {tuple(t.shape)})")
    if not torch.isfinite(t).all():
        raise ValueError("Inception features contain NaN/Inf: the images are broken")
    return t


def fid_between_features(f1: np.ndarray, f2: np.ndarray, device=None) -> float:
    """FID between two feature sets; equal to frechet_distance of their statistics (see module doc)."""
    n1, n2, d = len(f1), len(f2), np.shape(f1)[-1]
    if n1 * n2 > d * d:  # the cross product would be bigger than a covariance: go through statistics
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2), device=device)
    dev = _linalg_device(device)
    x1, x2 = _features_tensor(f1, dev), _features_tensor(f2, dev)
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"mismatched feature sizes {x1.shape[1]} and {x2.shape[1]}")
    mu1, mu2 = x1.mean(0), x2.mean(0)
    x1, x2 = x1 - mu1, x2 - mu2
    tr1, tr2 = (x1 * x1).sum() / (n1 - 1), (x2 * x2).sum() / (n2 - 1)
    tr_covmean = torch.linalg.svdvals(x1 @ x2.T).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + tr1 + tr2 - 2 * tr_covmean)


def fid_from_features(fake_features: np.ndarray, real: RealStats | np.ndarray, device=None) -> float:
    """FID of generated features against cached real statistics (or a second feature array)."""
    warn_if_small(len(fake_features), "generated")
    real_feats = real.features if isinstance(real, RealStats) else real
    warn_if_small(len(real_feats), "real")
    if isinstance(real, RealStats) and len(real_feats) * len(fake_features) > FEATURE_DIM ** 2:
        mu_f, sigma_f = feature_statistics(fake_features)
        return frechet_distance(real.mu, real.sigma, mu_f, sigma_f, sqrt_sigma1=real.sqrt_sigma(device))
    return fid_between_features(real_feats, fake_features, device)
