"""The training-progress GIF: every sample grid of a run, in epoch order, stamped with its epoch."""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from .gif import stamp_label
from ..data.images import save_gif
from .folder import RunFormatError, is_run_dir, list_samples


def timeline_frames(run_dir: str | os.PathLike, label: bool = True, max_size: int = 768) -> list[Image.Image]:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise RunFormatError(f"{run_dir} is not a run directory (no run.json)")
    samples = list_samples(run_dir)
    if not samples:
        raise RunFormatError(f"{run_dir} has no sample grids yet (samples/epoch_*.png)")
    frames = []
    for epoch, path in samples:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except OSError:
            continue  # a grid being written right now; skip it
        if max(im.size) > max_size:
            scale = max_size / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
        if label:
            im = stamp_label(im, f"epoch {epoch}")
        frames.append(im)
    if not frames:
        raise RunFormatError(f"{run_dir}: no readable sample grids")
    return frames


def write_timeline_gif(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, fps: float = 4,
                       label: bool = True, max_size: int = 768) -> Path:
    frames = timeline_frames(run_dir, label=label, max_size=max_size)
    # hold the last frame a little longer: it is the result people look for
    return save_gif(frames, out or Path(run_dir) / "progress.gif", fps=fps, hold_last=1.5)
