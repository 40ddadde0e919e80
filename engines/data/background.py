"""Background removal with rembg, an optional step before image-to-image translation (docs/data.md).

``make_session(model)`` gives a cached rembg session (a named rembg model, or a local U2Net-style ONNX file
with ``model_path``); ``remove_background(image, session)`` returns the picture as RGBA with the subject's
mask as alpha. ``engines.data.prepare.prepare(..., remove_background=True)`` runs it on a whole set, before
transparency is flattened, so the subject ends up on the chosen background colour.

A picture that already has meaningful transparency (any pixel with alpha < 255, palette transparency
included) keeps its own alpha and rembg is not run on it: the artist's cut-out is exact, a predicted mask is
only an estimate, and a model would also try to "find a subject" inside art that is already isolated.

rembg and onnxruntime are optional (``pip install 'pokelab[translate]'``) and imported only when a session is
made. Nothing here imports torch.
"""
from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..hashing import file_sha256

DEFAULT_MODEL = "u2net"
CUSTOM_MODEL = "u2net_custom"   # how rembg runs a U2Net-style ONNX file given by path
INSTALL_HINT = "background removal needs rembg and onnxruntime: pip install 'pokelab[translate]'"

# Modes whose pictures carry alpha (plus any picture with a 'transparency' entry, e.g. palette PNGs).
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})

# rembg sessions that are not "one mask of the subject" or cannot be made from a name alone.
_NOT_BY_NAME = {
    "u2net_cloth_seg": "it segments clothes, not the subject",
    "u2net_custom": "it runs a model file: give --rembg-model-path FILE.onnx instead",
    "dis_custom": "it runs a model file; pokelab runs model files as u2net_custom (--rembg-model-path)",
    "ben_custom": "it runs a model file; pokelab runs model files as u2net_custom (--rembg-model-path)",
}

# One rembg prediction at a time, process-wide. onnxruntime already spreads one run over all cores, so
# running several at once only oversubscribes the CPU and multiplies activation memory; and rembg does
# not promise that its session objects may be used from several threads. Image decoding in the other
# threads of engines.data.prepare keeps going while one picture is in the model.
_PREDICT_LOCK = threading.Lock()


class BackgroundRemovalError(ValueError):
    """rembg is missing, the model is unknown or unusable, or the model failed on a picture."""


def _rembg():
    # onnxruntime first: without it, importing rembg prints a message and calls sys.exit().
    try:
        import onnxruntime  # noqa: F401
        import rembg
        from rembg import sessions as rembg_sessions
    except ImportError as e:
        raise BackgroundRemovalError(f"{INSTALL_HINT} ({e})") from None
    return rembg, rembg_sessions


def rembg_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rembg")
    except PackageNotFoundError:
        raise BackgroundRemovalError(INSTALL_HINT) from None


def known_models() -> list[str]:
    """rembg's sessions that can be chosen by name: local (the picture never leaves the machine), need no
    credential, and give one subject mask."""
    _, rs = _rembg()
    names = []
    for name, cls in rs.sessions.items():
        local = getattr(cls, "is_local", lambda: True)()
        creds = getattr(cls, "requires_credentials", lambda: False)()
        if local and not creds and name not in _NOT_BY_NAME:
            names.append(name)
    return sorted(names)


def _check_model(model: str, model_path: str | os.PathLike | None) -> tuple[str, Path | None]:
    """-> (rembg session name, absolute model file or None); raises BackgroundRemovalError."""
    _rembg()
    if model_path is not None:
        if model not in (DEFAULT_MODEL, CUSTOM_MODEL):
            raise BackgroundRemovalError(
                f"a model file is run as rembg's {CUSTOM_MODEL} (a U2Net-style network); "
                f"--rembg-model {model!r} cannot be combined with --rembg-model-path")
        path = Path(model_path).expanduser().resolve()
        if not path.is_file():
            raise BackgroundRemovalError(f"rembg model file not found: {model_path}")
        return CUSTOM_MODEL, path
    if model in _NOT_BY_NAME:
        raise BackgroundRemovalError(f"rembg model {model!r} cannot be used here: {_NOT_BY_NAME[model]}")
    known = known_models()
    if model not in known:
        raise BackgroundRemovalError(f"unknown rembg model {model!r}; rembg {rembg_version()} knows: "
                                     f"{', '.join(known)}")
    return model, None


