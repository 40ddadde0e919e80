"""LPIPS (Zhang et al. 2018, AlexNet variant): paired distance (translation fidelity) and diversity.

The network is loaded once per process and device. Inputs are uint8 or floats in [-1, 1].
AlexNet's strides leave nothing of images under 31 px, so smaller images are refused.
"""
from __future__ import annotations

import threading
import warnings

import numpy as np
import torch

from . import MetricUnavailable
from .inception import resolve_device
from .msssim import random_pairs

MIN_SIZE = 31
_lock = threading.Lock()
_nets: dict[str, torch.nn.Module] = {}


def get_lpips(device=None) -> torch.nn.Module:
    dev = resolve_device(device)
    with _lock:
        net = _nets.get(str(dev))
        if net is None:
            import lpips

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" chatter
                try:
                    net = lpips.LPIPS(net="alex", verbose=False)
                except (OSError, RuntimeError) as e:
                    raise MetricUnavailable(
                        f"could not load the LPIPS AlexNet weights ({type(e).__name__}: {e}); point TORCH_HOME at a "
                        "folder whose hub/checkpoints/ holds alexnet-owt-7be5be79.pth or allow the download") from e
            net = net.eval().to(dev)
            for p in net.parameters():
                p.requires_grad_(False)
            _nets[str(dev)] = net
    return net


def _to_pm1(x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    x = x.to(dev)
    if x.dtype == torch.uint8:
        from ..data.images import from_uint8

        x = from_uint8(x)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.float()


@torch.inference_mode()
def lpips_distance(a: torch.Tensor, b: torch.Tensor, device=None, batch_size: int = 50) -> np.ndarray:
    """Per-pair LPIPS distance [N] between two aligned NCHW batches (uint8 or [-1, 1])."""
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"LPIPS needs two NCHW batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < MIN_SIZE:
        raise MetricUnavailable(f"LPIPS (AlexNet) needs images of at least {MIN_SIZE} px; got {tuple(a.shape[-2:])}")
    dev = resolve_device(device)
    net = get_lpips(dev)
    out = [net(_to_pm1(a[s:s + batch_size], dev), _to_pm1(b[s:s + batch_size], dev)).flatten().double().cpu()
           for s in range(0, len(a), batch_size)]
    return torch.cat(out).numpy()


def lpips_diversity(images: torch.Tensor, pairs: int = 500, seed: int = 0, device=None, batch_size: int = 50) -> float:
    """Mean LPIPS over random pairs of distinct images: higher = more diverse."""
    i, j = random_pairs(len(images), pairs, seed)
    ti, tj = torch.as_tensor(i), torch.as_tensor(j)
    total = 0.0
    for s in range(0, len(i), batch_size):
        total += float(lpips_distance(images[ti[s:s + batch_size]], images[tj[s:s + batch_size]], device,
                                      batch_size).sum())
    return total / len(i)
