""""Upscale ×4" for the app's pictures: a generated sample, a translation and the two review pictures, enlarged
by an upscaling export (srgan) and shown beside their nearest-neighbour enlargement (no invented detail).

Exports of kind ``upscale`` are found like every other export (``app.exports.ExportCatalog``: ``--checkpoints``,
the shipped ``checkpoints/runs/*/export``); the panel is only built when there is one. The picture a handler
gets from the page is an array or a file in gradio's cache; a file is read with ``engines.data.prepare.read_picture``
(regular files only, the upload limits, any mode, transparency flattened on white). Pictures are upscaled in
tiles (``UpscaleEngine.upscale_tiled``), and at most ``MAX_INPUT_PIXELS`` of them. ``panel()`` is the only UI
code: one accordion per tab, added by one line in that tab's module (``app.tabs``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .appconfig import LIMITS
from .inputs import AppInputError

#: the largest picture the app upscales (input pixels): ×4 makes it 16 times bigger (1 Mpx -> 16 Mpx, 48 MB)
MAX_INPUT_PIXELS = 1024 * 1024


def entries(catalog) -> list:
    """The catalog's upscaling exports, in scan order."""
    return [e for e in catalog.entries.values() if e.kind == "upscale"]


def scale_of(entry) -> int:
    extra = entry.config.get("extra") or {}
    s = extra.get("scale") if isinstance(extra, dict) else None
    if not isinstance(s, int) or isinstance(s, bool):
        s = (entry.config.get("engine_config") or {}).get("scale", 4)
    return int(s) if isinstance(s, int) and not isinstance(s, bool) and s > 0 else 4


def label(entry) -> str:
    """'srgan ×4 · <key> · 80 epochs · dreamworld-256 · PSNR 24.3 dB (bicubic 23.1)' for the picker."""
    bits = [f"{entry.engine_name} ×{scale_of(entry)}", entry.key]
    ep = entry.trained.get("epochs")
    if ep is not None:
        bits.append(f"{ep} epochs")
    if entry.dataset.get("name"):
        bits.append(str(entry.dataset["name"]))
    psnr = last_psnr(entry)
    if psnr:
        bits.append(psnr)
    return " · ".join(bits)


def last_psnr(entry) -> str:
    """The run's last PSNR beside bicubic's ('' when not evaluated), from its metrics.jsonl."""
    run = entry.quality.run_dir
    if not run:
        return ""
    from engines.runs.folder import read_metrics

    try:
        evals = read_metrics(run).eval
    except OSError:
        return ""
    for rec in reversed(evals):
        p, b = rec.get("psnr"), rec.get("psnr/bicubic")
        if isinstance(p, (int, float)) and isinstance(b, (int, float)):
            return f"PSNR {p:.1f} dB (bicubic {b:.1f})"
    return ""


def picture(value: Any, what: str) -> np.ndarray:
    """A picture from the page (an array, a PIL image, a file path, or a gallery's (picture, caption)) as
    H x W x 3 uint8; AppInputError when there is none or it cannot be used."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and not isinstance(value, np.ndarray):
        value = value[0]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise AppInputError(f"There is no {what} to upscale yet.")
    if isinstance(value, Image.Image):
        value = np.asarray(value.convert("RGB"))
    if isinstance(value, np.ndarray):
        arr = value
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
            raise AppInputError(f"The {what} is not an RGB picture ({arr.dtype}, shape {arr.shape}).")
        if arr.shape[2] == 4:  # flattened on white, as the data layer does
            a = arr[:, :, 3:].astype(np.uint16)
            arr = ((arr[:, :, :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
        return np.ascontiguousarray(arr)
    from engines.data.prepare import DataError, read_picture

    try:
        return read_picture(Path(str(value)), background="white", max_pixels=LIMITS.max_upload_pixels)
    except DataError as e:
        raise AppInputError(f"The {what} cannot be upscaled: {e}") from None


def upscale(engine, pic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest-neighbour enlargement, the engine's) of one H x W x 3 uint8 picture, both scale times larger."""
    h, w = pic.shape[:2]
    if h * w > MAX_INPUT_PIXELS:
        raise AppInputError(f"The picture is {w}×{h} = {w * h:,} pixels; the app upscales at most "
                            f"{MAX_INPUT_PIXELS:,} (use `pokelab upscale` for bigger ones).")
    s = int(engine.scale)
    x = torch.from_numpy(np.ascontiguousarray(pic)).permute(2, 0, 1).unsqueeze(0)
    sr = engine.upscale_tiled(x)[0].permute(1, 2, 0).numpy()
    near = np.repeat(np.repeat(pic, s, axis=0), s, axis=1)
    return near, sr


