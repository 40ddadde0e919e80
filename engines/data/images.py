"""Image tensor helpers shared by the trainer, CLI, metrics and app: [-1, 1] floats <-> uint8, grids, GIFs."""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..runs.gif import gif_bytes
from ..runs.folder import atomic_write_bytes


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float NCHW -> uint8 NCHW (round to nearest, like torchvision's save_image)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> [-1, 1] float NCHW."""
    return x.float() / 127.5 - 1.0


def grid_array(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """uint8 or [-1,1] NCHW -> one HxWx3 uint8 grid (nrow images per row, default square-ish)."""
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    images = images.cpu()
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, 3), pad_value, np.uint8)
    arr = images.permute(0, 2, 3, 1).numpy()
    if c == 1:
        arr = np.repeat(arr, 3, axis=3)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = arr[i, :, :, :3]
    return grid


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Lossless PNG grid, written atomically."""
    path = Path(path)
    atomic_write_bytes(path, png_bytes(grid_array(images, nrow)))
    return path


def to_pil_list(images: torch.Tensor) -> list[Image.Image]:
    arr = (images if images.dtype == torch.uint8 else to_uint8(images)).cpu().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[:, :, :3] if a.shape[2] >= 3 else a[:, :, 0]) for a in arr]


def save_gif(frames: list[Image.Image] | list[np.ndarray], path: str | os.PathLike, fps: float = 8.0,
             loop: int = 0, boomerang: bool = False, hold_last: float = 0.0) -> Path:
    """``engines.runs.gif.gif_bytes`` written atomically."""
    path = Path(path)
    atomic_write_bytes(path, gif_bytes(frames, fps=fps, loop=loop, boomerang=boomerang, hold_last=hold_last))
    return path


# A perceptually ordered dark-to-bright palette (black, purple, red, orange, pale yellow), close to
# matplotlib's "inferno"; interpolated linearly so no plotting library is needed.
_HEAT_STOPS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)


def heatmap_rgb(maps: np.ndarray) -> np.ndarray:
    """Maps in [0, 1], [N, H, W] -> uint8 RGB [N, H, W, 3] with the dark-to-bright palette."""
    m = np.clip(np.asarray(maps, np.float32), 0, 1) * (len(_HEAT_STOPS) - 1)
    lo = np.floor(m).astype(np.int64).clip(0, len(_HEAT_STOPS) - 2)
    t = (m - lo)[..., None]
    return (_HEAT_STOPS[lo] * (1 - t) + _HEAT_STOPS[lo + 1] * t + 0.5).astype(np.uint8)


def overlay_heatmap(images: torch.Tensor, maps: np.ndarray, alpha: float = 0.6) -> torch.Tensor:
    """uint8 NCHW pictures with [0, 1] maps [N, H, W] blended on top: uint8 NCHW."""
    heat = torch.from_numpy(heatmap_rgb(maps)).permute(0, 3, 1, 2).float()
    base = images.detach().cpu().float()
    return (base * (1 - alpha) + heat * alpha + 0.5).clamp(0, 255).to(torch.uint8)
