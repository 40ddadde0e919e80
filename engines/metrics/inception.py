"""The FID Inception network (pytorch-fid's ``InceptionV3``): pool3 features and the Inception Score.

Preprocessing is the pytorch-fid CLI's, so values match ``python -m pytorch_fid`` on the same images:
uint8 pixels (what a PNG holds) -> float / 255 -> the network's own bilinear resize to 299 -> 2x - 1.
One network per process and device (loading it costs seconds and ~100 MB).
"""
from __future__ import annotations

import threading
import warnings
from typing import Iterable

import numpy as np
import torch

from . import MetricUnavailable

FEATURE_DIM = 2048
#: bump when anything changes what a real image turns into before the network (it keys the stats cache)
PREPROCESS_VERSION = "fid-v1:uint8/255,bilinear299,pool3-2048"

_lock = threading.Lock()
_feature_nets: dict[str, torch.nn.Module] = {}
_classifier_nets: dict[str, torch.nn.Module] = {}
_fc_check: dict[str, str | None] = {}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None or "auto": CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _weights_error(e: Exception) -> MetricUnavailable:
    return MetricUnavailable(
        "could not load the FID Inception weights (pt_inception-2015-12-05-6726825d.pth): "
        f"{type(e).__name__}: {e}. Point TORCH_HOME at a folder whose hub/checkpoints/ holds that file, "
        "or allow pytorch-fid to download it once.")


def get_inception(device: str | torch.device | None = None) -> torch.nn.Module:
    """pytorch-fid's ``InceptionV3([3])`` (2048-d pool3), eval mode, on ``device``; cached per process."""
    dev = resolve_device(device)
    key = str(dev)
    with _lock:
        net = _feature_nets.get(key)
        if net is None:
            from pytorch_fid.inception import InceptionV3

            try:
                net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]])
            except (OSError, RuntimeError) as e:  # no cache and no network, truncated file
                raise _weights_error(e) from e
            net = net.eval().to(dev)
            if dev.type == "cuda":
                net = net.to(memory_format=torch.channels_last)
            _feature_nets[key] = net
    return net


def as_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
    """Images as uint8 NCHW with 3 channels. Floats are taken as [-1, 1] and quantised like a PNG."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected images as an NCHW tensor, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        from ..data.images import to_uint8

        x = to_uint8(x)
    c = x.shape[1]
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    elif c != 3:
        raise ValueError(f"expected 1 or 3 colour channels, got {c} (shape {tuple(x.shape)})")
    return x


def _net_input(x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    # exactly torchvision's ToTensor on a decoded PNG: uint8 -> float32 / 255
    x = as_uint8_rgb(x).to(dev, non_blocking=True).float().div_(255.0)
    if dev.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        images = as_uint8_rgb(images)
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size]
    else:
        yield from images


@torch.inference_mode()
def features_of_batch(x: torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """pool3 features [B, 2048] (float32, CPU) of one batch of images (uint8, or floats in [-1, 1])."""
    dev = resolve_device(device)
    net = get_inception(dev)
    return net(_net_input(x, dev))[0].flatten(1).float().cpu()


def inception_features(images: torch.Tensor | Iterable[torch.Tensor], device: str | torch.device | None = None,
                       batch_size: int = 50, progress: bool = False, total: int | None = None) -> np.ndarray:
    """pool3 features [N, 2048] float32 of a uint8 NCHW tensor or an iterable of batches."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    it = _batches(images, batch_size)
    if progress:
        from tqdm.auto import tqdm

        n = total if total is not None else (len(images) if isinstance(images, torch.Tensor) else None)
        it = tqdm(it, total=None if n is None else -(-n // batch_size), desc="inception", unit="batch")
    feats = [features_of_batch(b, device) for b in it]
    if not feats:
        return np.zeros((0, FEATURE_DIM), np.float32)
    return torch.cat(feats).numpy()


# ---- Inception Score -----------------------------------------------------------------------
def _fid_state_dict() -> dict[str, torch.Tensor]:
    from pytorch_fid.inception import FID_WEIGHTS_URL, load_state_dict_from_url

    try:
        return load_state_dict_from_url(FID_WEIGHTS_URL, progress=False, map_location="cpu")
    except (OSError, RuntimeError) as e:
        raise _weights_error(e) from e


def classifier_problem() -> str | None:
    """Why the Inception classifier cannot give an Inception Score here (None when it can)."""
    with _lock:
        if "fc" not in _fc_check:
            sd = _fid_state_dict()
            w, b = sd.get("fc.weight"), sd.get("fc.bias")
            if w is None:
                _fc_check["fc"] = "the Inception weights have no 1008-way classifier layer (fc.weight)"
            elif not torch.any(w != 0) and (b is None or not torch.any(b != 0)):
                _fc_check["fc"] = (
                    "the Inception classifier layer (fc, 1008 classes) in these weights is all zeros: this is the "
                    "offline stand-in, whose convolutional features are real (FID/KID are valid) but whose "
                    "classifier was never filled in, so every image would get the same uniform class "
                    "distribution and an Inception Score of exactly 1. Use the official weights (TORCH_HOME "
                    "without the stand-in, with internet) to compute IS.")
            else:
                _fc_check["fc"] = None
    return _fc_check["fc"]


def _get_classifier(dev: torch.device) -> torch.nn.Module:
    key = str(dev)
    with _lock:
        net = _classifier_nets.get(key)
        if net is None:
            from pytorch_fid.inception import fid_inception_v3

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    net = fid_inception_v3()
                except (OSError, RuntimeError) as e:
                    raise _weights_error(e) from e
            net = net.eval().to(dev)
            _classifier_nets[key] = net
    return net


def class_probabilities(images: torch.Tensor | Iterable[torch.Tensor], device=None, batch_size: int = 50) -> np.ndarray:
    """Softmax over the 1008 Inception classes, [N, 1008] float64. Refuses with a zeroed classifier."""
    problem = classifier_problem()
    if problem:
        raise MetricUnavailable(f"Inception Score unavailable: {problem}")
    dev = resolve_device(device)
    net = _get_classifier(dev)
    out = []
    with torch.inference_mode():
        for b in _batches(images, batch_size):
            x = torch.nn.functional.interpolate(_net_input(b, dev), size=(299, 299), mode="bilinear",
                                                align_corners=False) * 2 - 1
            out.append(torch.softmax(net(x).double(), dim=1).cpu())
    return torch.cat(out).numpy()


def inception_score_from_probs(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))), mean and std over ``splits`` equal chunks (Salimans et al.)."""
    probs = np.asarray(probs, np.float64)
    n = len(probs)
    splits = max(1, min(splits, n))
    scores = []
    for part in np.array_split(probs, splits):
        py = part.mean(axis=0, keepdims=True)
        kl = np.where(part > 0, part * (np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(py, 1e-30, None))), 0.0)
        scores.append(float(np.exp(kl.sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


def inception_score(images: torch.Tensor | Iterable[torch.Tensor], splits: int = 10, device=None,
                    batch_size: int = 50) -> tuple[float, float]:
    """Inception Score (mean, std). Raises ``MetricUnavailable`` when the classifier layer is zeroed."""
    return inception_score_from_probs(class_probabilities(images, device, batch_size), splits)
