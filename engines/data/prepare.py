"""Image sets in, one uint8 tensor out (docs/data.md).

``prepare(src, out)`` reads a folder (recursively), a .zip or a .tar(.gz/.bz2/.xz), skips what cannot be
read (with a reason), flattens transparency on a background, pads the art to a square (never crops it),
resizes with Lanczos and stores the result as ``OUT/images.npy`` (uint8 [N, 3, S, S]) + ``OUT/dataset.json``.
``load_dataset(path)`` takes a prepared folder or a raw source; raw sources are prepared into a cache
keyed by a content hash, so the second load only hashes bytes and never decodes an image again.
With ``remove_background=True`` rembg (engines.data.background) cuts each subject out before flattening.

Nothing here unpickles: the metadata is JSON and the pixels are read with ``allow_pickle=False``.
torch is imported lazily so that building the CLI parser stays fast.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import struct
import sys
import tarfile
import threading
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, NamedTuple

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from . import background as bgremoval
from ..runs.folder import atomic_write_json, atomic_writer

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Bump when the pixels produced for the same input could change: it is part of every content key.
PIPELINE_VERSION = "pokelab-data/1 (flatten, pad-square, lanczos rg3)"
FORMAT = "pokelab-prepared-dataset"
FORMAT_VERSION = 1

BACKGROUNDS = ("white", "black", "none")
_BG_VALUE = {"white": 255, "black": 0, "none": 0}  # 'none' pads with black (documented)

IMAGE_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".webp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".apng",
})
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip")

# Limits (docs/data.md, "Limits"): far above what a real set of ~650 pictures needs, low enough that a
# crafted file cannot take the machine's memory or hours of CPU.
DEFAULT_MAX_PIXELS = 40_000_000            # per picture: ~6300 x 6300; larger headers are decompression bombs
DEFAULT_MAX_TOTAL_PIXELS = 20_000_000_000  # per set: 650 pictures of ~30 Mpx (650 phone photos are 7.8 Gpx)
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024  # per file; checked before reading and while reading
MIN_SIZE, MAX_SIZE = 2, 4096
_CHUNK = 1 << 20
_PEEK_BYTES = 256 * 1024           # the scan reads a picture's width and height from its first bytes
_IN_FLIGHT_PIXELS = 48_000_000     # pixels of the pictures being decoded at once (a bigger one goes alone)
_IN_FLIGHT_BYTES = 256 * 1024 * 1024  # file bytes read and waiting for a decoding thread
_MAX_LINK_HOPS = 8                 # a link to a link to ... (archives): more is treated as a loop
_MAX_LINK_BYTES = 4096             # a zip symlink entry holds its target; a longer one is not a link we follow


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _printable(text: Any) -> str:
    """``text`` made safe to print on one terminal line: control and format characters (newline, ESC,
    bidi overrides, zero-width ...) become ``\\n``, ``\\xNN`` or ``\\uNNNN`` escapes; bytes of a file
    name that were not UTF-8 (Python's surrogate escapes) become ``\\xNN``. Letters with accents, other
    scripts and emoji are kept. Backslashes are kept too, so applying it twice changes nothing."""
    s = str(text)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        o = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0xDC80 <= o <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    return "".join(out)


class DataError(ValueError):
    """The images cannot be turned into a dataset (nothing usable, bad options, damaged archive ...).
    The message is one printable line: names in it have their control characters escaped."""

    def __init__(self, message: Any = "", *args: Any):
        super().__init__(_printable(message), *args)


class _Corrupt(DataError):
    """A prepared folder or cache entry is damaged or incomplete."""


class _Skip(Exception):
    """One file cannot be used; the message is the reason shown in the report."""


@dataclass
class PreparedDataset:
    images: "torch.Tensor"            # uint8 [N, 3, S, S], contiguous, CPU
    key: str                          # content hash (see docs/data.md)
    name: str                         # source folder / archive stem
    size: int
    background: str
    files: list[str]                  # relative source names, same order as images
    skipped: list[tuple[str, str]]    # (relative name, reason)
    source: str                       # the path it came from (absolute)
    ignored: int = 0                  # non-image files silently left out
    location: str | None = None       # prepared folder / cache entry it is stored in, if any
    # None, or what rembg ran: background.describe_model() + counts "removed" / "kept_alpha"
    background_removal: dict[str, Any] | None = None
    # links that were followed: (name, what it points at: a name in the set, or a path outside SRC)
    links: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


# ---- options ----------------------------------------------------------------------------------
def _check_options(size: Any, background: Any, max_pixels: Any = DEFAULT_MAX_PIXELS,
                   max_total_pixels: Any = DEFAULT_MAX_TOTAL_PIXELS) -> tuple[int, str, int]:
    try:
        size_i = int(size)
    except (TypeError, ValueError):
        raise DataError(f"size must be a whole number of pixels, got {size!r}") from None
    if size_i != size or not MIN_SIZE <= size_i <= MAX_SIZE:
        raise DataError(f"size must be a whole number between {MIN_SIZE} and {MAX_SIZE}, got {size!r}")
    if background not in BACKGROUNDS:
        raise DataError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
    if int(max_pixels) < 1:
        raise DataError("max_pixels must be >= 1")
    if int(max_total_pixels) < 1:
        raise DataError("max_total_pixels must be >= 1")
    return size_i, str(background), int(max_pixels)


@dataclass
class _Removal:
    """--remove-background: the rembg model (background.describe_model()), its session once images are
    decoded, and how many pictures got a predicted mask vs kept their own alpha (for the report)."""
    model: dict[str, Any]
    session: Any = None
    removed: int = 0
    kept_alpha: int = 0
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    def start(self) -> None:
        """Loads the model (a named one may be downloaded by rembg): only when images are decoded, so a
        cache hit or an up-to-date OUT never touches it."""
        if self.session is None:
            try:
                self.session = bgremoval.make_session(self.model["model"], self.model["model_path"])
            except bgremoval.BackgroundRemovalError as e:
                raise DataError(str(e)) from None

    def apply(self, rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
        try:
            alpha, made = bgremoval.cutout_alpha(rgb, alpha, self.session)
        except bgremoval.BackgroundRemovalError as e:  # a model problem: stop, never skip every image
            raise DataError(str(e)) from None
        with self._lock:  # called from the decoding threads
            if made:
                self.removed += 1
            else:
                self.kept_alpha += 1
        return alpha

    def record(self) -> dict[str, Any]:
        return {**self.model, "removed": self.removed, "kept_alpha": self.kept_alpha}


def _removal_key(model: dict[str, Any]) -> str:
    """The part of the content key that names the masks: rembg version and model (file: its sha256, not
    its path, so moving the file keeps the key)."""
    sha = f" sha256={model['model_sha256']}" if model.get("model_sha256") else ""
    return f"rembg {model.get('rembg_version')} {model.get('model')}{sha}"


def _removal_options(remove_background: Any, rembg_model: Any, rembg_model_path: Any,
                     background: str) -> _Removal | None:
    if rembg_model_path is not None and not remove_background:
        raise DataError("a rembg model file only applies with remove_background (--remove-background)")
    if not remove_background:
        return None
    if background == "none":
        raise DataError("background removal needs a background colour to put the subject on (white or "
                        "black); with background 'none' the alpha it makes would be dropped")
    if not isinstance(rembg_model, str) or not rembg_model:
        raise DataError(f"rembg model must be a model name, got {rembg_model!r}")
    try:
        return _Removal(bgremoval.describe_model(rembg_model, rembg_model_path))
    except bgremoval.BackgroundRemovalError as e:
        raise DataError(str(e)) from None


def _removal_text(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "no background removal"
    path = f" ({rec['model_path']})" if rec.get("model_path") else ""
    return f"background removed by rembg {rec.get('model')}{path}"


def _removal_note(rec: dict[str, Any] | None, other: dict[str, Any] | None) -> str:
    """' (…removal…)' for messages comparing two settings, '' when neither has removal."""
    return f" ({_removal_text(rec)})" if rec or other else ""


def default_cache_dir() -> Path:
    env = os.environ.get("POKELAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pokelab"


def natural_key(name: str) -> tuple:
    """'2.png' sorts before '10.png' (so index i of the Pokémon set is dex number i + 1)."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)) + (name,)


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    msg = msg[:160]
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


# ---- reading files safely -------------------------------------------------------------------------
class _NotRegular(OSError):
    """The path leads to something that is not a regular file (a FIFO, a device, a socket, a folder): it
    is never opened, or it is closed again unread."""


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISLNK, "a link")):
        if test(mode):
            return what
    return "a special file"


