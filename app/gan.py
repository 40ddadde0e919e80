"""Sampling from GAN exports for the app, without UI code: grids with one seed per image, latent walks,
GIF/MP4 writing and novelty pairs.

Image i of a grid started at seed s is drawn from ``engine.latent(1, s + i)``: every image can be
reproduced alone and used as an interpolation end point by its own seed.
"""
from __future__ import annotations

import importlib.util
import os
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engines.data.images import grid_array, png_bytes, save_gif, to_pil_list, to_uint8
from engines.runs.folder import atomic_write_bytes

from .appconfig import LIMITS
from .inputs import AppInputError, as_choice, as_float, as_int


def gen_kwargs(engine, truncation_psi: float | None) -> dict:
    """``truncation_psi`` only for engines whose export says they support it (StyleGAN2-ADA)."""
    supports = set(((getattr(engine, "export_info", None) or {}).get("extra") or {}).get("supports") or [])
    if truncation_psi is None or "truncation" not in supports:
        return {}
    return {"truncation_psi": as_float(truncation_psi, "truncation ψ", LIMITS.min_psi, LIMITS.max_psi)}


def check_seed(seed, name: str = "seed") -> int:
    return as_int(seed, name, 0, LIMITS.max_seed)


def label_combo(engine, labels, what: str = "labels") -> str | None:
    """The chosen labels as one combination ('Grass' and 'Poison' -> 'Grass|Poison'), checked against a
    conditional engine's vocabulary; None when none is chosen. Labels for an unconditional engine are an error."""
    chosen = [labels] if isinstance(labels, str) else list(labels or [])
    chosen = [str(c) for c in chosen if str(c).strip()]
    if not getattr(engine, "conditional", False):
        if chosen:
            raise AppInputError(f"this export ({engine.name}) is not conditional: it takes no labels")
        return None
    if not chosen:
        return None
    from engines.labels import LabelError

    spec = engine.label_spec
    try:
        return spec.text(spec.indices(chosen, f"{what}: "))
    except LabelError as e:  # names the value and lists the vocabulary
        raise AppInputError(str(e)) from None


def label_rows(engine, labels, seeds: list[int]) -> torch.Tensor | None:
    """A conditional engine's labels for a grid (engines.labels): the chosen labels, one combination for every
    image ('Grass' and 'Poison', or 'Grass|Poison'); none chosen: each image's own draw from the training mix by
    its seed, so an image is reproducible alone. None for other engines, which take no labels."""
    combo = label_combo(engine, labels)
    if not getattr(engine, "conditional", False):
        return None
    spec = engine.label_spec
    if combo is None:
        return torch.cat([spec.draw(1, s) for s in seeds])
    return spec.encode([combo]).expand(len(seeds), -1)


def generate(engine, seed, count, truncation_psi: float | None = None,
             labels=None) -> tuple[torch.Tensor, list[int]]:
    """``count`` images as uint8 NCHW (CPU) and the seed of each; ``labels``: see ``label_rows``."""
    seed = check_seed(seed)
    count = as_int(count, "count", LIMITS.min_count, LIMITS.max_count)
    if seed + count - 1 > LIMITS.max_seed:
        raise AppInputError(f"seed + count must stay below {LIMITS.max_seed + 1}; lower the seed")
    seeds = [seed + i for i in range(count)]
    y = label_rows(engine, labels, seeds)
    with torch.inference_mode():
        z = torch.cat([engine.latent(1, s) for s in seeds])
        x = engine.sample(z=z, **gen_kwargs(engine, truncation_psi), **({"labels": y} if y is not None else {}))
    return to_uint8(x).cpu(), seeds


def interpolate(engine, seed_a, seed_b, frames, mode: str = "slerp",
                truncation_psi: float | None = None, labels=None, labels_to=None) -> torch.Tensor:
    """A latent walk as uint8 NCHW frames (the engine walks in W where it has one). Conditional exports:
    ``labels`` is held along the walk (none: seed A's own draw); with ``labels_to`` the walk goes from ``labels``
    to ``labels_to`` at seed A's latent instead (seed B is not used)."""
    a, b = check_seed(seed_a, "seed A"), check_seed(seed_b, "seed B")
    frames = as_int(frames, "frames", LIMITS.min_frames, LIMITS.max_frames)
    mode = as_choice(mode, "mode", ["slerp", "lerp"])
    combo_a, combo_b = label_combo(engine, labels, "label A"), label_combo(engine, labels_to, "label B")
    kw = gen_kwargs(engine, truncation_psi)
    with torch.inference_mode():
        if combo_b is not None:
            if combo_a is None:
                raise AppInputError("a walk between labels needs label A (where it starts) as well as label B")
            x = engine.interpolate_labels(a, combo_a, combo_b, frames=frames, mode=mode, **kw)
        else:
            x = engine.interpolate(a, b, frames=frames, mode=mode, **kw,
                                   **({"labels": combo_a} if combo_a is not None else {}))
    return to_uint8(x).cpu()


