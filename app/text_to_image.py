"""Text-to-image with StackGAN exports (engines/generate/stackgan.py), beside Stable Diffusion in the
Text-to-image tab. No UI code: the app and the tests call this module.

A grid holds ``count`` images for one prompt, image i from seed ``seed + i`` (reproducible alone, as the
Generate tab's grids), each shown twice: Stage-I's half-size image (enlarged, nearest) above Stage-II's
refinement. A prompt with no word the export's text encoder knows is a message naming the words; unknown
words in a prompt that has known ones are left out, and the result says which.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from engines.data.images import grid_array, to_uint8

from .appconfig import LIMITS
from .gan import check_seed
from .inputs import AppInputError, as_int, as_text

#: the most images one StackGAN prompt makes in the tab (each is shown at two stages)
MAX_TEXT_IMAGES = 16


@dataclass
class TextImages:
    prompt: str
    seeds: list[int]
    stage1: torch.Tensor                      # uint8 [n, 3, s/2, s/2], CPU
    final: torch.Tensor                       # uint8 [n, 3, s, s]: Stage-II's, or Stage-I's enlarged (phase 1)
    stage: int                                # 2 once Stage-II has trained, else 1
    notes: list[str] = field(default_factory=list)


def text_exports(catalog) -> list:
    """The generation exports that take a prompt (``text`` in their ``extra.supports``)."""
    return [e for e in catalog.generators() if "text" in e.supports]


def generate(engine, prompt, seed, count) -> TextImages:
    """``count`` images of ``prompt`` from seeds ``seed``, ``seed + 1``, ..."""
    if not hasattr(engine, "prompt_notes"):
        raise AppInputError(f"this export ({engine.name}) does not take a prompt; pick a text-to-image export")
    prompt = as_text(prompt, "prompt", LIMITS.max_prompt_chars)
    seed = check_seed(seed)
    count = as_int(count, "images", 1, MAX_TEXT_IMAGES)
    if seed + count - 1 > LIMITS.max_seed:
        raise AppInputError(f"seed + images must stay below {LIMITS.max_seed + 1}; lower the seed")
    from engines.labels import LabelError

    seeds = [seed + i for i in range(count)]
    try:
        with torch.inference_mode():
            z = torch.cat([engine.latent(1, s) for s in seeds])
            final = engine.sample(z=z, prompt=prompt)
            stage1 = engine.sample(z=z, prompt=prompt, stage=1)
        notes = engine.prompt_notes(prompt)
    except LabelError as e:  # engines.text's UnknownWordsError / CaptionError: the words, the load failure
        raise AppInputError(str(e)) from None
    return TextImages(prompt, seeds, to_uint8(stage1).cpu(), to_uint8(final).cpu(), int(engine.phase), notes)


def picture(r: TextImages, min_side: int = 128) -> np.ndarray:
    """One image: Stage-I's row above the final row, every tile enlarged (nearest: no invented detail) to at
    least ``min_side`` pixels."""
    size = r.final.shape[-1]
    factor = max(1, -(-int(min_side) // size))
    s1 = F.interpolate(r.stage1, size=size * factor, mode="nearest")
    fin = F.interpolate(r.final, size=size * factor, mode="nearest")
    return grid_array(torch.cat([s1, fin]), nrow=len(r.seeds))


def info(r: TextImages, entry_name: str, image_size: int) -> str:
    seeds = f"seeds {r.seeds[0]}–{r.seeds[-1]}" if len(r.seeds) > 1 else f"seed {r.seeds[0]}"
    if r.stage == 2:
        rows = f"top: Stage-I ({image_size // 2} px), bottom: Stage-II ({image_size} px)"
    else:
        rows = (f"Stage-II is not trained yet (an export from the first phase): both rows are Stage-I's "
                f"{image_size // 2} px images")
    return " · ".join([f"**{entry_name}**", f"{len(r.seeds)} image(s), {seeds}", rows, *r.notes])


def facts(entry) -> str:
    """Under the engine picker: what the export's text encoder reads, and training captions to start from."""
    text = (entry.config.get("extra") or {}).get("text") or {}
    if not isinstance(text, dict):
        return ""
    enc = str(text.get("encoder") or "?")
    bits = [f"text encoder **{enc}**"]
    if text.get("words"):
        bits.append(f"{int(text['words'])} known words (from its training captions; others are left out)")
    if enc == "clip" and text.get("clip_model"):
        bits.append(f"CLIP `{text['clip_model']}`")
    ex = [str(x) for x in (text.get("examples") or [])[:3] if isinstance(x, str)]
    out = " · ".join(bits)
    if ex:
        out += "  \nTraining captions, e.g.: " + "; ".join(f"*{x}*" for x in ex)
    return out
