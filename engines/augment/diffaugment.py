"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random transform family is applied to real and fake batches before D; every op is
differentiable in the image so G receives gradients through it. Policies: color, translation,
cutout (the paper's recommended "color,translation,cutout" for small data sets).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(n: int, x: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device)


def rand_brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (_rand(x.size(0), x) - 0.5)


def rand_saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x.size(0), x) * 2) + mean


def rand_contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x.size(0), x) + 0.5) + mean


def rand_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio*size pixels, filling with zeros.

    Two 1-D gathers (rows, then columns) on a zero-padded copy: an index pointing into the padding
    reads zero. Much cheaper than 4-D advanced indexing, and gather is differentiable in x."""
    n, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (n, 1), device=x.device)
    ty = torch.randint(-sw, sw + 1, (n, 1), device=x.device)
    padded = F.pad(x, [1, 1, 1, 1])
    rows = (torch.arange(h, device=x.device).unsqueeze(0) + tx + 1).clamp_(0, h + 1)  # [n, h]
    cols = (torch.arange(w, device=x.device).unsqueeze(0) + ty + 1).clamp_(0, w + 1)  # [n, w]
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a random ratio*size square per image (a multiplicative mask keeps it differentiable)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (n, 1), device=x.device) - ch // 2
    oy = torch.randint(0, w + (1 - cw % 2), (n, 1), device=x.device) - cw // 2
    r = torch.arange(h, device=x.device).unsqueeze(0)
    q = torch.arange(w, device=x.device).unsqueeze(0)
    in_rows = (r >= ox) & (r < ox + ch)  # [n, h]
    in_cols = (q >= oy) & (q < oy + cw)  # [n, w]
    keep = ~(in_rows.unsqueeze(2) & in_cols.unsqueeze(1))
    return x * keep.unsqueeze(1).to(x.dtype)


POLICIES = {
    "color": [rand_brightness, rand_saturation, rand_contrast],
    "translation": [rand_translation],
    "cutout": [rand_cutout],
}


class NoAugment:
    p = 0.0

    def __init__(self, **_ignored):
        pass  # options of other pipelines (e.g. the DiffAugment policy) do not apply

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def update(self, real_logits: torch.Tensor) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class DiffAugment(NoAugment):
    """Always-on augmentation (p = 1) with a comma-separated policy."""

    p = 1.0

    def __init__(self, policy: str = "color,translation,cutout", **_ignored):
        names = [s.strip() for s in policy.split(",") if s.strip()]
        bad = [s for s in names if s not in POLICIES]
        if bad:
            raise ValueError(f"unknown DiffAugment policy {bad}; choose from {', '.join(POLICIES)}")
        self.policy = names

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.policy:
            for fn in POLICIES[name]:
                x = fn(x)
        return x.contiguous()