class Upscaler:
    """The handlers of the three panels, bound to the app (its catalog and its folder of handed-out files)."""

    def __init__(self, app):
        self.app = app

    def _engine(self, key):
        entry = self.app.catalog.get(key)
        if entry.kind != "upscale":
            raise AppInputError(f"{entry.key} is a {entry.kind} engine ({entry.engine_name}); pick an upscaling "
                                "export")
        return entry, self.app.catalog.engine(entry.key)

    def run(self, key, pictures: list[tuple[Any, str]]):
        """[(picture, name)] -> (gallery [(file, caption)] with nearest | engine per picture, info line)."""
        from . import gan

        entry, eng = self._engine(key)
        s = int(eng.scale)
        t0 = time.perf_counter()
        pics, names, sizes = [], [], []
        for value, name in pictures:
            near, sr = upscale(eng, picture(value, f"{name.lower()} picture"))
            pics += [near, sr]
            names += [f"{name}-nearest-x{s}", f"{name}-{entry.engine_name}-x{s}"]
            sizes.append(f"{near.shape[1] // s}×{near.shape[0] // s} → {sr.shape[1]}×{sr.shape[0]}")
        ms = (time.perf_counter() - t0) * 1000
        files = gan.write_pngs(pics, self.app.out.new(), [n.lower().replace(" ", "-") for n in names])
        caps = [c for _, name in pictures for c in (f"{name} · nearest neighbour ×{s}",
                                                     f"{name} · {entry.engine_name} ×{s}")]
        info = (f"**{entry.engine_name}** ×{s} ({entry.trained.get('epochs', '?')} epochs) · "
                f"{'; '.join(sizes)} · {ms:.0f} ms. Left of each pair: the same pixels enlarged without smoothing.")
        return list(zip(files, caps)), info

    def generated(self, key, gallery, seeds, selected):
        """The sample picked in the Generate grid (the first when none is picked)."""
        if not gallery:
            raise AppInputError("Generate a grid first.")
        i = 0
        if selected is not None and seeds and selected in seeds:
            i = list(seeds).index(selected)
        if i >= len(gallery):
            i = 0
        seed = seeds[i] if seeds and i < len(seeds) else None
        return self.run(key, [(gallery[i], f"Seed {seed}" if seed is not None else "Sample")])

    def translated(self, key, output):
        return self.run(key, [(output, "Output")])

    def review(self, key, left, right):
        return self.run(key, [(left, "Left"), (right, "Right")])


def panel(app, where: str, inputs: list, handler: str) -> None:
    """Inside a tab of ``app.build()``: an accordion 'Upscale ×4' (export picker when there are several, a button,
    a gallery of nearest | engine pairs, a line of facts) calling ``Upscaler.<handler>(export, *inputs)``; the
    endpoint is ``/upscale_<where>``. Nothing is built when the catalog has no upscaling export."""
    import gradio as gr

    from .widgets import export_picker, handle_errors

    ups = entries(app.catalog)
    if not ups:
        return
    if not hasattr(app, "upscaler"):
        app.upscaler = Upscaler(app)
    first = ups[0]
    valid = lambda: {e.key for e in entries(app.catalog)}  # noqa: E731 - what a request may name
    with gr.Accordion(f"Upscale ×{scale_of(first)}", open=False, elem_id=f"upscale-{where}"):
        with gr.Row():
            export = export_picker([(label(e), e.key) for e in ups], first.key, valid, label="Upscaling export",
                                   visible=len(ups) > 1, elem_id=f"upscale-{where}-export", scale=3)
            btn = gr.Button(f"Upscale ×{scale_of(first)}", variant="secondary", elem_id=f"upscale-{where}-btn",
                            scale=1)
        out = gr.Gallery(label="Nearest neighbour | upscaled", columns=2, height="auto", format="png",
                         object_fit="contain", interactive=False, elem_id=f"upscale-{where}-gallery",
                         buttons=["download", "fullscreen"])
        info = gr.Markdown(elem_id=f"upscale-{where}-info")
    btn.click(handle_errors(getattr(app.upscaler, handler)), [export, *inputs], [out, info],
              api_name=f"upscale_{where}")
