"""Metrics of an upscaling (super-resolution) engine against plain bicubic upsampling (docs/srgan.md, "Metrics").

Each held-out high-resolution (HR) picture is downsampled with the engine's own antialiased bicubic to make its
low-resolution (LR) input; the engine's output and bicubic upsampling of the same LR input are compared with the
HR original. Outputs are rounded to uint8 first, as a saved PNG would be.
- ``psnr`` (dB) and ``ssim``: on the luma only (Y of ITU-R BT.601 YCbCr, 16..235: MATLAB's ``rgb2ycbcr``), with
  ``scale`` pixels shaved off every border — how Ledig et al. (and the super-resolution literature) report them;
  higher is better. SSIM: Gaussian window 11 / sigma 1.5, K = (0.01, 0.03), data range 255
  (``engines.metrics.msssim.ssim``).
- ``lpips``: LPIPS (AlexNet, ``engines.metrics.perceptual``) on the RGB pictures; lower is better.
Each has a ``<name>/bicubic`` twin: what bicubic upsampling scores on the same pictures (the baseline).
Values are means over pictures (PSNR per picture first, as the papers average it).
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Iterable

import numpy as np
import torch

from ..data.images import from_uint8, to_uint8
from .evaluate import parse_metric_names
from .inception import resolve_device
from .msssim import ssim

UPSCALE_METRICS = ("psnr", "ssim", "lpips")
#: BT.601 luma from 0..255 RGB (MATLAB rgb2ycbcr): Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255
_Y_WEIGHTS = (65.481, 128.553, 24.966)


def parse_upscale_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    return parse_metric_names(metrics, UPSCALE_METRICS, what="upscaling metric")


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0..255 float) RGB [N, 3, H, W] -> float64 luma [N, 1, H, W] in 16..235."""
    x = x.double()
    w = torch.tensor(_Y_WEIGHTS, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return 16.0 + (x * w).sum(1, keepdim=True) / 255.0


def shave(x: torch.Tensor, border: int) -> torch.Tensor:
    return x[..., border:-border, border:-border] if border > 0 else x


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-picture PSNR [N] in dB (float64); identical pictures give +inf."""
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"PSNR needs two NCHW batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range ** 2 / mse)


def psnr_y(a: torch.Tensor, b: torch.Tensor, border: int = 0) -> torch.Tensor:
    """PSNR on the luma of two uint8 RGB batches, ``border`` pixels shaved off each side."""
    return psnr(shave(rgb_to_y(a), border), shave(rgb_to_y(b), border))


def ssim_y(a: torch.Tensor, b: torch.Tensor, border: int = 0) -> torch.Tensor:
    """SSIM on the luma of two uint8 RGB batches, ``border`` pixels shaved off each side."""
    return ssim(shave(rgb_to_y(a), border), shave(rgb_to_y(b), border), data_range=255.0)


@torch.inference_mode()
def evaluate_upscaling(engine, images: torch.Tensor, metrics: str | Iterable[str] = UPSCALE_METRICS,
                       n: int | None = None, batch_size: int = 8, device=None,
                       progress: bool = False) -> dict[str, float]:
    """``engine`` (an upscaling engine: ``downsample``, ``bicubic``, ``upscale``, ``scale``) on the HR pictures
    ``images`` (uint8 [N, 3, H, W], H and W multiples of the scale), at most ``n`` of them. Keys: psnr, ssim,
    lpips and their ``/bicubic`` twins (those asked for and possible), eval_n, eval_seconds."""
    t0 = time.perf_counter()
    metrics = parse_upscale_metrics(metrics)
    dev = resolve_device(device)
    count = len(images) if n is None else min(int(n), len(images))
    if count < 1:
        raise ValueError("upscaling evaluation needs at least one held-out picture")
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError("upscaling evaluation takes uint8 pictures [N, 3, H, W]")
    side = min(images.shape[-2:])
    if "lpips" in metrics:
        from .perceptual import MIN_SIZE

        if side < MIN_SIZE:
            warnings.warn(f"LPIPS left out: it needs pictures of at least {MIN_SIZE} px, these have {side} px",
                          RuntimeWarning, stacklevel=2)
            metrics = tuple(m for m in metrics if m != "lpips")
    border = int(engine.scale)
    sums: dict[str, list[float]] = {}
    chunks = range(0, count, batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, total=math.ceil(count / batch_size), desc="upscaling", unit="batch")
    for s in chunks:
        hr = images[s:s + batch_size].to(engine.device)
        lr = engine.downsample(from_uint8(hr))
        outs = {"": to_uint8(engine.upscale(lr)), "/bicubic": to_uint8(engine.bicubic(lr))}
        hr = hr.cpu()
        for suffix, out in outs.items():
            out = out.cpu()
            got: dict[str, torch.Tensor] = {}
            if "psnr" in metrics:
                got["psnr"] = psnr_y(out, hr, border)
            if "ssim" in metrics:
                got["ssim"] = ssim_y(out, hr, border)
            if "lpips" in metrics:
                from .perceptual import lpips_distance

                got["lpips"] = torch.from_numpy(lpips_distance(out, hr, device=dev))
            for k, v in got.items():
                sums.setdefault(k + suffix, []).extend(v.double().tolist())
    res = {k: float(np.mean(v)) for k, v in sums.items()}
    res["eval_n"] = count
    res["eval_seconds"] = time.perf_counter() - t0
    return res