_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_NOCTTY", 0))


def _open_regular(path: str | os.PathLike) -> BinaryIO:
    """Opens ``path`` (following links) for reading only if it leads to a regular file. A FIFO would block
    the open until some writer comes, /dev/zero never ends: such things are refused before opening, and
    the opened file is checked again (non-blocking), so a swap between the check and the open does not
    help. Raises _NotRegular, or OSError when it cannot be read."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _NotRegular(f"{_kind(st.st_mode)}, not a regular file")
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular(f"{_kind(st.st_mode)}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_at_most(f: BinaryIO, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``f``: one byte past the limit says "too big" without reading on."""
    parts: list[bytes] = []
    n = 0
    while n <= limit:
        block = f.read(min(_CHUNK, limit + 1 - n))
        if not block:
            break
        parts.append(block)
        n += len(block)
    return b"".join(parts)


def _hash_limited(f: BinaryIO, limit: int) -> tuple[str | None, int, bytes]:
    """(sha256, byte count, the first _PEEK_BYTES bytes) of ``f``, reading at most ``limit + 1`` bytes.
    The digest is None when the stream is longer than ``limit``."""
    h = hashlib.sha256()
    n = 0
    head = b""
    while n <= limit:
        block = f.read(min(_CHUNK, limit + 1 - n))
        if not block:
            break
        if len(head) < _PEEK_BYTES:
            head += block[: _PEEK_BYTES - len(head)]
        h.update(block)
        n += len(block)
    return (h.hexdigest() if n <= limit else None), n, head


def _read_json(path: Path) -> Any:
    """A JSON file that is a regular file of sane size (a FIFO named dataset.json must not block us).
    Raises OSError or ValueError."""
    with _open_regular(path) as f:
        raw = _read_at_most(f, DEFAULT_MAX_FILE_BYTES)
    if len(raw) > DEFAULT_MAX_FILE_BYTES:
        raise ValueError(f"over {_size_text(DEFAULT_MAX_FILE_BYTES)}")
    return json.loads(raw.decode("utf-8"))