def describe_model(model: str = DEFAULT_MODEL, model_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """What decides the masks, without loading the model: rembg's session name and version, and for a
    model file its absolute path and sha256 (the weights of a named model are fixed by rembg's checksum).
    Validates like ``make_session`` does."""
    name, path = _check_model(model, model_path)
    return {"model": name, "model_path": str(path) if path else None,
            "model_sha256": file_sha256(path) if path else None, "rembg_version": rembg_version()}


def make_session(model: str = DEFAULT_MODEL, model_path: str | os.PathLike | None = None):
    """A rembg session, cached per model (and per model file version). ``model_path``: a local U2Net-style
    ONNX file (input 1x3x320x320, first output's channel 0 the mask), run by rembg's ``u2net_custom``
    session, so no download. A named model is fetched into rembg's model folder on first use, as rembg
    always does. Raises BackgroundRemovalError for an unknown name, a missing or unloadable file."""
    name, path = _check_model(model, model_path)
    if path is None:
        return _named_session(name)
    st = path.stat()
    return _file_session(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _named_session(name: str):
    rembg, _ = _rembg()
    try:
        return rembg.new_session(name)
    except Exception as e:  # noqa: BLE001 - a failed download or load is the user's to fix, with the reason
        raise BackgroundRemovalError(f"cannot load rembg model {name!r} ({_short(e)})") from None


@functools.lru_cache(maxsize=4)
def _file_session(path: str, _mtime_ns: int, _size: int):
    _rembg()
    import onnxruntime as ort
    from rembg.sessions.u2net_custom import U2netCustomSession

    class _FileU2netSession(U2netCustomSession):
        # rembg's u2net_custom session, with its pre/post-processing, except that the file is used where
        # it lies: recent rembg refuses files outside its own models folder (a guard for its HTTP server,
        # where paths come from strangers); here the path comes from the user's own command line.
        @classmethod
        def download_models(cls, *args, **kwargs):
            return path

    opts = ort.SessionOptions()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:  # rembg's new_session honours it the same way
        opts.intra_op_num_threads = opts.inter_op_num_threads = int(threads)
    try:
        session = _FileU2netSession(CUSTOM_MODEL, opts, model_path=path)
    except Exception as e:  # noqa: BLE001 - onnxruntime's load errors have no common base class
        raise BackgroundRemovalError(f"cannot load {path} as an ONNX model ({_short(e)})") from None
    shape = list(session.inner_session.get_inputs()[0].shape)
    fixed = [d if isinstance(d, int) else None for d in shape]
    if len(fixed) != 4 or fixed[1] not in (3, None) or any(d not in (320, None) for d in fixed[2:]):
        raise BackgroundRemovalError(f"{path} is not a U2Net-style model: its input is {shape}, "
                                     f"rembg's {CUSTOM_MODEL} feeds [1, 3, 320, 320]")
    return session


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def has_own_alpha(alpha: np.ndarray | None) -> bool:
    """True when a picture's alpha says something (some pixel is not fully opaque): it is kept as it is."""
    return alpha is not None and alpha.size > 0 and int(alpha.min()) < 255


def image_has_alpha(image: Image.Image) -> bool:
    return image.mode in ALPHA_MODES or "transparency" in image.info


def subject_alpha(rgb: np.ndarray, session) -> np.ndarray:
    """H x W x 3 uint8 -> H x W uint8 alpha: rembg's mask of the subject (255 subject, 0 background)."""
    im = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    try:
        with _PREDICT_LOCK:
            masks = session.predict(im)
    except Exception as e:  # noqa: BLE001 - a model that fails on a valid picture is a model problem
        raise BackgroundRemovalError(f"rembg model {getattr(session, 'model_name', '?')} failed "
                                     f"on a {im.width}x{im.height} picture ({_short(e)})") from None
    mask = masks[0].convert("L")
    if mask.size != im.size:  # rembg resizes its masks to the picture; make sure of it
        mask = mask.resize(im.size, Image.Resampling.LANCZOS)
    return np.asarray(mask, dtype=np.uint8)


def cutout_alpha(rgb: np.ndarray, alpha: np.ndarray | None, session) -> tuple[np.ndarray, bool]:
    """-> (alpha to use, whether rembg made it). A picture with its own transparency keeps it."""
    if has_own_alpha(alpha):
        return alpha, False
    return subject_alpha(rgb, session), True


def remove_background(image: Image.Image, session) -> Image.Image:
    """A PIL picture -> RGBA: its own alpha if it has meaningful alpha (rembg is not called), otherwise its
    colours with rembg's subject mask as alpha. Colours are never premultiplied, so flattening the result
    later (engines.data.prepare) blends each edge pixel exactly once."""
    if image_has_alpha(image):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
        rgb, alpha = rgba[:, :, :3], rgba[:, :, 3]
    else:
        rgb, alpha = np.asarray(image.convert("RGB"), dtype=np.uint8), None
    alpha, _ = cutout_alpha(rgb, alpha, session)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
