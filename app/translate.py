"""Image-to-image translation for the app, without UI code: an uploaded picture checked and brought to the
engine's size exactly as the training pipeline does it, optionally cut out by rembg first, then translated,
cycled back and, for engines with attention (U-GAT-IT), its CAM heat map.

An upload is checked before anything decodes it: its size on disk (``LIMITS.max_upload_bytes``) and the
pixel count in its header (``LIMITS.max_upload_pixels``, the decompression-bomb guard of
``engines.data.prepare``). ``engines.data.prepare.prepare_image`` then flattens transparency on the background the export's
input domain was prepared with, pads to a square (never crops) and resizes with Lanczos.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.data.images import heatmap_rgb, overlay_heatmap, png_bytes, to_uint8
from engines.runs.folder import atomic_write_bytes

from .appconfig import LIMITS
from .inputs import AppInputError, as_choice

#: rembg models offered in the UI (any name rembg knows is accepted; these give one subject mask each).
#: isnet-anime is trained on anime/cartoon characters, close to Pokémon art; u2netp is the small, fast one.
REMBG_CHOICES = ["u2net", "isnet-anime", "isnet-general-use", "u2netp", "silueta"]
CUSTOM_MODEL = "u2net_custom"   # engines.data.background's name for "the model file given with --rembg-model-path"
DIRECTION_NAMES = {"AB": "A → B", "BA": "B → A"}


@dataclass
class Translation:
    """One translated picture; every image is H x W x 3 uint8 at the engine's size."""
    input: np.ndarray                      # what the engine saw (after background removal, padding, resize)
    output: np.ndarray
    direction: str                         # 'AB' or 'BA'
    reconstruction: np.ndarray | None = None    # back through the other direction (engines with both)
    attention_overlay: np.ndarray | None = None  # CAM heat map over the input (engines with attention)
    attention_map: np.ndarray | None = None      # the same map alone, coloured
    attention_range: tuple[float, float] | None = None  # raw CAM min and max, before normalising for display
    background: str = ""                   # what happened to the background: '', 'removed', 'kept alpha'


# ---- uploads ---------------------------------------------------------------------------------------
def check_upload(upload: Any) -> Path:
    """The uploaded file's path, refused with a sentence when missing, empty or over the byte limit."""
    if upload is None or (isinstance(upload, str) and not upload.strip()):
        raise AppInputError("Upload a picture first.")
    path = Path(str(upload))
    try:
        n = path.stat().st_size
    except OSError:
        raise AppInputError("The uploaded picture could not be found on the server; upload it again.") from None
    if not path.is_file():
        raise AppInputError("The upload is not a file.")
    if n == 0:
        raise AppInputError("The uploaded file is empty (0 bytes).")
    if n > LIMITS.max_upload_bytes:
        raise AppInputError(f"The picture is {n / 2**20:.1f} MB; the limit is "
                            f"{LIMITS.max_upload_bytes / 2**20:.0f} MB. "
                            "Save it smaller (a few hundred pixels a side is plenty: the engine sees "
                            "it at its own size).")
    return path


class _CountingSession:
    """A rembg session that counts its predictions, so the page can say whether rembg cut the picture out
    or the picture kept its own transparency (engines.data.background never runs the model on those)."""

    def __init__(self, session):
        self.session = session
        self.model_name = getattr(session, "model_name", "?")
        self.calls = 0
        self.error: AppInputError | None = None   # a LazyRembg that could not make its session

    def predict(self, image, *args, **kwargs):
        self.calls += 1
        try:
            return self.session.predict(image, *args, **kwargs)
        except AppInputError as e:  # LazyRembg: the model is not available; said as it is, not as a bad picture
            self.error = e
            raise


class LazyRembg:
    """A rembg session made on the first prediction only. A picture with its own transparency is never sent
    to rembg (engines.data.background keeps its alpha), so it needs no model at all: with this, such a picture
    translates even where the model is not on disk and cannot be downloaded."""

    def __init__(self, model: Any, model_path: str | os.PathLike | None = None):
        self.model, self.model_path = model, model_path
        self.model_name = str(model or "").strip() or REMBG_CHOICES[0]
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", self.model_name):
            raise AppInputError(f"rembg model must be a model name like {REMBG_CHOICES[0]}, not {model!r}")
        self._session = None

    def predict(self, image, *args, **kwargs):
        if self._session is None:
            self._session = rembg_session(self.model, self.model_path)
        return self._session.predict(image, *args, **kwargs)


