"""Where evaluation images come from: folders of image files (read like the pytorch-fid CLI), prepared
datasets (engines.data.prepare), uint8 tensors; plus resizing a real set to the generator's resolution."""
from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass
class ImageSet:
    """A set of images in memory, duck-compatible with engines.data.prepare.PreparedDataset for the metrics."""
    images: torch.Tensor                 # uint8 [N, 3, H, W]
    key: str                             # content hash of the pixels
    name: str
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


def content_key(images: torch.Tensor) -> str:
    """Hash of the pixels and shape: the same images give the same key wherever they came from."""
    x = images.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{tuple(x.shape)}|{x.dtype}".encode())
    h.update(x.numpy().data)
    return "px-" + h.hexdigest()[:40]


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive, like the pytorch-fid CLI), in natural order."""
    from ..data.prepare import IMAGE_EXTENSIONS, natural_key

    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


def _decode(path: Path, background: str) -> np.ndarray:
    """One file at its own resolution, decoded by engines.data.prepare (so EXIF rotation, 16-bit, palette and
    decompression-bomb handling are the dataset pipeline's): opaque pixels are exactly what pytorch-fid
    reads, transparency is flattened on ``background``, a non-square image is padded to a square."""
    from ..data.prepare import MAX_SIZE, prepare_image

    with Image.open(path) as im:
        side = max(im.size)
    return prepare_image(path, size=min(side, MAX_SIZE), background=background)


def load_image_folder(folder: str | os.PathLike, size: tuple[int, int] | None = None, background: str = "white",
                      min_images: int = 2) -> ImageSet:
    """All images directly inside ``folder`` as uint8 RGB (see ``_decode``). Unreadable files are skipped
    with a warning; images of another size than ``size`` (default: the most common size) are resized."""
    from ..data.prepare import DataError

    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: expected a folder of images")
    files = image_files(folder)
    if not files:
        raise ValueError(f"{folder}: no image files in it")
    pics, names, skipped = [], [], []
    for p in files:
        try:
            pics.append(_decode(p, background))
            names.append(p.name)
        except (OSError, DataError, Image.DecompressionBombError) as e:
            skipped.append(f"{p.name}: {e}")
    if skipped:
        warnings.warn(f"{folder}: skipped {len(skipped)} unreadable image(s): " + "; ".join(skipped[:5])
                      + (" ..." if len(skipped) > 5 else ""), RuntimeWarning, stacklevel=2)
    if len(pics) < min_images:
        raise ValueError(f"{folder}: {len(pics)} readable image(s); evaluation needs at least {min_images}")
    sizes = Counter(a.shape[:2] for a in pics)
    target = tuple(size) if size is not None else sizes.most_common(1)[0][0]
    resized = sum(n for s, n in sizes.items() if s != target)
    if resized:
        warnings.warn(f"{folder}: resized {resized} of {len(pics)} images to {target[1]}x{target[0]} "
                      f"(found sizes {', '.join(f'{w}x{h}' for h, w in sizes)})", RuntimeWarning, stacklevel=2)
        pics = [a if a.shape[:2] == target else
                np.asarray(Image.fromarray(a).resize((target[1], target[0]), Image.Resampling.LANCZOS))
                for a in pics]
    images = torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, content_key(images), folder.name or str(folder), names, skipped)


def is_image_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and bool(image_files(p))


def load_real(path: str | os.PathLike, size: int | None = None, background: str = "white"):
    """REAL given on the command line: a plain folder of image files is read as it is (like pytorch-fid);
    a prepared dataset, a zip/tar or nested folders go through engines.data.prepare.load_dataset at ``size``."""
    from ..data.prepare import is_prepared, load_dataset

    if is_image_folder(path) and not is_prepared(path):
        return load_image_folder(path, background=background)  # native size; the evaluation resizes it
    return load_dataset(path, size=size or 128, background=background)


def as_image_set(real, name: str = "real"):
    """A PreparedDataset / ImageSet (anything with ``.images`` and ``.key``), a uint8 tensor, or a path."""
    if hasattr(real, "images") and hasattr(real, "key"):
        if not isinstance(real.images, torch.Tensor) or real.images.dtype != torch.uint8 or real.images.dim() != 4:
            raise ValueError("the real set's .images must be a uint8 NCHW tensor")
        return real
    if isinstance(real, torch.Tensor):
        from .inception import as_uint8_rgb

        imgs = as_uint8_rgb(real).cpu()
        return ImageSet(imgs, content_key(imgs), name)
    if isinstance(real, (str, os.PathLike)):
        return load_real(real)
    raise TypeError(f"cannot use {type(real).__name__} as an image set (expected a dataset, a tensor or a path)")


def resize_uint8(images: torch.Tensor, size: tuple[int, int], chunk: int = 64) -> torch.Tensor:
    """Antialiased bicubic resize of uint8 NCHW images, re-quantised to uint8 (chunked: bounded memory)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    out = []
    for s in range(0, len(images), chunk):
        x = F.interpolate(images[s:s + chunk].float(), size=size, mode="bicubic", antialias=True,
                          align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)