def _size_text(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


def _too_big(nbytes: int | None = None) -> str:
    limit = _size_text(DEFAULT_MAX_FILE_BYTES)
    if nbytes is None:
        return f"file is over the {limit} limit (reading stopped there)"
    return f"file is {_size_text(nbytes)}, over the {limit} limit (not read)"


def _peek_dims(head: bytes) -> tuple[int, int] | None:
    """A picture's (width, height) from its first bytes: Pillow reads the header only, no pixel is
    decoded. None when the header is not there (a JPEG with a big EXIF block, a TIFF with its directory
    at the end ...): such a file is measured when it is read for decoding."""
    if not head:
        return None
    try:
        with Image.open(io.BytesIO(head)) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - not known yet; the decoder gives the reason later
        return None
    return (int(w), int(h)) if w > 0 and h > 0 else None


_truncation_lock = threading.Lock()
_truncation_users = 0
_truncation_saved: Any = False


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is one switch for the whole process, and other code
    (a notebook, a library) may turn it on; then a cut-off picture loads with its missing part black
    instead of failing. It is off while pokelab decodes and is put back afterwards (counted, so that
    overlapping prepares in threads restore it once, at the end)."""
    global _truncation_users, _truncation_saved
    with _truncation_lock:
        if _truncation_users == 0:
            _truncation_saved = ImageFile.LOAD_TRUNCATED_IMAGES
        _truncation_users += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _truncation_lock:
            _truncation_users -= 1
            if _truncation_users == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _truncation_saved


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_raw_size(w: int, h: int, depth: int, colour_type: int, interlace: int) -> int | None:
    """Bytes the inflated image data of a PNG must hold (one filter byte per row), or None if unknown."""
    channels = _PNG_CHANNELS.get(colour_type)
    if channels is None or depth not in (1, 2, 4, 8, 16) or w < 1 or h < 1:
        return None

    def rows(pw: int, ph: int) -> int:
        return ph * (1 + (pw * depth * channels + 7) // 8) if pw > 0 and ph > 0 else 0

    if interlace == 0:
        return rows(w, h)
    if interlace != 1:
        return None
    return sum(rows((w - x0 + dx - 1) // dx, (h - y0 + dy - 1) // dy) for x0, y0, dx, dy in _ADAM7)


def _png_short(data: bytes) -> str | None:
    """For a PNG: why its image data (the IDAT zlib stream) is incomplete, or None. Pillow accepts a
    stream that *ends* before the last row and leaves the missing rows black; this inflates the stream
    once more, counting bytes without keeping them (at most what the header needs, plus one), and
    compares with what the header says the rows take."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    pos, need, got = 8, None, 0
    z = None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR" and need is None and len(body) >= 13:
            w, h, depth, colour_type, _method, _filter, interlace = struct.unpack(">IIBBBBB", body[:13])
            need = _png_raw_size(w, h, depth, colour_type, interlace)
            if need is None:
                return None
            z = zlib.decompressobj()
        elif kind == b"IDAT" and z is not None and need is not None and not z.eof:
            buf = body
            try:
                while got <= need and not z.eof:
                    want = min(_CHUNK, need + 1 - got)
                    out = z.decompress(buf, want)
                    got += len(out)
                    buf = z.unconsumed_tail
                    if not buf and len(out) < want:
                        break
            except zlib.error:
                return None  # corrupt, not short: Pillow's own error stands
            if got > need:
                return None
        elif kind == b"IEND":
            break
    if need is None or z is None or got >= need:
        return None
    end = "ends early" if z.eof else "is cut off"
    return f"the image data {end}: {got:,} of the {need:,} bytes its header needs"


# ---- decoding one image --------------------------------------------------------------------------
def _scale16(a: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 with rounding (v * 255 / 65535); PIL's own convert('L') clips instead."""
    a = np.clip(a.astype(np.int64), 0, 65535)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _rgb_alpha(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any PIL mode -> (H x W x 3 uint8 colour, H x W uint8 alpha or None)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        raw = np.asarray(im)
        if raw.ndim != 2:
            raise _Skip(f"unsupported image mode {mode}")
        grey = _scale16(raw)
        alpha = None
        trns = im.info.get("transparency")
        if isinstance(trns, int):  # a 16-bit grey PNG's tRNS key colour
            alpha = np.where(raw == trns, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), alpha
    if mode == "F":
        raw = np.nan_to_num(np.asarray(im, dtype=np.float32))
        scale = 255.0 if raw.size and raw.max() <= 1.0 else 1.0  # 0..1 floats, else already 0..255
        grey = np.clip(np.rint(raw * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), None
    has_alpha = bgremoval.image_has_alpha(im)
    try:
        # P with transparency goes through RGBA so the transparent index becomes alpha 0. An image already
        # in the wanted mode is not copied first (a 36 Mpx picture would cost 144 MB more at once).
        want = "RGBA" if has_alpha else "RGB"
        conv = im if im.mode == want else im.convert(want)
    except (ValueError, OSError) as e:
        raise _Skip(f"unsupported image mode {mode} ({_short(e)})") from None
    arr = np.asarray(conv, dtype=np.uint8)
    if has_alpha:
        return arr[:, :, :3], arr[:, :, 3]
    return arr, None


def _flatten(rgb: np.ndarray, alpha: np.ndarray | None, background: str) -> np.ndarray:
    """Transparency composited on the background colour ('none': the colour under it is kept)."""
    if alpha is None or background == "none":
        return rgb
    a = alpha.astype(np.uint16)[:, :, None]
    return ((rgb.astype(np.uint16) * a + _BG_VALUE[background] * (255 - a) + 127) // 255).astype(np.uint8)


def _to_square(rgb: np.ndarray, alpha: np.ndarray | None, size: int, background: str) -> np.ndarray:
    bg = _BG_VALUE[background]
    # Flatten before resizing: resizing first would blend the colour hidden under transparent
    # pixels into the edges (dark or coloured halos).
    rgb = _flatten(rgb, alpha, background)
    h, w = rgb.shape[:2]
    side = max(h, w)
    if h != w:  # pad with the background, centred: the whole art survives
        canvas = np.full((side, side, 3), bg, np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top:top + h, left:left + w] = rgb
        rgb = canvas
    if side != size:
        pil = Image.fromarray(rgb, "RGB").resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        rgb = np.asarray(pil, dtype=np.uint8)
    return np.ascontiguousarray(rgb)


def _decode_array(data: bytes, size: int, background: str, max_pixels: int,
                  removal: _Removal | None = None) -> np.ndarray:
    """Encoded file bytes -> S x S x 3 uint8, or raise _Skip with the reason."""
    rgb, alpha = _decode_rgb_alpha(data, max_pixels)
    if removal is not None:  # before flattening, so the cut-out lands on the background colour
        alpha = removal.apply(rgb, alpha)
    return _to_square(rgb, alpha, size, background)


def _decode_rgb_alpha(data: bytes, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Encoded file bytes -> (H x W x 3 uint8 colour, alpha or None) at the picture's own size, EXIF
    rotation applied; or raise _Skip with the reason."""
    if not data:
        raise _Skip("empty file (0 bytes)")
    # No warnings.catch_warnings() here: it is not thread-safe and decoding runs in threads; our own
    # max_pixels check below is what guards against decompression bombs.
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise _Skip("not an image (format not recognised)") from None
    except Image.DecompressionBombError as e:
        raise _Skip(f"too many pixels: decompression-bomb guard ({_short(e)})") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a skip, never a crash
        raise _Skip(f"unreadable image header ({_short(e)})") from None
    with im:
        w, h = im.size
        if w < 1 or h < 1:
            raise _Skip(f"image has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise _Skip(f"too many pixels: {w}x{h} = {w * h:,} is over the limit of {max_pixels:,} "
                        f"(decompression-bomb guard)")
        try:
            im.load()  # the whole picture, inside the try: a truncated stream fails here
            short = _png_short(data) if im.format == "PNG" else None
            if short:
                raise _Skip(f"truncated or corrupt image data ({short})")
            orientation = im.getexif().get(0x0112, 1)
            if orientation not in (None, 1):  # phone photos: apply the EXIF rotation
                im = ImageOps.exif_transpose(im)
            rgb, alpha = _rgb_alpha(im)
        except _Skip:
            raise
        except MemoryError:
            raise _Skip(f"out of memory decoding a {w}x{h} image") from None
        except Exception as e:  # noqa: BLE001
            raise _Skip(f"truncated or corrupt image data ({_short(e)})") from None
    return rgb, alpha


def prepare_image(image: "Image.Image | bytes | str | os.PathLike", size: int = 128,
                  background: str = "white", max_pixels: int = DEFAULT_MAX_PIXELS, *,
                  rembg_session: Any = None) -> np.ndarray:
    """One image (PIL image, encoded bytes or a path) -> S x S x 3 uint8, exactly as ``prepare`` does it.
    For the app (a user's upload) and tests. ``rembg_session`` (from ``engines.data.background.make_session``)
    removes the background first, as ``prepare(..., remove_background=True)`` does. Raises DataError with
    the reason if it cannot be used."""
    size, background, max_pixels = _check_options(size, background, max_pixels)
    removal = None
    if rembg_session is not None:
        if background == "none":
            raise DataError("background removal needs background white or black, not 'none'")
        removal = _Removal({}, session=rembg_session)
    with _strict_truncation():
        try:
            if isinstance(image, Image.Image):
                w, h = image.size
                if w * h > max_pixels:
                    raise _Skip(f"too many pixels: {w}x{h} is over the limit of {max_pixels:,}")
                try:
                    image.load()  # an image from Image.open is lazy: decode it here, inside the try
                except Exception as e:  # noqa: BLE001
                    raise _Skip(f"truncated or corrupt image data ({_short(e)})") from None
                rgb, alpha = _rgb_alpha(image)
                if removal is not None:
                    alpha = removal.apply(rgb, alpha)
                return _to_square(rgb, alpha, size, background)
            if isinstance(image, (bytes, bytearray, memoryview)):
                return _decode_array(bytes(image), size, background, max_pixels, removal)
            return _decode_array(_read_path(Path(image)), size, background, max_pixels, removal)
        except _Skip as e:
            raise DataError(f"cannot use this image: {e}") from None


def _read_path(path: Path) -> bytes:
    """A regular file's bytes (links followed, FIFOs and devices refused), at most the file size limit."""
    try:
        with _open_regular(path) as f:
            data = _read_at_most(f, DEFAULT_MAX_FILE_BYTES)
    except _NotRegular as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({_short(e)})") from None
    if len(data) > DEFAULT_MAX_FILE_BYTES:
        raise DataError(f"{path}: {_too_big()}")
    return data


def read_picture(image: "bytes | str | os.PathLike", background: str = "white",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """One picture (encoded bytes or a path) -> H x W x 3 uint8 at its own size: the checks and decoding of
    ``prepare`` (file size, pixel count before decoding, truncated data, EXIF rotation, any mode) and its
    transparency flattened on ``background``, but no padding and no resizing (``pokelab upscale``). Raises
    DataError with the reason if it cannot be used."""
    _size, background, max_pixels = _check_options(MIN_SIZE, background, max_pixels)  # no size: any will do
    data = bytes(image) if isinstance(image, (bytes, bytearray, memoryview)) else _read_path(Path(image))
    with _strict_truncation():
        try:
            rgb, alpha = _decode_rgb_alpha(data, max_pixels)
        except _Skip as e:
            raise DataError(f"cannot use this image: {e}") from None
    arr = _flatten(rgb, alpha, background)
    # a writable array of its own (np.asarray of a PIL image is read-only; torch.from_numpy warns on those)
    return arr if arr.flags.writeable and arr.flags.c_contiguous else np.array(arr)


def find_pictures(paths: "list[str | os.PathLike]") -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
    """Pictures named on a command line (files or folders) -> ([(name, path)], [(name, reason)] skipped,
    count of non-image files ignored), in the order given, each folder in natural order. A folder is walked
    as ``prepare`` walks one (hidden files and __MACOSX ignored; a link to a regular file followed, a broken
    link, a link to a folder and special files skipped with the reason); its pictures are named relative to
    it. A file is named by its own name; one that is not a regular file is skipped. A name met twice keeps
    its first picture (the later one is skipped: both would be written to the same place)."""
    found: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    ignored = 0
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            recs = list(_FolderSource(p).walk())
            ignored += sum(r is None for r in recs)
            recs = sorted((r for r in recs if r is not None), key=lambda r: natural_key(r.name))
            items = [(r.name, r.ref, r.problem) for r in recs]
        else:
            problem = None
            try:
                st = os.stat(p)
                if not stat.S_ISREG(st.st_mode):
                    problem = f"{_kind(st.st_mode)}, not a regular file (not read)"
                elif st.st_size > DEFAULT_MAX_FILE_BYTES:
                    problem = _too_big(st.st_size)
            except OSError as e:
                problem = ("broken link (its target does not exist)" if os.path.islink(p) else
                           "no such file or folder" if isinstance(e, FileNotFoundError) else f"unreadable ({_short(e)})")
            items = [(p.name, None if problem else str(p), problem)]
        taken = {name for name, _ in found}
        for name, ref, problem in items:
            if problem or ref is None:
                skipped.append((name, problem or "not read"))
            elif name in taken:
                skipped.append((name, "another picture of the same name comes first (both would be written to "
                                      "the same file)"))
            else:
                found.append((name, str(ref)))
                taken.add(name)
    return found, skipped, ignored


# ---- sources: folder, zip, tar -------------------------------------------------------------------
def _archive_kind(path: Path) -> str | None:
    low = path.name.lower()
    if low.endswith(".zip"):
        return "zip"
    if any(low.endswith(s) for s in ARCHIVE_SUFFIXES):
        return "tar"
    # unusual names: look at the content
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    return None


def source_name(path: str | os.PathLike) -> str:
    """'…/dreamworld-256' -> 'dreamworld-256'; 'sprites.tar.gz' -> 'sprites'."""
    p = Path(path)
    name = p.name or p.resolve().name
    low = name.lower()
    for suf in ARCHIVE_SUFFIXES:
        if low.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return name or "data"


_DRIVE = re.compile(r"^[A-Za-z]:")


_READ = object()  # _screen_member: the member is a wanted picture with a safe name, go on and read it


def _screen_member(raw: str) -> tuple[str, object]:
    """An archive member's cleaned name and what walk() yields for it instead of reading it: a _Found for an
    unsafe name, None for a file that is not a picture, or _READ to go on (zips and tars alike)."""
    name, unsafe = _member_name(raw)
    if unsafe:
        return name, _Found(name, problem=unsafe, early=True)
    if not name or not _wanted(name):
        return name, None
    return name, _READ


def _member_name(raw: str) -> tuple[str, str | None]:
    """An archive member's name normalised ('./a//b.png' -> 'a/b.png', '\\' read as '/'), and why it is
    unsafe (else None). A name that is absolute ('/x.png', 'C:/x.png') or climbs out of the archive with
    '..' is never used: unpacking it would write outside the folder unpacked into, so the archive was made
    by mistake or to attack. It is reported under its name as it stands in the archive."""
    s = raw.replace("\\", "/")
    if s.startswith("/") or _DRIVE.match(s):
        return raw, "unsafe name in the archive: an absolute path (not used)"
    n = posixpath.normpath(s) if s else ""
    if n == ".." or n.startswith("../"):
        return raw, "unsafe name in the archive: it climbs out of the archive with '..' (not used)"
    return ("" if n in (".", "") else n), None


def _link_target(name: str, linkname: str, hard: bool) -> str | None:
    """The member an archive link named ``name`` points at: a symbolic link's target is relative to the
    link's folder, a tar hard link's to the archive's root. None when it points out of the archive."""
    t = linkname.replace("\\", "/")
    if not t or t.startswith("/") or _DRIVE.match(t):
        return None
    n = posixpath.normpath(t if hard else posixpath.join(posixpath.dirname(name), t))
    if n == ".." or n.startswith("../"):
        return None
    return n


def _wanted(name: str) -> bool:
    """Image files count; hidden files/folders (.DS_Store, ._x.png, .git) and __MACOSX are ignored."""
    parts = name.split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return posixpath.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS


@dataclass
class _Found:
    """One image file a scan found (name relative to SRC or the archive's root, common folder not yet
    dropped)."""
    name: str
    ref: Any = None                        # how to read it again; None when it is not read
    digest: str = "unreadable"             # sha256 of its bytes (a marker when it is not read)
    nbytes: int = 0
    dims: tuple[int, int] | None = None    # width, height from its header, when the scan saw it
    problem: str | None = None             # why it is skipped
    link: str | None = None                # a followed link: what it points at (for the report)
    link_outside: bool = False             # ... a path outside SRC (folders only), shown as it is
    target: str | None = None              # an archive link not resolved yet: the member it names
    early: bool = False                    # reported under its own name: unsafe names, folder links


def _link_found(name: str, linkname: str, hard: bool) -> _Found:
    dest = _link_target(name, linkname, hard)
    if dest is None:
        return _Found(name, problem=f"link out of the archive (-> {linkname}; not followed)")
    return _Found(name, target=dest)


class _Unreadable:
    """Stands in for a file that could not be opened: reading it raises why."""

    def __init__(self, error: BaseException):
        self.error = error

    def read(self, *_a: Any) -> bytes:
        raise self.error


class _Source:
    """``walk()`` yields a _Found for every image file (None for every other file, counted as ignored), in
    storage order; ``read(refs)`` yields (ref, stream) pairs in storage order for decoding."""

    kind = "?"

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        pass


class _FolderSource(_Source):
    """Only regular files are read. A link to a regular file is followed (wherever it points: the folder
    is the user's own) and noted; a link to anything else, a dangling link and a link to a folder are
    skipped with the reason (folders behind links are never walked: no loops, no surprise trees)."""

    kind = "folder"

    def walk(self) -> Iterator[_Found | None]:
        root = str(self.path)
        real_root = os.path.realpath(root)
        errors: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append, followlinks=False):
            yield from self._walk_errors(errors, root)
            keep = []
            for d in sorted(dirnames):
                if d.startswith(".") or d == "__MACOSX":
                    continue
                full = os.path.join(dirpath, d)
                if os.path.islink(full):
                    yield _Found(self._rel(full, root), early=True,
                                 problem="link to a folder (not followed; give the real folder, or copy "
                                         "the files in)")
                else:
                    keep.append(d)
            dirnames[:] = keep
            for fn in sorted(filenames):
                full = os.path.join(dirpath, fn)
                rel = self._rel(full, root)
                yield self._file(full, rel, real_root) if _wanted(rel) else None
        yield from self._walk_errors(errors, root)

    @staticmethod
    def _rel(full: str, root: str) -> str:
        return Path(os.path.relpath(full, root)).as_posix()

    def _walk_errors(self, errors: list[OSError], root: str) -> Iterator[_Found]:
        for e in errors:
            where = getattr(e, "filename", None)
            if where is None or os.path.abspath(where) == os.path.abspath(root):
                raise DataError(f"{root}: cannot read the folder ({_short(e)})")
            yield _Found(self._rel(where, root) + "/", early=True,
                         problem=f"folder cannot be read ({_short(e)}); its files are left out")
        errors.clear()

    def _file(self, full: str, rel: str, real_root: str) -> _Found:
        found = _Found(rel)
        try:
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                try:
                    st = os.stat(full)
                except OSError as e:
                    why = ("a loop of links" if e.errno == errno.ELOOP else
                           "its target does not exist" if isinstance(e, FileNotFoundError) else _short(e))
                    found.problem = f"broken link ({why})"
                    return found
                if not stat.S_ISREG(st.st_mode):
                    found.problem = f"link to {_kind(st.st_mode)}, not a regular file (not read)"
                    return found
                real = os.path.realpath(full)
                try:
                    inside = os.path.commonpath([real, real_root]) == real_root
                except ValueError:  # another drive
                    inside = False
                found.link = Path(os.path.relpath(real, real_root)).as_posix() if inside else real
                found.link_outside = not inside
            elif not stat.S_ISREG(st.st_mode):
                found.problem = f"not a regular file ({_kind(st.st_mode)}; not read)"
                return found
            if st.st_size > DEFAULT_MAX_FILE_BYTES:
                found.problem = _too_big(st.st_size)
                return found
            with _open_regular(full) as f:
                digest, n, head = _hash_limited(f, DEFAULT_MAX_FILE_BYTES)
        except _NotRegular as e:
            found.problem = f"not a regular file ({e}; not read)"
            return found
        except OSError as e:
            found.problem = f"unreadable ({_short(e)})"
            return found
        if digest is None:
            found.problem = _too_big()
            return found
        found.ref, found.digest, found.nbytes, found.dims = full, digest, n, _peek_dims(head)
        return found

    def read(self, refs: list[Any]) -> Iterator[tuple[Any, Any]]:
        for p in refs:
            try:
                f = _open_regular(p)
            except OSError as e:
                yield p, _Unreadable(e)
                continue
            with f:
                yield p, f


_ZIP_ERRORS = (OSError, RuntimeError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


class _ZipSource(_Source):
    kind = "zip"

    def __enter__(self):
        try:
            self.zf = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DataError(f"{self.path}: not a readable zip archive ({_short(e)})") from None
        return self

    def close(self) -> None:
        zf = getattr(self, "zf", None)
        if zf is not None:
            zf.close()

    def walk(self) -> Iterator[_Found | None]:
        for info in self.zf.infolist():
            if info.is_dir():
                continue
            name, verdict = _screen_member(info.filename)
            if verdict is not _READ:
                yield verdict
                continue
            # Unix zips keep the file's mode in the top 16 bits: links and special files are marked there
            mode = info.external_attr >> 16 if info.create_system == 3 else 0
            if stat.S_ISLNK(mode):
                try:
                    with self.zf.open(info) as f:
                        raw = _read_at_most(f, _MAX_LINK_BYTES)
                except _ZIP_ERRORS as e:
                    yield _Found(name, problem=f"unreadable link ({_short(e)})")
                    continue
                if len(raw) > _MAX_LINK_BYTES:
                    yield _Found(name, problem="link with an overlong target (not followed)")
                else:
                    yield _link_found(name, raw.decode("utf-8", "surrogateescape"), hard=False)
                continue
            if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                yield _Found(name, problem=f"not a regular file ({_kind(mode)} in the archive; not read)")
                continue
            if info.file_size > DEFAULT_MAX_FILE_BYTES:  # what the archive says, before reading
                yield _Found(name, problem=_too_big(info.file_size))
                continue
            try:
                with self.zf.open(info) as f:  # and what it really holds, while reading
                    digest, n, head = _hash_limited(f, DEFAULT_MAX_FILE_BYTES)
            except _ZIP_ERRORS as e:  # RuntimeError: an encrypted entry
                yield _Found(name, problem=f"unreadable ({_short(e)})")
                continue
            if digest is None:
                yield _Found(name, problem=_too_big())
                continue
            yield _Found(name, ref=info, digest=digest, nbytes=n, dims=_peek_dims(head))

    def read(self, refs):
        for info in refs:
            try:
                f = self.zf.open(info)
            except _ZIP_ERRORS as e:
                yield info, _Unreadable(e)
                continue
            with f:
                yield info, f


_TAR_KINDS = {tarfile.FIFOTYPE: "a FIFO (named pipe)", tarfile.CHRTYPE: "a character device",
              tarfile.BLKTYPE: "a block device"}


class _TarSource(_Source):
    """Read in stream mode ('r|*'): never seeks, so a .tar.gz is decompressed once per pass."""

    kind = "tar"

    def _members(self) -> Iterator[tuple[int, tarfile.TarInfo, tarfile.TarFile]]:
        try:
            with tarfile.open(self.path, mode="r|*") as tf:
                for i, m in enumerate(tf):
                    yield i, m, tf
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DataError(f"{self.path}: the tar archive is truncated or corrupt ({_short(e)})") from None

    def walk(self) -> Iterator[_Found | None]:
        for i, m, tf in self._members():
            if m.isdir():
                continue
            name, verdict = _screen_member(m.name)
            if verdict is not _READ:
                yield verdict
                continue
            if m.issym() or m.islnk():
                yield _link_found(name, m.linkname, hard=m.islnk())
                continue
            if not m.isfile():
                kind = _TAR_KINDS.get(m.type, "a special member")
                yield _Found(name, problem=f"not a regular file ({kind} in the archive; not read)")
                continue
            if m.size > DEFAULT_MAX_FILE_BYTES:
                yield _Found(name, problem=_too_big(m.size))
                continue
            try:
                digest, n, head = _hash_limited(tf.extractfile(m), DEFAULT_MAX_FILE_BYTES)
            except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
                raise DataError(f"{self.path}: the tar archive is truncated or corrupt ({_short(e)})") from None
            if digest is None:
                yield _Found(name, problem=_too_big())
                continue
            yield _Found(name, ref=("file", i), digest=digest, nbytes=n, dims=_peek_dims(head))

    def read(self, refs):
        want = {r[1] for r in refs if r[0] == "file"}
        if not want:
            return
        for i, m, tf in self._members():
            if i in want:
                f = tf.extractfile(m)
                yield ("file", i), f
                want.discard(i)
                if not want:
                    break


def _open_source(path: Path) -> _Source:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _FolderSource(path)
    if not path.is_file():  # a FIFO, a device ...: never opened
        raise DataError(f"{path}: not a folder, zip or tar archive")
    kind = _archive_kind(path)
    if kind == "zip":
        return _ZipSource(path)
    if kind == "tar":
        return _TarSource(path)
    raise DataError(f"{path}: not a folder of images, a .zip or a .tar/.tar.gz/.tgz archive")


# ---- scanning and hashing -------------------------------------------------------------------------
class _Entry(NamedTuple):
    ref: Any                              # None: skipped before decoding
    digest: str
    nbytes: int
    dims: tuple[int, int] | None = None


@dataclass
class _Scan:
    entries: dict[str, _Entry] = field(default_factory=dict)           # name -> entry
    skipped: list[tuple[str, str]] = field(default_factory=list)       # found but unusable pre-decode
    early: list[tuple[str, str]] = field(default_factory=list)         # ... outside the names (unsafe ...)
    links: list[tuple[str, str]] = field(default_factory=list)         # followed links: (name, target)
    ignored: int = 0
    key: str = ""


def _common_prefix(names: list[str]) -> str:
    """Strip folders every file sits under ('pokemon/1.png' -> '1.png'), so a zip made of the folder
    itself and the folder's own contents give the same names, and so the same key."""
    prefix = ""
    rest = list(names)
    while rest and all("/" in n for n in rest):
        first = {n.split("/", 1)[0] for n in rest}
        if len(first) != 1:
            break
        top = first.pop()
        prefix += top + "/"
        rest = [n.split("/", 1)[1] for n in rest]
    return prefix


def _resolve_links(found: list[_Found]) -> None:
    """Archive links: one that ends at a regular image member is read as that member (unpacking gives a
    copy too) and noted; one that ends nowhere, at a member that is skipped, or goes round in a loop is
    skipped with the reason. Links out of the archive were refused already."""
    by_name = {f.name: f for f in found if not f.early}  # a name held twice: the later copy, as unpacked
    for f in found:
        if f.target is None or f.problem:
            continue
        t, hops = f.target, 0
        while True:
            dest = by_name.get(t)
            if dest is None:
                f.problem = f"broken link (-> {t}: no such image file in the archive)"
            elif dest.target is not None and not dest.problem:  # a link to a link
                hops += 1
                if hops <= _MAX_LINK_HOPS:
                    t = dest.target
                    continue
                f.problem = f"too many levels of links (more than {_MAX_LINK_HOPS}; a loop?)"
            elif dest.problem or dest.ref is None:
                f.problem = f"link to {t}, which is skipped ({dest.problem or 'not read'})"
            else:
                f.ref, f.digest, f.nbytes, f.dims, f.link = dest.ref, dest.digest, dest.nbytes, dest.dims, t
            break


def _scan(source: _Source, size: int, background: str, max_pixels: int, progress: bool,
          removal: _Removal | None = None) -> _Scan:
    from tqdm.auto import tqdm

    found: list[_Found] = []
    ignored = 0
    bar = tqdm(desc=f"hashing {_printable(source.path.name)}", unit="file", disable=not progress, leave=False)
    try:
        for rec in source.walk():
            if rec is None:
                ignored += 1
                continue
            found.append(rec)
            bar.update(1)
    finally:
        bar.close()
    _resolve_links(found)

    scan = _Scan(ignored=ignored)
    named = [f for f in found if not f.early]
    prefix = _common_prefix([f.name for f in named])

    def strip(n: str) -> str:
        return n[len(prefix):] if prefix and n.startswith(prefix) else n

    links: dict[str, str] = {}
    for f in named:
        name = strip(f.name)
        if f.problem:
            scan.skipped.append((name, f.problem))
        if name in scan.entries:
            # archives may hold a name twice; like extraction, the later copy wins
            scan.skipped.append((name, "duplicate entry in the archive (the later copy was used)"))
            links.pop(name, None)
        scan.entries[name] = _Entry(None if f.problem else f.ref, f.digest, f.nbytes, f.dims)
        if f.link is not None and not f.problem:
            links[name] = f.link if f.link_outside else strip(f.link)
    scan.early = [(f.name, f.problem or "") for f in found if f.early]
    scan.skipped += scan.early
    scan.links = sorted(links.items(), key=lambda kv: natural_key(kv[0]))
    scan.key = _make_key(scan.entries, size, background, max_pixels,
                         _removal_key(removal.model) if removal is not None else None, scan.early)
    return scan


def _name_bytes(name: str) -> bytes:
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


def _make_key(entries: dict[str, _Entry], size: int, background: str, max_pixels: int,
              removal: str | None = None, early: list[tuple[str, str]] | tuple = ()) -> str:
    """sha256 over the pipeline version, the options and every (name, sha256 of bytes) in sorted order.
    Hashing per-file digests lets archives be hashed in storage order in one streaming pass. The removal
    line is only there when it is on, and the lines of members reported under their own names (unsafe
    archive names, links to folders) only when there are some, so the keys of other sets did not change."""
    h = hashlib.sha256()
    h.update(f"{PIPELINE_VERSION}\nsize={size}\nbackground={background}\nmax_pixels={max_pixels}\n".encode())
    if removal is not None:
        h.update(f"remove_background={removal}\n".encode())
    for name in sorted(entries):
        h.update(_name_bytes(name) + b"\0" + entries[name][1].encode() + b"\n")
    for name, reason in sorted(early):
        h.update(b"skipped\0" + _name_bytes(name) + b"\0" + _name_bytes(reason) + b"\n")
    return h.hexdigest()[:16]


def _budget_error(src: Path, lead: str, total: int, budget: int, detail: str = "") -> DataError:
    detail = f"{detail}; " if detail else ""
    return DataError(f"{src}: {lead} {total:,} pixels, over the pixel budget of {budget:,} for one set ({detail}a "
                     f"guard against decompression bombs). If the pictures really are that big, raise it: "
                     f"`pokelab data prepare SRC OUT --max-total-pixels N`, then train on OUT")


def _check_budget(src: Path, scan: _Scan, max_pixels: int, max_total_pixels: int) -> None:
    """Before decoding: the pixels the headers announce (pictures over the per-picture limit are skipped
    anyway and do not count) against the budget for the whole set."""
    sizes = [(n, e.dims) for n, e in scan.entries.items()
             if e.ref is not None and e.dims and e.dims[0] * e.dims[1] <= max_pixels]
    total = sum(w * h for _n, (w, h) in sizes)
    if total > max_total_pixels:
        sizes.sort(key=lambda s: (-s[1][0] * s[1][1], natural_key(s[0])))
        largest = ", ".join(f"{n} ({w}x{h})" for n, (w, h) in sizes[:5])
        more = f" and {len(sizes) - 5} more" if len(sizes) > 5 else ""
        raise _budget_error(src, f"its {len(sizes)} picture(s) would decode to", total, max_total_pixels,
                            f"largest: {largest}{more}")


def _decode_all(source: _Source, scan: _Scan, size: int, background: str, max_pixels: int,
                progress: bool, removal: _Removal | None = None,
                max_total_pixels: int = DEFAULT_MAX_TOTAL_PIXELS
                ) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    skipped = list(scan.skipped)
    todo: dict[Any, tuple[Any, list[str]]] = {}  # one read per file; a followed archive link shares it
    for name, entry in scan.entries.items():
        if entry.ref is not None:
            todo.setdefault(_ref_id(entry.ref), (entry.ref, []))[1].append(name)
    refs = _storage_order(source, [ref for ref, _names in todo.values()])
    decoded: dict[str, np.ndarray] = {}
    total = 0
    in_flight = {"pixels": 0, "bytes": 0}

    def work(names: list[str], data: bytes) -> tuple[list[str], np.ndarray | None, str]:
        try:
            return names, _decode_array(data, size, background, max_pixels, removal), ""
        except _Skip as e:
            return names, None, str(e)

    def collect(job) -> None:
        fut, pixels, nbytes = job
        names, arr, reason = fut.result()
        in_flight["pixels"] -= pixels
        in_flight["bytes"] -= nbytes
        for name in names:
            if arr is None:
                skipped.append((name, reason))
            else:
                decoded[name] = arr
            bar.update(1)

    def skip(names: list[str], reason: str) -> None:
        for name in names:
            skipped.append((name, reason))
            bar.update(1)

    # Reading stays sequential (archives are streams); decoding runs in threads because PIL's decoders
    # and resize release the GIL. A bounded window keeps memory flat on big sets: a few jobs per thread,
    # and at most _IN_FLIGHT_PIXELS decoded pixels and _IN_FLIGHT_BYTES file bytes at once (one bigger
    # picture goes alone), so a set of huge pictures is decoded one at a time instead of all together.
    # rembg predictions are serialised by engines.data.background (one at a time; onnxruntime uses all cores).
    workers = max(1, min(8, os.cpu_count() or 1))
    window: list = []
    with _strict_truncation(), \
            tqdm(total=sum(len(n) for _r, n in todo.values()), desc=f"preparing {_printable(source.path.name)}",
                 unit="img", disable=not progress) as bar, \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pokelab-data") as pool:
        for ref, f in source.read(refs):
            names = todo[_ref_id(ref)][1]
            try:
                data = _read_at_most(f, DEFAULT_MAX_FILE_BYTES)
            except _NotRegular as e:
                skip(names, f"not a regular file ({e}; not read)")
                continue
            except (OSError, RuntimeError, zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as e:
                skip(names, f"unreadable ({_short(e)})")
                continue
            if len(data) > DEFAULT_MAX_FILE_BYTES:
                skip(names, _too_big())
                continue
            if hashlib.sha256(data).hexdigest() != scan.entries[names[0]].digest:
                raise DataError(f"{source.path}: {names[0]} changed while it was being prepared; run again")
            dims = scan.entries[names[0]].dims or _peek_dims(data)
            pixels = dims[0] * dims[1] if dims and dims[0] * dims[1] <= max_pixels else 0
            total += pixels * len(names)
            if total > max_total_pixels:  # a header the scan could not see (see _check_budget)
                raise _budget_error(source.path, f"decoding {names[0]} ({dims[0]}x{dims[1]}) brings the total to",
                                    total, max_total_pixels)
            while window and (len(window) >= 4 * workers
                              or in_flight["pixels"] + pixels > _IN_FLIGHT_PIXELS
                              or in_flight["bytes"] + len(data) > _IN_FLIGHT_BYTES):
                collect(window.pop(0))
            in_flight["pixels"] += pixels
            in_flight["bytes"] += len(data)
            window.append((pool.submit(work, names, data), pixels, len(data)))
        for job in window:
            collect(job)
    files = sorted(decoded, key=natural_key)
    skipped.sort(key=lambda s: natural_key(s[0]))
    images = np.empty((len(files), 3, size, size), np.uint8)
    for i, name in enumerate(files):
        images[i] = decoded[name].transpose(2, 0, 1)
    return images, files, skipped


def _ref_id(ref: Any) -> Any:
    return str(ref) if isinstance(ref, (Path, str)) else (ref.filename, ref.header_offset) \
        if isinstance(ref, zipfile.ZipInfo) else ref


def _storage_order(source: _Source, refs: list[Any]) -> list[Any]:
    if isinstance(source, _ZipSource):
        return sorted(refs, key=lambda r: r.header_offset)
    if isinstance(source, _TarSource):
        return sorted(refs, key=lambda r: r[1])
    return sorted(refs, key=lambda r: str(r))


# ---- on-disk form: OUT/dataset.json + OUT/images.npy ---------------------------------------------
def _pixels_digest(arr: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(arr)).cast("B")).hexdigest()


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    """Streams the array into the atomic temp file (a large set would otherwise sit twice in memory)."""
    with atomic_writer(path) as f:
        np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


def _write_prepared(folder: Path, ds: PreparedDataset, images: np.ndarray, raw_source: str,
                    cache_entry: bool = False) -> None:
    meta_path = folder / "dataset.json"
    if not cache_entry and _foreign_json(meta_path):
        raise DataError(f"{folder}: holds a dataset.json that pokelab did not write; choose another OUT folder")
    folder.mkdir(parents=True, exist_ok=True)
    # pixels first, metadata last: the JSON records the pixel checksum, so a crash between the two
    # leaves an entry that is detected as damaged, never a silently mismatched one
    _atomic_save_npy(folder / "images.npy", images)
    atomic_write_json(meta_path, {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pipeline_version": PIPELINE_VERSION,
        "key": ds.key,
        "name": ds.name,
        "size": ds.size,
        "background": ds.background,
        "count": len(ds.files),
        "shape": list(images.shape),
        "dtype": "uint8",
        "pixels_sha256": _pixels_digest(images),
        "source": raw_source,
        "files": ds.files,
        "skipped": [list(s) for s in ds.skipped],
        "ignored": ds.ignored,
        "background_removal": ds.background_removal,
        "links": [list(link) for link in ds.links],
    })


def _foreign_json(meta_path: Path) -> bool:
    """A readable JSON file without our format marker is someone else's: never overwrite it. (A damaged,
    unparseable one is treated as ours, so re-preparing repairs it.)"""
    try:
        meta = _read_json(meta_path)
    except (OSError, ValueError):  # missing, unparseable or not a regular file
        return False
    return not (isinstance(meta, dict) and meta.get("format") == FORMAT)


def _looks_prepared(folder: Path) -> bool:
    try:
        meta = _read_json(folder / "dataset.json")
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def is_prepared(path: str | os.PathLike) -> bool:
    """True for a folder written by ``prepare`` (it has a pokelab dataset.json)."""
    p = Path(path)
    return p.is_dir() and _looks_prepared(p)


def _read_prepared(folder: Path, verify: bool = True) -> tuple[PreparedDataset, dict[str, Any]]:
    import torch

    meta_path = folder / "dataset.json"
    try:
        meta = _read_json(meta_path)
    except FileNotFoundError:
        raise _Corrupt(f"{folder}: dataset.json is missing") from None
    except (OSError, ValueError) as e:
        raise _Corrupt(f"{folder}: dataset.json is unreadable ({_short(e)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _Corrupt(f"{folder}: dataset.json was not written by pokelab data prepare")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise DataError(f"{folder}: prepared by a newer pokelab (format {meta.get('format_version')}); update")
    try:
        size, count = int(meta["size"]), int(meta["count"])
        files = [str(f) for f in meta["files"]]
        skipped = [(str(a), str(b)) for a, b in meta.get("skipped", [])]
        key, background = str(meta["key"]), str(meta["background"])
        removal = meta.get("background_removal")
        if removal is not None and not isinstance(removal, dict):
            raise TypeError("background_removal is not an object")
        links = [(str(a), str(b)) for a, b in meta.get("links") or []]
    except (KeyError, TypeError, ValueError) as e:
        raise _Corrupt(f"{folder}: dataset.json lacks a field or has a wrong one ({_short(e)})") from None
    try:
        # allow_pickle=False: an object array (which would need unpickling) is refused, not loaded
        with _open_regular(folder / "images.npy") as f:
            arr = np.load(f, allow_pickle=False)
    except FileNotFoundError:
        raise _Corrupt(f"{folder}: images.npy is missing") from None
    except _NotRegular as e:
        raise _Corrupt(f"{folder}: images.npy is {e}") from None
    except (OSError, ValueError, EOFError) as e:
        raise _Corrupt(f"{folder}: images.npy is damaged ({_short(e)})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.shape != (count, 3, size, size) \
            or len(files) != count:
        raise _Corrupt(f"{folder}: images.npy holds {getattr(arr, 'dtype', '?')} "
                       f"{tuple(getattr(arr, 'shape', ()))}, dataset.json says uint8 {(count, 3, size, size)}")
    if verify and meta.get("pixels_sha256") != _pixels_digest(arr):
        raise _Corrupt(f"{folder}: images.npy does not match its checksum (damaged or half-written)")
    images = torch.from_numpy(np.ascontiguousarray(arr))
    ds = PreparedDataset(images=images, key=key, name=str(meta.get("name") or folder.name), size=size,
                         background=background, files=files, skipped=skipped,
                         source=str(folder.resolve()), ignored=int(meta.get("ignored", 0) or 0),
                         location=str(folder.resolve()), background_removal=removal, links=links)
    return ds, meta


# ---- public API -----------------------------------------------------------------------------------
def _build(source: _Source, scan: _Scan, size: int, background: str, max_pixels: int,
           progress: bool, src: Path, removal: _Removal | None = None,
           max_total_pixels: int = DEFAULT_MAX_TOTAL_PIXELS) -> tuple[PreparedDataset, np.ndarray]:
    import torch

    if not scan.entries:
        what = f"; {scan.ignored} other file(s) were ignored" if scan.ignored else ""
        unsafe = f"; {len(scan.early)} skipped: {scan.early[0][0]}: {scan.early[0][1]}" if scan.early else ""
        raise DataError(f"{src}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}{what}"
                        f"{unsafe})")
    _check_budget(src, scan, max_pixels, max_total_pixels)
    if removal is not None:
        removal.start()
    images, files, skipped = _decode_all(source, scan, size, background, max_pixels, progress, removal,
                                         max_total_pixels)
    if not files:
        first = "; ".join(f"{n}: {r}" for n, r in skipped[:3])
        raise DataError(f"{src}: none of the {len(scan.entries)} image file(s) could be used ({first}"
                        f"{' ...' if len(skipped) > 3 else ''})")
    ds = PreparedDataset(images=torch.from_numpy(images), key=scan.key, name=source_name(src), size=size,
                         background=background, files=files, skipped=skipped, source=str(src.resolve()),
                         ignored=scan.ignored, background_removal=removal.record() if removal else None,
                         links=list(scan.links))
    return ds, images


def prepare(src: str | os.PathLike, out: str | os.PathLike | None = None, size: int = 128,
            background: str = "white", progress: bool = True, *, max_pixels: int = DEFAULT_MAX_PIXELS,
            force: bool = False, remove_background: bool = False, rembg_model: str = bgremoval.DEFAULT_MODEL,
            rembg_model_path: str | os.PathLike | None = None,
            max_total_pixels: int = DEFAULT_MAX_TOTAL_PIXELS) -> PreparedDataset:
    """Prepare SRC (folder, .zip, .tar[.gz]) at ``size`` px on ``background``. With ``out`` the result
    is written there (atomically); an ``out`` already holding the same content key is reused unless
    ``force``. ``remove_background``: rembg cuts each subject out first (``rembg_model`` by name, or a
    local U2Net-style ONNX file ``rembg_model_path``); pictures with their own transparency keep it.
    ``max_pixels`` limits one picture, ``max_total_pixels`` the whole set (docs/data.md, "Limits").
    Raises DataError when nothing usable is found."""
    size, background, max_pixels = _check_options(size, background, max_pixels, max_total_pixels)
    removal = _removal_options(remove_background, rembg_model, rembg_model_path, background)
    src_p = Path(src).expanduser()
    if is_prepared(src_p):
        raise DataError(f"{src_p} is already a prepared dataset; give the original images (its source was "
                        f"{_recorded_source(src_p) or 'not recorded'})")
    out_p = Path(out).expanduser() if out is not None else None
    if out_p is not None and out_p.exists() and not out_p.is_dir():
        raise DataError(f"{out_p}: OUT must be a folder, not a file")
    with _open_source(src_p) as source:
        scan = _scan(source, size, background, max_pixels, progress, removal)
        if out_p is not None and not force and is_prepared(out_p):
            try:
                ds, _meta = _read_prepared(out_p)
            except DataError:
                pass  # damaged: rebuild it below
            else:
                if ds.key == scan.key:
                    ds.name, ds.source, ds.links = source_name(src_p), str(src_p.resolve()), list(scan.links)
                    return ds
        ds, images = _build(source, scan, size, background, max_pixels, progress, src_p, removal,
                            max_total_pixels)
    if out_p is not None:
        try:
            _write_prepared(out_p, ds, images, ds.source)
        except OSError as e:  # disk full, read-only folder ...: the previous contents of OUT are intact
            raise DataError(f"cannot write the prepared dataset to {out_p} ({_short(e)})") from None
        ds.location = str(out_p.resolve())
    return ds


def _recorded_source(folder: Path) -> str | None:
    try:
        return _read_json(folder / "dataset.json").get("source")
    except (OSError, ValueError, AttributeError):
        return None


def load_dataset(path: str | os.PathLike, size: int = 128, background: str = "white",
                 cache_dir: str | os.PathLike | None = None, progress: bool = True, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS, remove_background: bool | None = None,
                 rembg_model: str = bgremoval.DEFAULT_MODEL,
                 rembg_model_path: str | os.PathLike | None = None,
                 max_total_pixels: int = DEFAULT_MAX_TOTAL_PIXELS) -> PreparedDataset:
    """A prepared folder, or a raw folder / zip / tar prepared into the cache
    (``cache_dir`` or $POKELAB_CACHE or ~/.cache/pokelab, entry ``datasets/<key>``).

    A prepared folder made at another size/background is re-prepared from the source it records (into
    the cache; the folder is left alone); if that source is gone, DataError says what to run.
    ``remove_background`` None (default): a prepared folder is taken with or without background removal,
    as it was made (and keeps it when re-prepared at another size); a raw source gets none. True/False
    asks for it (with ``rembg_model`` / ``rembg_model_path``, as in ``prepare``); a prepared folder made
    otherwise is re-prepared from its source. ``max_pixels`` / ``max_total_pixels``: as in ``prepare``."""
    size, background, max_pixels = _check_options(size, background, max_pixels, max_total_pixels)
    removal = _removal_options(remove_background, rembg_model, rembg_model_path, background)
    p = Path(path).expanduser()
    if p.is_file() and p.name == "dataset.json":
        p = p.parent
    if is_prepared(p):
        try:
            ds, meta = _read_prepared(p)
        except _Corrupt as e:
            raise DataError(f"{e}; prepare it again with `pokelab data prepare SRC {p} --force`") from None
        have = ds.background_removal
        if remove_background is None:
            same_removal = True
        elif removal is None:
            same_removal = not have
        else:
            same_removal = bool(have) and _removal_key(have) == _removal_key(removal.model)
        if ds.size == size and ds.background == background and same_removal:
            return ds
        if remove_background is None and have:  # re-prepared at another size: keep the folder's removal
            want = {"remove_background": True, "rembg_model": have.get("model") or bgremoval.DEFAULT_MODEL,
                    "rembg_model_path": have.get("model_path")}
        else:
            want = {"remove_background": removal is not None, "rembg_model": rembg_model,
                    "rembg_model_path": rembg_model_path}
        wants = have if remove_background is None else removal.model if removal else None
        now, then = _removal_note(have, wants), _removal_note(wants, have)
        recorded = meta.get("source")
        if recorded and Path(recorded).exists() and not is_prepared(Path(recorded)):
            if progress:
                print(_printable(f"note: {p} holds {ds.size} px images on {ds.background}{now}; preparing "
                                 f"{size} px on {background}{then} from its source {recorded}"), file=sys.stderr)
            return load_dataset(recorded, size, background, cache_dir, progress, max_pixels=max_pixels,
                                max_total_pixels=max_total_pixels, **want)
        flag = " --remove-background" if want["remove_background"] else ""
        raise DataError(f"{p} was prepared at {ds.size} px on {ds.background}{now} but {size} px on "
                        f"{background}{then} is needed, and its source ({recorded or 'not recorded'}) is not "
                        f"available; run `pokelab data prepare SRC OUT --size {size} --background "
                        f"{background}{flag}`")
    if p.is_dir() and (p / "dataset.json").exists() and (p / "images.npy").exists():
        raise DataError(f"{p}: dataset.json was not written by pokelab data prepare")

    with _open_source(p) as source:
        scan = _scan(source, size, background, max_pixels, progress, removal)
        entry = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        entry = entry / "datasets" / scan.key
        if entry.exists():
            try:
                ds, _meta = _read_prepared(entry)
                if ds.key != scan.key:
                    raise _Corrupt(f"{entry}: holds key {ds.key}")
            except DataError as e:
                print(_printable(f"note: rebuilding a damaged cache entry ({e})"), file=sys.stderr)
            else:
                ds.name, ds.source, ds.links = source_name(p), str(p.resolve()), list(scan.links)
                return ds
        ds, images = _build(source, scan, size, background, max_pixels, progress, p, removal,
                            max_total_pixels)
    try:
        _write_prepared(entry, ds, images, ds.source, cache_entry=True)
        ds.location = str(entry.resolve())
    except (OSError, DataError) as e:  # a read-only or full cache must not stop training
        print(_printable(f"warning: could not write the dataset cache at {entry} ({_short(e)}); continuing "
                         f"without it"), file=sys.stderr)
    return ds


# ---- report and CLI -------------------------------------------------------------------------------
def format_report(ds: PreparedDataset, out: str | os.PathLike | None = None, reused: bool = False) -> str:
    where = f" -> {out}" if out is not None else ""
    lines = [f"{'up to date' if reused else 'prepared'}: {len(ds)} image(s) from {ds.source}{where}",
             f"  name {ds.name}, {ds.size}x{ds.size} px, background {ds.background}, key {ds.key}"]
    rec = ds.background_removal
    if rec:
        lines.append(f"  {_removal_text(rec)}: {rec.get('removed', 0)} image(s) cut out, "
                     f"{rec.get('kept_alpha', 0)} kept their own transparency")
    if ds.ignored:
        lines.append(f"  ignored {ds.ignored} non-image file(s)")
    links = list(getattr(ds, "links", None) or [])
    if links:
        lines.append(f"  followed {len(links)} link(s) (each read as the file it points to):")
        lines += [f"    {name} -> {target}" for name, target in links[:_REPORT_LINKS]]
        if len(links) > _REPORT_LINKS:
            lines.append(f"    ... and {len(links) - _REPORT_LINKS} more (all are listed in dataset.json)")
    if ds.skipped:
        lines.append(f"  skipped {len(ds.skipped)} file(s):")
        lines += [f"    {name}: {reason}" for name, reason in ds.skipped]
    else:
        lines.append("  skipped 0 files")
    # names come from the files: a newline, ESC or bidi override in one must not forge or hide lines
    return "\n".join(_printable(line) for line in lines)


_REPORT_LINKS = 10


def _cmd_prepare(args: argparse.Namespace) -> int:
    try:
        out = Path(args.out)
        before = _read_key(out)
        if not args.remove_background and (args.rembg_model or args.rembg_model_path):
            raise DataError("--rembg-model and --rembg-model-path only apply with --remove-background")
        ds = prepare(args.src, out, size=args.size, background=args.background, progress=args.progress,
                     max_pixels=args.max_pixels, force=args.force, remove_background=args.remove_background,
                     rembg_model=args.rembg_model or bgremoval.DEFAULT_MODEL,
                     rembg_model_path=args.rembg_model_path, max_total_pixels=args.max_total_pixels)
    except DataError as e:
        print(f"pokelab data prepare: error: {_printable(e)}", file=sys.stderr)
        return 2
    print(format_report(ds, args.out, reused=(before == ds.key and not args.force)))
    return 0


def _read_key(folder: Path) -> str | None:
    try:
        return _read_json(folder / "dataset.json").get("key")
    except (OSError, ValueError, AttributeError):
        return None


def _cmd_info(args: argparse.Namespace) -> int:
    p = Path(args.path)
    if not is_prepared(p):
        print(_printable(f"pokelab data info: error: {p} is not a prepared dataset (no pokelab dataset.json)"),
              file=sys.stderr)
        return 2
    try:
        ds, meta = _read_prepared(p)
    except DataError as e:
        print(f"pokelab data info: error: {_printable(e)}", file=sys.stderr)
        return 2
    ds.source = str(meta.get("source") or ds.source)
    print(format_report(ds, p))
    return 0


def add_data_commands(subparsers):
    """``pokelab data prepare|info`` on the CLI's sub-command parsers; returns the ``data`` action parsers, where
    the CLI adds ``fetch`` (engines.data.fetch builds on this module, so this module never imports it)."""
    d = subparsers.add_parser("data", help="prepare an image set, or fetch the public Pokémon images",
                              description="Prepare image sets for training (docs/data.md).")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")

    def _help(_args) -> int:
        d.print_help(sys.stderr)
        return 2

    d.set_defaults(func=_help)

    p = dsub.add_parser(
        "prepare", help="folder/zip/tar of images -> one uint8 tensor (OUT/images.npy + dataset.json)",
        description="Read SRC (a folder, searched recursively, a .zip or a .tar/.tar.gz/.tgz), skip unreadable "
                    "files with a reason, flatten transparency on the background, pad to a square (never "
                    "crop) and resize with Lanczos. Writes OUT/images.npy and OUT/dataset.json.")
    p.add_argument("src", help="folder, .zip or .tar/.tar.gz/.tgz of images")
    p.add_argument("out", help="folder to write the prepared dataset to")
    p.add_argument("--size", type=int, default=128, help="side of the square output images (default 128)")
    p.add_argument("--background", choices=BACKGROUNDS, default="white",
                   help="colour transparency is flattened on and the padding colour (default white; "
                        "'none' keeps the colour under transparent pixels and pads with black)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"skip images with more pixels than this (default {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--max-total-pixels", type=int, default=DEFAULT_MAX_TOTAL_PIXELS,
                   help=f"refuse a set whose pictures decode to more pixels than this in all "
                        f"(default {DEFAULT_MAX_TOTAL_PIXELS:,}; a guard against decompression bombs)")
    p.add_argument("--remove-background", action="store_true",
                   help="cut each subject out with rembg first, so it lands on --background; pictures that "
                        "already have transparency keep their own (needs pokelab[translate])")
    p.add_argument("--rembg-model", metavar="NAME", default=None,
                   help=f"rembg model for --remove-background (default {bgremoval.DEFAULT_MODEL}; "
                        f"rembg downloads it on first use)")
    p.add_argument("--rembg-model-path", metavar="FILE.onnx", default=None,
                   help="a local U2Net-style ONNX model file instead (run as rembg's u2net_custom; offline)")
    p.add_argument("--force", action="store_true", help="re-prepare even if OUT is up to date")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.set_defaults(func=_cmd_prepare)

    i = dsub.add_parser("info", help="show a prepared dataset's report")
    i.add_argument("path", help="prepared dataset folder")
    i.set_defaults(func=_cmd_info)
    return dsub