def parse_seeds(text, name: str, max_n: int = 8) -> list[int]:
    """'1, 2, 5-7' -> [1, 2, 5, 6, 7] (commas or spaces; a-b ranges), at most ``max_n`` seeds."""
    seeds: list[int] = []
    for part in str(text or "").replace(",", " ").split():
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise AppInputError(f"{name}: {part!r} is not a seed (use numbers like 1, 2, 5-7)") from None
        if b < a:
            raise AppInputError(f"{name}: the range {part!r} runs backwards")
        if b - a >= max_n:
            raise AppInputError(f"{name}: give 1 to {max_n} seeds; the range {part!r} holds {b - a + 1}")
        seeds += [check_seed(s, name) for s in range(a, b + 1)]
    if not 1 <= len(seeds) <= max_n:
        raise AppInputError(f"{name}: give 1 to {max_n} seeds, not {len(seeds)}")
    return seeds


def style_mix(engine, row_seeds, col_seeds, crossover, truncation_psi: float | None = None) -> np.ndarray:
    """The StyleGAN style-mixing figure as one image: column seeds' images along the top, row seeds' down
    the left, and in each cell the row's coarse styles (the first ``crossover`` W inputs) with the
    column's fine ones."""
    supports = set(((getattr(engine, "export_info", None) or {}).get("extra") or {}).get("supports") or [])
    if "style_mixing" not in supports or not hasattr(engine, "style_mix"):
        raise AppInputError("this export does not support style mixing (StyleGAN2-ADA exports do)")
    rows, cols = parse_seeds(row_seeds, "row seeds"), parse_seeds(col_seeds, "column seeds")
    num_ws = int(getattr(engine, "num_ws", 0) or (engine.export_info.get("extra") or {}).get("num_ws") or 0)
    crossover = as_int(crossover, "crossover", 0, num_ws)
    kw = gen_kwargs(engine, truncation_psi)
    with torch.inference_mode():
        mixed = to_uint8(engine.style_mix(rows, cols, crossover, **kw)).cpu()
        # conditional exports: each seed's own label draw, as style_mix and the Generate grid take it
        y = label_rows(engine, None, cols + rows)
        heads = to_uint8(engine.sample(z=torch.cat([engine.latent(1, s) for s in cols + rows]), **kw,
                                       **({"labels": y} if y is not None else {}))).cpu()
    blank = torch.full_like(heads[:1], 255)
    tiles = [blank, heads[:len(cols)]]
    for r in range(len(rows)):
        tiles += [heads[len(cols) + r:len(cols) + r + 1], mixed[r * len(cols):(r + 1) * len(cols)]]
    return grid_array(torch.cat(tiles), nrow=len(cols) + 1)


def strip(frames: torch.Tensor, per_row: int = 12) -> np.ndarray:
    """Frames side by side (wrapping after ``per_row``), white 2 px gaps."""
    return grid_array(frames, nrow=min(per_row, len(frames)))