def prepare_upload(upload: Any, size: int, background: str = "white", rembg_session=None) -> tuple[np.ndarray, str]:
    """An uploaded picture -> (size x size x 3 uint8 as the engine sees it, what happened to the background:
    '' (nothing asked), 'removed' (rembg's mask) or 'kept alpha' (the picture's own transparency))."""
    from engines.data.prepare import DataError, prepare_image

    path = check_upload(upload)
    if rembg_session is not None and background == "none":
        background = "white"  # a cut-out needs a colour to land on; 'none' would drop the mask it made
    counting = _CountingSession(rembg_session) if rembg_session is not None else None
    try:
        # bytes, not a PIL image: prepare_image checks the header's pixel count before decoding and applies
        # the EXIF rotation of phone photos, exactly as for a training set
        pic = prepare_image(path.read_bytes(), size=size, background=background,
                            max_pixels=LIMITS.max_upload_pixels, rembg_session=counting)
    except DataError as e:
        if counting is not None and counting.error is not None:
            raise counting.error from None
        msg = str(e).replace("cannot use this image: ", "")
        raise AppInputError(f"This picture cannot be used: {msg}.") from None
    except OSError as e:
        raise AppInputError(f"The upload could not be read ({e}).") from None
    bg = "" if counting is None else ("removed" if counting.calls else "kept alpha")
    return pic, bg


_SESSION_LOCK = threading.Lock()


def rembg_session(model: Any, model_path: str | os.PathLike | None = None):
    """A cached rembg session for ``model`` (a rembg model name, or ``u2net_custom`` for the file given with
    --rembg-model-path). Missing rembg or engines.data.background, an unknown model or one that cannot be loaded
    become an AppInputError that says so; the rest of the app is unaffected."""
    name = str(model or "").strip() or REMBG_CHOICES[0]
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
        raise AppInputError(f"rembg model must be a model name like {REMBG_CHOICES[0]}, not {model!r}")
    try:
        from engines.data import background as bgr
    except ImportError as e:
        raise AppInputError(f"Background removal is not available on this server ({e}). "
                            "Untick “remove background” to translate the picture as it is.") from None
    if name == CUSTOM_MODEL:
        if model_path is None:
            raise AppInputError("No rembg model file was given to this server (--rembg-model-path); "
                                "pick a named model.")
    else:
        model_path = None
    try:
        if model_path is None:
            bgr.describe_model(name)              # an unknown name is refused here, without loading anything
            if rembg_model_file(name) is None and not download_reachable():
                raise AppInputError(missing_model_message(name))
        with _SESSION_LOCK:  # one load per model even when several requests ask at once (sessions are cached)
            return bgr.make_session(name, model_path=model_path)
    except bgr.BackgroundRemovalError as e:
        msg = re.sub(r"\s*(for url:)?\s*https?://[^\s)]+", "", str(e)).strip()  # download errors quote URLs
        raise AppInputError(f"Background removal is not available: {msg}. Untick “remove background” to "
                            "translate the picture as it is.") from None


#: rembg's download host for its named models (GitHub releases), probed before a download is attempted
REMBG_DOWNLOAD_HOST = ("github.com", 443)
_REACH = {"t": 0.0, "ok": True}
_REACH_LOCK = threading.Lock()


def rembg_model_dirs() -> list[Path]:
    """The folders rembg looks in for a named model's file: ``$U2NET_HOME`` (or ``~/.u2net``), and for
    rembg >= 2.0.7x also ``$REMBG_HOME`` (or ``~/.rembg``) ``/models/<name>/``. Only the first is given
    by name in messages: it is the one every rembg version reads."""
    home = os.environ.get("U2NET_HOME") or os.path.join(os.environ.get("XDG_DATA_HOME") or "~", ".u2net")
    return [Path(home).expanduser()]


def rembg_model_file(name: str) -> Path | None:
    """The named model's ONNX file when it is already on this machine, else None (rembg would download it).
    Asks rembg's own session class where it looks when it can (its folders moved between versions), and
    ``$U2NET_HOME`` / ``~/.u2net`` in any case."""
    fname = f"{name}.onnx"
    candidates = [d / fname for d in rembg_model_dirs()]
    try:
        import onnxruntime  # noqa: F401 - before rembg: without it, importing rembg calls sys.exit()
        from rembg.sessions import sessions as by_name

        cls = by_name.get(name)
        for meth in ("model_dir", "legacy_home", "u2net_home"):
            if cls is not None and hasattr(cls, meth):
                candidates.append(Path(getattr(cls, meth)()).expanduser() / fname)
    except Exception:  # noqa: BLE001 - an older or newer rembg layout: the U2NET_HOME folder is still checked
        pass
    for c in candidates:
        if c.is_file() and c.stat().st_size > 0:
            return c
    return None


def download_reachable(timeout: float = 3.0, remember_s: float = 60.0) -> bool:
    """Whether rembg's download host answers at all (a TCP connection within ``timeout``). Offline, rembg's
    own download retries for minutes before it fails; this answers in seconds. Remembered for a minute."""
    import socket
    import time

    with _REACH_LOCK:
        now = time.monotonic()
        if now - _REACH["t"] < remember_s:
            return bool(_REACH["ok"])
        try:
            socket.create_connection(REMBG_DOWNLOAD_HOST, timeout=timeout).close()
            ok = True
        except OSError:
            ok = False
        _REACH.update(t=now, ok=ok)
        return ok


