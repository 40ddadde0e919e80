"""MS-SSIM (Wang, Simoncelli & Bovik 2003) for sample diversity and the mode-collapse flag.

Same computation as ``pytorch_msssim.ms_ssim`` (11-tap Gaussian window, sigma 1.5, K = (0.01, 0.03),
"valid" filtering, 2x2 average-pool between scales, ReLU on the contrast terms), but the number of
scales follows the image size: as many of the 5 standard scales as keep the coarsest scale at least as
large as the window, with the kept standard weights renormalised (docs/metrics.md explains why this
rather than upsampling). 192 px and above: the standard 5 scales; 128 px: 4; 64: 3; 32: 2; 11-20: 1 (plain SSIM).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: default gap between generated and real mean pairwise MS-SSIM that flags mode collapse
COLLAPSE_MARGIN = 0.1


def ms_ssim_scales(size: int, win_size: int = 11, max_scales: int = len(WEIGHTS)) -> int:
    """Scales usable at ``size`` px: each 2x2 pool maps s -> ceil(s/2); the coarsest must be >= win_size."""
    if size < win_size:
        raise ValueError(f"MS-SSIM needs images of at least {win_size} px (the Gaussian window); got {size} px")
    k, s = 1, size
    while k < max_scales and (s + 1) // 2 >= win_size:
        s = (s + 1) // 2
        k += 1
    return k


def scale_weights(scales: int) -> tuple[float, ...]:
    """The standard weights; when fewer scales fit, the finest ones renormalised to sum to 1."""
    if not 1 <= scales <= len(WEIGHTS):
        raise ValueError(f"MS-SSIM scales must be 1..{len(WEIGHTS)}")
    if scales == len(WEIGHTS):
        return WEIGHTS  # as published (they sum to 1.0001), so 5 scales equals the reference exactly
    w = WEIGHTS[:scales]
    return tuple(v / sum(w) for v in w)


def _gauss_window(win_size: int, sigma: float, dtype, device) -> torch.Tensor:
    coords = torch.arange(win_size, dtype=dtype, device=device) - win_size // 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _band(n: int, g: torch.Tensor) -> torch.Tensor:
    """[n, n-k+1] matrix whose product with a row applies the window g ("valid" correlation)."""
    k = g.numel()
    m = torch.zeros(n, n - k + 1, dtype=g.dtype, device=g.device)
    cols = torch.arange(n - k + 1, device=g.device)
    for t in range(k):
        m[cols + t, cols] = g[t]
    return m


def _ssim_terms(x, y, g, data_range, k1, k2):
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    # separable Gaussian as two matrix products: same sums as a depthwise conv, ~8x faster on CPU
    bh, bw = _band(x.shape[-2], g).T, _band(x.shape[-1], g)

    def blur(t):
        return bh @ t @ bw

    mu_x, mu_y = blur(x), blur(y)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = blur(x * x) - mu_xx
    var_y = blur(y * y) - mu_yy
    cov = blur(x * y) - mu_xy
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)  # [B, C] each


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float | None = None, scales: int | None = None,
            win_size: int = 11, win_sigma: float = 1.5, k: tuple[float, float] = (0.01, 0.03)) -> torch.Tensor:
    """Per-pair MS-SSIM [B] of two NCHW batches. uint8 input implies data_range 255; float input needs
    ``data_range`` (1.0 for [0, 1], 2.0 for [-1, 1], 255 for [0, 255])."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"MS-SSIM needs two NCHW batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if data_range is None:
        if x.dtype != torch.uint8:
            raise ValueError("give data_range for float images (e.g. 1.0 for [0, 1], 2.0 for [-1, 1])")
        data_range = 255.0
    if not x.is_floating_point():
        x, y = x.float(), y.float()
    side = min(x.shape[-2:])
    scales = ms_ssim_scales(side, win_size) if scales is None else scales
    if scales > ms_ssim_scales(side, win_size):
        raise ValueError(f"{scales} MS-SSIM scales do not fit {side} px images with an {win_size}-px window")
    w = torch.tensor(scale_weights(scales), dtype=x.dtype, device=x.device)
    g = _gauss_window(win_size, win_sigma, x.dtype, x.device)
    terms = []
    for i in range(scales):
        ssim_c, cs_c = _ssim_terms(x, y, g, data_range, *k)
        if i < scales - 1:
            terms.append(torch.relu(cs_c))
            pad = [s % 2 for s in x.shape[2:]]
            x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
    terms.append(torch.relu(ssim_c))
    val = torch.prod(torch.stack(terms) ** w.view(-1, 1, 1), dim=0)  # [B, C]
    return val.mean(1)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float, win_size: int = 11, win_sigma: float = 1.5,
         k: tuple[float, float] = (0.01, 0.03)) -> torch.Tensor:
    """Per-pair SSIM [B] (Wang et al. 2004: the same Gaussian window, constants and "valid" filtering as
    ``ms_ssim``'s finest scale, without its ReLU), averaged over channels; float NCHW batches."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"SSIM needs two NCHW batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size} px (the Gaussian window); got {tuple(x.shape[-2:])}")
    x, y = x.double(), y.double()
    ssim_c, _cs = _ssim_terms(x, y, _gauss_window(win_size, win_sigma, x.dtype, x.device), float(data_range), *k)
    return ssim_c.mean(1)


def random_pairs(n: int, pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), i != j: all unordered pairs when there are at most ``pairs``, else a seeded sample."""
    if n < 2:
        raise ValueError(f"pairwise diversity needs at least 2 images (got {n})")
    if n * (n - 1) // 2 <= pairs:
        i, j = np.triu_indices(n, k=1)
        return i, j
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, pairs)
    j = (i + rng.integers(1, n, pairs)) % n  # never equal to i
    return i, j


@torch.inference_mode()
def pairwise_ms_ssim(images: torch.Tensor, pairs: int = 500, seed: int = 0, batch_size: int = 100,
                     device=None) -> float:
    """Mean MS-SSIM over random pairs of distinct images (uint8 NCHW). High = similar = low diversity."""
    from .inception import resolve_device

    dev = resolve_device(device)
    i, j = random_pairs(len(images), pairs, seed)
    total, count = 0.0, 0
    for s in range(0, len(i), batch_size):
        a = images[torch.as_tensor(i[s:s + batch_size])].to(dev)
        b = images[torch.as_tensor(j[s:s + batch_size])].to(dev)
        v = ms_ssim(a, b)
        total += float(v.double().sum())
        count += len(v)
    return total / count


def collapse_flag(ms_ssim_fake: float, ms_ssim_real: float, margin: float = COLLAPSE_MARGIN) -> bool:
    """Mode collapse: generated samples resemble each other clearly more than real images do."""
    return bool(ms_ssim_fake > ms_ssim_real + margin)