def upscale(img: Image.Image, min_side: int) -> Image.Image:
    """Small GAN outputs enlarged for viewing (nearest neighbour: no invented detail)."""
    f = max(1, -(-min_side // max(img.size)))
    return img if f == 1 else img.resize((img.width * f, img.height * f), Image.Resampling.NEAREST)


def mp4_available() -> bool:
    return importlib.util.find_spec("imageio_ffmpeg") is not None


class OutputDir:
    """Files the app hands out for download, one sub-folder per request; older than ``max_age_s`` removed."""

    def __init__(self, root: str | os.PathLike, max_age_s: float = 3600):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        self._last_sweep = 0.0

    def new(self) -> Path:
        now = time.time()
        if now - self._last_sweep > 60:
            self._last_sweep = now
            self.sweep(now)
        d = self.root / uuid.uuid4().hex[:16]
        d.mkdir(parents=True)
        return d

    def sweep(self, now: float | None = None) -> None:
        now = now or time.time()
        for d in self.root.iterdir():
            try:
                if d.is_dir() and now - d.stat().st_mtime > self.max_age_s:
                    for f in d.iterdir():
                        f.unlink(missing_ok=True)
                    d.rmdir()
            except OSError:
                pass  # another request removing the same folder


def write_pngs(pictures, out: Path, names: list[str]) -> list[str]:
    """Pictures (HWC uint8 arrays or PIL images) as lossless PNG files in ``out`` (one folder per request).
    The page is given files rather than arrays: Gradio caches an array under a name made from its content
    and rewrites that file in place, so two requests showing the same picture at the same moment (two raters
    drawn the same real Pokémon, two users asking for the same seed) could read each other's half-written
    file; files handed over are copied into its cache atomically."""
    paths = []
    for pic, name in zip(pictures, names):
        path = Path(out) / f"{name}.png"
        atomic_write_bytes(path, png_bytes(np.asarray(pic)))
        paths.append(str(path))
    return paths


def write_grid(images: torch.Tensor, seeds: list[int], out: Path, stem: str) -> str:
    """The grid as one lossless PNG named by its seeds (single images: the gallery's own buttons)."""
    grid = out / f"{stem}-seeds{seeds[0]}-{seeds[-1]}-grid.png"
    atomic_write_bytes(grid, png_bytes(grid_array(images)))
    return str(grid)


def write_animation(frames: torch.Tensor, out: Path, stem: str, fps: float, boomerang: bool = False,
                    mp4: bool = False, min_side: int = 128) -> tuple[str, str | None]:
    """(GIF path, MP4 path or None). Frames are enlarged to at least ``min_side`` px for viewing. The MP4
    (H.264 through imageio-ffmpeg) is made only on request: encoding it costs more than the sampling."""
    fps = as_float(fps, "fps", LIMITS.min_fps, LIMITS.max_fps)
    pics = [upscale(p, min_side) for p in to_pil_list(frames)]
    gif = save_gif(pics, out / f"{stem}.gif", fps=fps, boomerang=boomerang)
    video = None
    if mp4:
        if not mp4_available():
            raise AppInputError("MP4 needs the imageio-ffmpeg package (pip install imageio-ffmpeg); "
                                "untick MP4 to get the GIF")
        import imageio.v2 as imageio

        seq = pics + pics[-2:0:-1] if boomerang and len(pics) > 2 else pics
        path = out / f"{stem}.mp4"
        tmp = out / f".{stem}.tmp.mp4"
        # libx264 wants even sides; macro_block_size=1 stops imageio from resizing the frames
        arrs = [np.asarray(p.resize((p.width + p.width % 2, p.height + p.height % 2))) for p in seq]
        imageio.mimwrite(tmp, arrs, fps=fps, codec="libx264", macro_block_size=1, quality=8)
        os.replace(tmp, path)
        video = str(path)
    return str(gif), video


def side_by_side(a: np.ndarray, b: np.ndarray, gap: int = 4) -> np.ndarray:
    """Two HWC uint8 images of the same height next to each other, white gap."""
    h = max(a.shape[0], b.shape[0])
    out = np.full((h, a.shape[1] + gap + b.shape[1], 3), 255, np.uint8)
    out[:a.shape[0], :a.shape[1]] = a[:, :, :3]
    out[:b.shape[0], a.shape[1] + gap:] = b[:, :, :3]
    return out


def novelty_pairs(images: torch.Tensor, seeds: list[int], real, device: str = "cpu"):
    """Each image's nearest training image in Inception pool3 space (engines.metrics), as
    ([(pair image HWC uint8, caption)], summary text). ``real`` is an app RealSet."""
    from engines.metrics.evaluate import find_nearest_training_images

    res = find_nearest_training_images(images, real, device=device)
    real_imgs = real.images
    if tuple(real_imgs.shape[-2:]) != tuple(images.shape[-2:]):
        from engines.metrics.sources import resize_uint8

        real_imgs = resize_uint8(real_imgs, tuple(images.shape[-2:]))
    pairs = []
    gen = images.permute(0, 2, 3, 1).numpy()
    for i, (s, idx, d) in enumerate(zip(seeds, res.index, res.distance)):
        near = real_imgs[int(idx)].permute(1, 2, 0).numpy()
        flag = " ⚠ copy?" if d < res.threshold else ""
        # the distance first: a gallery caption is cut at the thumbnail's width, the file name matters least
        pairs.append((side_by_side(gen[i], near), f"seed {s} · distance {d:.3f}{flag} · {real.item(int(idx))}"))
    copies = int((res.distance < res.threshold).sum())
    summary = (f"**Novelty** against {len(real.images)} training images of *{real.name}* "
               f"(each sample on the left, its nearest training image on the right; cosine distance of "
               f"Inception pool3 features, 0 = same features). "
               f"Copy threshold {res.threshold:.3f} = the 5th percentile of real-to-real nearest distances: "
               f"**{copies} of {len(seeds)}** samples fall below it (marked ⚠ copy?)."
               + (f" Note: {real.note}." if real.note else ""))
    return pairs, summary
