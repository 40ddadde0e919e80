"""Image sets in, one uint8 tensor out (docs/data.md).

``prepare(src, out)`` reads a folder (recursively), a .zip or a .tar(.gz/.bz2/.xz), skips what cannot be
read (with a reason), flattens transparency on a background, pads the art to a square (never crops it),
resizes with Lanczos and stores the result as ``OUT/images.npy`` (uint8 [N, 3, S, S]) + ``OUT/dataset.json``.
``load_dataset(path)`` takes a prepared folder or a raw source; raw sources are prepared into a cache
keyed by a content hash, so the second load only hashes bytes and never decodes an image again.
With ``remove_background=True`` rembg (engines.background) cuts each subject out before flattening.

Nothing here unpickles: the metadata is JSON and the pixels are read with ``allow_pickle=False``.
torch is imported lazily so that building the CLI parser stays fast.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import posixpath
import re
import sys
import tarfile
import tempfile
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import background as bgremoval
from .runs import atomic_write_json, atomic_writer

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

DEFAULT_MAX_PIXELS = 40_000_000            # ~6300 x 6300; larger headers are treated as decompression bombs
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024
MIN_SIZE, MAX_SIZE = 2, 4096
_CHUNK = 1 << 20


class DataError(ValueError):
    """The images cannot be turned into a dataset (nothing usable, bad options, damaged archive ...)."""


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

    def __len__(self) -> int:
        return int(self.images.shape[0])


# ---- options ----------------------------------------------------------------------------------
def _check_options(size: Any, background: Any, max_pixels: Any = DEFAULT_MAX_PIXELS) -> tuple[int, str, int]:
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
        # P with transparency goes through RGBA so the transparent index becomes alpha 0.
        conv = im.convert("RGBA" if has_alpha else "RGB")
    except (ValueError, OSError) as e:
        raise _Skip(f"unsupported image mode {mode} ({_short(e)})") from None
    arr = np.asarray(conv, dtype=np.uint8)
    if has_alpha:
        return arr[:, :, :3], arr[:, :, 3]
    return arr, None


def _to_square(rgb: np.ndarray, alpha: np.ndarray | None, size: int, background: str) -> np.ndarray:
    bg = _BG_VALUE[background]
    if alpha is not None and background != "none":
        # Flatten before resizing: resizing first would blend the colour hidden under transparent
        # pixels into the edges (dark or coloured halos).
        a = alpha.astype(np.uint16)[:, :, None]
        rgb = ((rgb.astype(np.uint16) * a + bg * (255 - a) + 127) // 255).astype(np.uint8)
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
            im.load()
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
    if removal is not None:  # before flattening, so the cut-out lands on the background colour
        alpha = removal.apply(rgb, alpha)
    return _to_square(rgb, alpha, size, background)


def prepare_image(image: "Image.Image | bytes | str | os.PathLike", size: int = 128,
                  background: str = "white", max_pixels: int = DEFAULT_MAX_PIXELS, *,
                  rembg_session: Any = None) -> np.ndarray:
    """One image (PIL image, encoded bytes or a path) -> S x S x 3 uint8, exactly as ``prepare`` does it.
    For the app (a user's upload) and tests. ``rembg_session`` (from ``engines.background.make_session``)
    removes the background first, as ``prepare(..., remove_background=True)`` does. Raises DataError with
    the reason if it cannot be used."""
    size, background, max_pixels = _check_options(size, background, max_pixels)
    removal = None
    if rembg_session is not None:
        if background == "none":
            raise DataError("background removal needs background white or black, not 'none'")
        removal = _Removal({}, session=rembg_session)
    try:
        if isinstance(image, Image.Image):
            w, h = image.size
            if w * h > max_pixels:
                raise _Skip(f"too many pixels: {w}x{h} is over the limit of {max_pixels:,}")
            rgb, alpha = _rgb_alpha(image)
            if removal is not None:
                alpha = removal.apply(rgb, alpha)
            return _to_square(rgb, alpha, size, background)
        if isinstance(image, (bytes, bytearray, memoryview)):
            return _decode_array(bytes(image), size, background, max_pixels, removal)
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: cannot read ({_short(e)})") from None
        return _decode_array(data, size, background, max_pixels, removal)
    except _Skip as e:
        raise DataError(f"cannot use this image: {e}") from None


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


def _norm_member(name: str) -> str:
    name = name.replace("\\", "/").lstrip("/")
    name = posixpath.normpath(name) if name else name
    return "" if name in (".", "") else name


def _wanted(name: str) -> bool:
    """Image files count; hidden files/folders (.DS_Store, ._x.png, .git) and __MACOSX are ignored."""
    parts = name.split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return posixpath.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS


class _Source:
    """Folder and zip: ``scan()`` yields (ref, name, size) in storage order, ``open(ref)`` a binary stream,
    ``read(refs)`` (ref, stream) pairs in storage order. Tar is streamed through ``_members()``."""

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
    kind = "folder"

    def scan(self) -> Iterator[tuple[Any, str, int | None]]:
        root = self.path
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
            for fn in sorted(filenames):
                p = Path(dirpath) / fn
                yield p, p.relative_to(root).as_posix(), None

    def read(self, refs: list[Any]) -> Iterator[tuple[Any, BinaryIO]]:
        for p in refs:
            with open(p, "rb") as f:
                yield p, f

    def open(self, ref: Any) -> BinaryIO:
        return open(ref, "rb")


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

    def scan(self):
        for info in self.zf.infolist():
            if info.is_dir():
                continue
            yield info, _norm_member(info.filename), info.file_size

    def read(self, refs):
        for info in refs:
            with self.zf.open(info) as f:
                yield info, f

    def open(self, ref):
        return self.zf.open(ref)


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
    if not path.is_file():
        raise DataError(f"{path}: not a folder, zip or tar archive")
    kind = _archive_kind(path)
    if kind == "zip":
        return _ZipSource(path)
    if kind == "tar":
        return _TarSource(path)
    raise DataError(f"{path}: not a folder of images, a .zip or a .tar/.tar.gz/.tgz archive")


# ---- scanning and hashing -------------------------------------------------------------------------
@dataclass
class _Scan:
    entries: dict[str, tuple[Any, str, int]] = field(default_factory=dict)  # name -> (ref, digest, nbytes)
    skipped: list[tuple[str, str]] = field(default_factory=list)            # found but unusable pre-decode
    ignored: int = 0
    key: str = ""


def _hash_stream(f: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while True:
        block = f.read(_CHUNK)
        if not block:
            break
        h.update(block)
        n += len(block)
    return h.hexdigest(), n


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


def _scan(source: _Source, size: int, background: str, max_pixels: int, progress: bool,
          removal: _Removal | None = None) -> _Scan:
    from tqdm.auto import tqdm

    found: list[tuple[str, Any, str, int]] = []  # (raw name, ref, digest or 'unreadable', nbytes)
    problems: dict[int, str] = {}
    ignored = 0
    bar = tqdm(desc=f"hashing {source.path.name}", unit="file", disable=not progress, leave=False)
    try:
        if isinstance(source, _TarSource):
            # stream mode: hash each member while it is the current one
            for i, m, tf in source._members():
                if m.isdir():
                    continue
                name = _norm_member(m.name)
                if not _wanted(name):
                    ignored += 1
                    continue
                if not m.isfile():
                    problems[len(found)] = "link or special file in the archive (not followed)"
                    found.append((name, ("link", i), "unreadable", 0))
                    continue
                try:
                    digest, n = _hash_stream(tf.extractfile(m))
                except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
                    raise DataError(f"{source.path}: the tar archive is truncated or corrupt "
                                    f"({_short(e)})") from None
                found.append((name, ("file", i), digest, n))
                bar.update(1)
        else:
            for ref, name, _sz in source.scan():
                if not name or not _wanted(name):
                    ignored += 1
                    continue
                try:
                    with source.open(ref) as f:
                        digest, n = _hash_stream(f)
                except (OSError, RuntimeError, zipfile.BadZipFile, zlib.error, EOFError) as e:
                    # RuntimeError: an encrypted zip entry
                    problems[len(found)] = f"unreadable ({_short(e)})"
                    digest, n = "unreadable", 0
                found.append((name, ref, digest, n))
                bar.update(1)
    finally:
        bar.close()

    scan = _Scan(ignored=ignored)
    prefix = _common_prefix([f[0] for f in found])
    for idx, (raw, ref, digest, n) in enumerate(found):
        name = raw[len(prefix):]
        if idx in problems:
            scan.skipped.append((name, problems[idx]))
        if name in scan.entries:
            # archives may hold a name twice; like extraction, the later copy wins
            scan.skipped.append((name, "duplicate entry in the archive (the later copy was used)"))
        scan.entries[name] = (ref if idx not in problems else None, digest, n)
    scan.key = _make_key(scan.entries, size, background, max_pixels,
                         _removal_key(removal.model) if removal is not None else None)
    return scan


def _make_key(entries: dict[str, tuple[Any, str, int]], size: int, background: str, max_pixels: int,
              removal: str | None = None) -> str:
    """sha256 over the pipeline version, the options and every (name, sha256 of bytes) in sorted order.
    Hashing per-file digests lets archives be hashed in storage order in one streaming pass. The removal
    line is only there when it is on, so the keys of sets prepared without it did not change."""
    h = hashlib.sha256()
    h.update(f"{PIPELINE_VERSION}\nsize={size}\nbackground={background}\nmax_pixels={max_pixels}\n".encode())
    if removal is not None:
        h.update(f"remove_background={removal}\n".encode())
    for name in sorted(entries):
        h.update(name.encode("utf-8", "surrogateescape") + b"\0" + entries[name][1].encode() + b"\n")
    return h.hexdigest()[:16]


def _decode_all(source: _Source, scan: _Scan, size: int, background: str, max_pixels: int,
                progress: bool, removal: _Removal | None = None
                ) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    skipped = list(scan.skipped)
    todo: dict[Any, str] = {}
    for name, (ref, digest, nbytes) in scan.entries.items():
        if ref is None:
            continue
        if nbytes > DEFAULT_MAX_FILE_BYTES:
            skipped.append((name, f"file is {nbytes / 2**20:.0f} MiB, over the "
                                  f"{DEFAULT_MAX_FILE_BYTES / 2**20:.0f} MiB limit"))
            continue
        todo[_ref_id(ref)] = name
    refs = _storage_order(source, [scan.entries[n][0] for n in todo.values()])
    decoded: dict[str, np.ndarray] = {}

    def work(name: str, data: bytes) -> tuple[str, np.ndarray | None, str]:
        try:
            return name, _decode_array(data, size, background, max_pixels, removal), ""
        except _Skip as e:
            return name, None, str(e)

    def collect(fut) -> None:
        name, arr, reason = fut.result()
        if arr is None:
            skipped.append((name, reason))
        else:
            decoded[name] = arr
        bar.update(1)

    # Reading stays sequential (archives are streams); decoding runs in threads because PIL's decoders
    # and resize release the GIL. A bounded window keeps memory flat on big sets. rembg predictions are
    # serialised by engines.background (one at a time; onnxruntime itself uses all cores).
    workers = max(1, min(8, os.cpu_count() or 1))
    window: list = []
    with tqdm(total=len(refs), desc=f"preparing {source.path.name}", unit="img", disable=not progress) as bar, \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pokelab-data") as pool:
        for ref, f in source.read(refs):
            name = todo[_ref_id(ref)]
            try:
                data = f.read()
            except (OSError, RuntimeError, zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as e:
                skipped.append((name, f"unreadable ({_short(e)})"))
                bar.update(1)
                continue
            if hashlib.sha256(data).hexdigest() != scan.entries[name][1]:
                raise DataError(f"{source.path}: {name} changed while it was being prepared; run again")
            window.append(pool.submit(work, name, data))
            if len(window) >= 4 * workers:
                collect(window.pop(0))
        for fut in window:
            collect(fut)
    files = sorted(decoded, key=natural_key)
    skipped.sort(key=lambda s: natural_key(s[0]))
    images = np.empty((len(files), 3, size, size), np.uint8)
    for i, name in enumerate(files):
        images[i] = decoded[name].transpose(2, 0, 1)
    return images, files, skipped


def _ref_id(ref: Any) -> Any:
    return str(ref) if isinstance(ref, Path) else (ref.filename, ref.header_offset) \
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
    })


def _foreign_json(meta_path: Path) -> bool:
    """A readable JSON file without our format marker is someone else's: never overwrite it. (A damaged,
    unparseable one is treated as ours, so re-preparing repairs it.)"""
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
    except (OSError, ValueError):  # missing or unparseable
        return False
    return not (isinstance(meta, dict) and meta.get("format") == FORMAT)


def _looks_prepared(folder: Path) -> bool:
    try:
        meta = json.loads((folder / "dataset.json").read_text("utf-8"))
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
        meta = json.loads(meta_path.read_text("utf-8"))
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
    except (KeyError, TypeError, ValueError) as e:
        raise _Corrupt(f"{folder}: dataset.json lacks a field or has a wrong one ({_short(e)})") from None
    try:
        # allow_pickle=False: an object array (which would need unpickling) is refused, not loaded
        arr = np.load(folder / "images.npy", allow_pickle=False)
    except FileNotFoundError:
        raise _Corrupt(f"{folder}: images.npy is missing") from None
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
                         location=str(folder.resolve()), background_removal=removal)
    return ds, meta


# ---- public API -----------------------------------------------------------------------------------
def _build(source: _Source, scan: _Scan, size: int, background: str, max_pixels: int,
           progress: bool, src: Path, removal: _Removal | None = None) -> tuple[PreparedDataset, np.ndarray]:
    import torch

    if not scan.entries:
        what = f"; {scan.ignored} other file(s) were ignored" if scan.ignored else ""
        raise DataError(f"{src}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}{what})")
    if removal is not None:
        removal.start()
    images, files, skipped = _decode_all(source, scan, size, background, max_pixels, progress, removal)
    if not files:
        first = "; ".join(f"{n}: {r}" for n, r in skipped[:3])
        raise DataError(f"{src}: none of the {len(scan.entries)} image file(s) could be used ({first}"
                        f"{' ...' if len(skipped) > 3 else ''})")
    ds = PreparedDataset(images=torch.from_numpy(images), key=scan.key, name=source_name(src), size=size,
                         background=background, files=files, skipped=skipped, source=str(src.resolve()),
                         ignored=scan.ignored, background_removal=removal.record() if removal else None)
    return ds, images


def prepare(src: str | os.PathLike, out: str | os.PathLike | None = None, size: int = 128,
            background: str = "white", progress: bool = True, *, max_pixels: int = DEFAULT_MAX_PIXELS,
            force: bool = False, remove_background: bool = False, rembg_model: str = bgremoval.DEFAULT_MODEL,
            rembg_model_path: str | os.PathLike | None = None) -> PreparedDataset:
    """Prepare SRC (folder, .zip, .tar[.gz]) at ``size`` px on ``background``. With ``out`` the result
    is written there (atomically); an ``out`` already holding the same content key is reused unless
    ``force``. ``remove_background``: rembg cuts each subject out first (``rembg_model`` by name, or a
    local U2Net-style ONNX file ``rembg_model_path``); pictures with their own transparency keep it.
    Raises DataError when nothing usable is found."""
    size, background, max_pixels = _check_options(size, background, max_pixels)
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
                    ds.name, ds.source = source_name(src_p), str(src_p.resolve())
                    return ds
        ds, images = _build(source, scan, size, background, max_pixels, progress, src_p, removal)
    if out_p is not None:
        try:
            _write_prepared(out_p, ds, images, ds.source)
        except OSError as e:  # disk full, read-only folder ...: the previous contents of OUT are intact
            raise DataError(f"cannot write the prepared dataset to {out_p} ({_short(e)})") from None
        ds.location = str(out_p.resolve())
    return ds


def _recorded_source(folder: Path) -> str | None:
    try:
        return json.loads((folder / "dataset.json").read_text("utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def load_dataset(path: str | os.PathLike, size: int = 128, background: str = "white",
                 cache_dir: str | os.PathLike | None = None, progress: bool = True, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS, remove_background: bool | None = None,
                 rembg_model: str = bgremoval.DEFAULT_MODEL,
                 rembg_model_path: str | os.PathLike | None = None) -> PreparedDataset:
    """A prepared folder, or a raw folder / zip / tar prepared into the cache
    (``cache_dir`` or $POKELAB_CACHE or ~/.cache/pokelab, entry ``datasets/<key>``).

    A prepared folder made at another size/background is re-prepared from the source it records (into
    the cache; the folder is left alone); if that source is gone, DataError says what to run.
    ``remove_background`` None (default): a prepared folder is taken with or without background removal,
    as it was made (and keeps it when re-prepared at another size); a raw source gets none. True/False
    asks for it (with ``rembg_model`` / ``rembg_model_path``, as in ``prepare``); a prepared folder made
    otherwise is re-prepared from its source."""
    size, background, max_pixels = _check_options(size, background, max_pixels)
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
                print(f"note: {p} holds {ds.size} px images on {ds.background}{now}; preparing {size} px on "
                      f"{background}{then} from its source {recorded}", file=sys.stderr)
            return load_dataset(recorded, size, background, cache_dir, progress, max_pixels=max_pixels, **want)
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
                print(f"note: rebuilding a damaged cache entry ({e})", file=sys.stderr)
            else:
                ds.name, ds.source = source_name(p), str(p.resolve())
                return ds
        ds, images = _build(source, scan, size, background, max_pixels, progress, p, removal)
    try:
        _write_prepared(entry, ds, images, ds.source, cache_entry=True)
        ds.location = str(entry.resolve())
    except (OSError, DataError) as e:  # a read-only or full cache must not stop training
        print(f"warning: could not write the dataset cache at {entry} ({_short(e)}); continuing without it",
              file=sys.stderr)
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
    if ds.skipped:
        lines.append(f"  skipped {len(ds.skipped)} file(s):")
        lines += [f"    {name}: {reason}" for name, reason in ds.skipped]
    else:
        lines.append("  skipped 0 files")
    return "\n".join(lines)


def _cmd_prepare(args: argparse.Namespace) -> int:
    try:
        out = Path(args.out)
        before = _read_key(out)
        if not args.remove_background and (args.rembg_model or args.rembg_model_path):
            raise DataError("--rembg-model and --rembg-model-path only apply with --remove-background")
        ds = prepare(args.src, out, size=args.size, background=args.background, progress=args.progress,
                     max_pixels=args.max_pixels, force=args.force, remove_background=args.remove_background,
                     rembg_model=args.rembg_model or bgremoval.DEFAULT_MODEL,
                     rembg_model_path=args.rembg_model_path)
    except DataError as e:
        print(f"pokelab data prepare: error: {e}", file=sys.stderr)
        return 2
    print(format_report(ds, args.out, reused=(before == ds.key and not args.force)))
    return 0


def _read_key(folder: Path) -> str | None:
    try:
        return json.loads((folder / "dataset.json").read_text("utf-8")).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def _cmd_info(args: argparse.Namespace) -> int:
    p = Path(args.path)
    if not is_prepared(p):
        print(f"pokelab data info: error: {p} is not a prepared dataset (no pokelab dataset.json)",
              file=sys.stderr)
        return 2
    try:
        ds, meta = _read_prepared(p)
    except DataError as e:
        print(f"pokelab data info: error: {e}", file=sys.stderr)
        return 2
    ds.source = str(meta.get("source") or ds.source)
    print(format_report(ds, p))
    return 0


def add_data_commands(subparsers) -> None:
    """``pokelab data prepare|fetch|info`` on the CLI's sub-command parsers."""
    from .fetch import add_fetch_command

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

    add_fetch_command(dsub)