def missing_model_message(name: str) -> str:
    folder = rembg_model_dirs()[0]
    return (f"Background removal needs the rembg model {name}, which is not on this server ({folder / (name + '.onnx')} "
            f"is missing) and cannot be downloaded from here. Put {name}.onnx in {folder} (or set U2NET_HOME to "
            "its folder), or start the app with --rembg-model-path FILE.onnx. Pictures with their own "
            "transparency need no model; untick “remove background” for the others.")


# ---- translation -----------------------------------------------------------------------------------
def check_direction(engine, direction: Any) -> str:
    dirs = list(getattr(engine, "directions", ("AB",)))
    return as_choice(str(direction or "AB").upper(), "direction", dirs)


def translate_picture(engine, picture: np.ndarray, direction: Any = "AB", extras: bool = True) -> Translation:
    """One H x W x 3 uint8 picture at the engine's size through the engine: output, reconstruction (through
    the opposite direction, when the engine has it) and, for A → B on engines with attention, the CAM map.
    ``extras=False``: the output alone (review rounds)."""
    d = check_direction(engine, direction)
    size = int(engine.image_size)
    if picture.shape != (size, size, 3) or picture.dtype != np.uint8:
        raise AppInputError(f"the picture must be {size}x{size} RGB uint8 for this export, not "
                            f"{picture.shape} {picture.dtype}")
    x = torch.from_numpy(np.array(picture)).permute(2, 0, 1)[None]  # a copy: inputs may be read-only views
    y = engine.translate(x, direction=d)
    res = Translation(input=picture, output=_hwc(to_uint8(y)), direction=d)
    if not extras:
        return res
    back = "BA" if d == "AB" else "AB"
    if back in engine.directions:
        # from the float output: the cycle as the engine computes it (engine.reconstruct does A -> B -> A)
        res.reconstruction = _hwc(to_uint8(engine.translate(y, direction=back)))
    if getattr(engine, "has_attention", False) and d == "AB":
        from engines.translate.base import normalise_maps

        raw = engine.attention(x)                          # [1, H, W] raw CAM values at the input size
        maps = normalise_maps(raw)
        res.attention_overlay = _hwc(overlay_heatmap(x, maps))
        res.attention_map = heatmap_rgb(maps)[0]
        res.attention_range = (float(raw.min()), float(raw.max()))
    return res


def translate_upload(engine, upload: Any, direction: Any = "AB", background: str = "white",
                     rembg_session=None) -> Translation:
    """An uploaded file -> Translation: the whole Translate tab minus the widgets."""
    d = check_direction(engine, direction)  # before the (possibly slow) background removal
    pic, bg = prepare_upload(upload, int(engine.image_size), background, rembg_session)
    res = translate_picture(engine, pic, d)
    res.background = bg
    return res


def input_background(entry) -> str:
    """The background colour the export's input domain was prepared with (what the engine learned on)."""
    ds = entry.source_dataset or entry.dataset
    bg = str(ds.get("background") or "white")
    return bg if bg in ("white", "black", "none") else "white"


def write_pngs(res: Translation, out_dir: Path, stem: str) -> dict[str, str | None]:
    """Every picture of ``res`` as a lossless PNG in ``out_dir`` (one folder per request), None where absent
    (files, not arrays: see ``app.gan.write_pngs``)."""
    from .gan import write_pngs as write_files

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "translation"
    pics = {"input": res.input, "output": res.output, "reconstruction": res.reconstruction,
            "attention": res.attention_overlay, "attention_map": res.attention_map}
    present = [k for k, v in pics.items() if v is not None]
    names = [f"{safe}-{res.direction}" if k == "output" else f"{safe}-{k}" for k in present]
    out: dict[str, str | None] = dict.fromkeys(pics)
    out.update(zip(present, write_files([pics[k] for k in present], out_dir, names)))
    return out


def describe(res: Translation, entry, elapsed_ms: float | None = None) -> str:
    """One line for the page: direction in domain names, size, background, attention range."""
    a, b = entry.domain_names()
    src, dst = (a, b) if res.direction == "AB" else (b, a)
    bits = [f"{src} → {dst}", f"{res.input.shape[0]} px (engine input: padded to a square, resized)"]
    if res.reconstruction is not None:
        bits.append(f"reconstruction: the output translated back, {dst} → {src}")
    if res.background == "removed":
        bits.append("background removed by rembg")
    elif res.background == "kept alpha":
        bits.append("background: the picture's own transparency (rembg not needed)")
    if res.attention_range is not None:
        lo, hi = res.attention_range
        bits.append(f"attention (CAM): raw {lo:.3g} … {hi:.3g} shown dark … bright")
    elif getattr(entry, "has_attention", False) and res.direction != "AB":
        bits.append("attention maps are for A → B only")
    if elapsed_ms is not None:
        bits.append(f"{elapsed_ms:.0f} ms")
    return " · ".join(bits)


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).cpu().numpy()
