"""PIL-only GIF helpers (no torch import): the trainer's timeline, the CLI's latent walks and the studio's
timeline download all build their GIFs here."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def stamp_label(im: Image.Image, text: str) -> Image.Image:
    """A white band under the image with the text, so the art itself is never covered."""
    band = max(16, im.width // 25)
    try:
        font = ImageFont.load_default(size=max(11, band * 2 // 3))
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        font = ImageFont.load_default()
    out = Image.new("RGB", (im.width, im.height + band), "white")
    out.paste(im, (0, 0))
    ImageDraw.Draw(out).text((6, im.height + band // 2), text, fill="black", font=font, anchor="lm")
    return out


def gif_bytes(frames: list[Image.Image] | list[np.ndarray], fps: float = 8.0, loop: int = 0,
              boomerang: bool = False, hold_last: float = 0.0) -> bytes:
    """An animated GIF in memory. ``boomerang`` plays forward then back (for latent walks);
    ``hold_last`` keeps the last frame on screen that many extra seconds."""
    frames = [f if isinstance(f, Image.Image) else Image.fromarray(f) for f in frames]
    if not frames:
        raise ValueError("no frames to write")
    if boomerang and len(frames) > 2:
        frames = frames + frames[-2:0:-1]
    durations = [max(20, int(1000 / max(fps, 0.1)))] * len(frames)
    durations[-1] += int(1000 * hold_last)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                   duration=durations, loop=loop, optimize=False)
    return buf.getvalue()
