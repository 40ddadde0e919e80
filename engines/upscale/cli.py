"""``pokelab upscale EXPORT_OR_RUN PICTURES... --out DIR``: enlarge pictures of any size with an upscaling export.

Pictures are found and read as the data layer does it (``engines.data.prepare.find_pictures`` / ``read_picture``: folders
walked recursively, hidden files ignored, links to regular files followed, broken links, links to folders, special
files, oversized, corrupt, truncated and non-image files skipped with the reason, transparency flattened on
``--background``), upscaled in tiles (``UpscaleEngine.upscale_tiled``: bounded memory whatever the size) and
written as lossless PNGs under ``--out`` with their names (relative to the folder they were found in), atomically.
An existing file is never replaced without ``--overwrite``. Building the parser imports nothing heavy.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path, PurePosixPath

#: the largest picture (input pixels) upscaled by default: x4 makes it 16 times bigger (4 Mpx -> 64 Mpx, a
#: 192 MB picture held once in memory to be encoded)
DEFAULT_MAX_PIXELS = 4_000_000
_DEFAULT_TILE = 160  # engines.upscale.base.DEFAULT_TILE (not imported here: it imports torch)


def add_upscale_command(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "upscale", help="enlarge pictures with an upscaling export or run (srgan)",
        description="Upscale every picture of PICTURES (files or folders, searched recursively) by the export's "
                    "factor and write PNGs under --out with the same names. Unusable files (not images, corrupt, "
                    "too big, links to folders or to nothing, special files) are reported and skipped; existing "
                    "outputs are kept unless --overwrite.")
    p.add_argument("target", help="upscaling export folder or run folder (e.g. a srgan run)")
    p.add_argument("pictures", nargs="+", help="picture files or folders of pictures")
    p.add_argument("--out", required=True, help="folder for the upscaled PNGs")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--background", choices=("white", "black", "none"), default="white",
                   help="colour transparency is flattened on (default white; 'none' keeps the colour under it)")
    p.add_argument("--tile", type=int, default=_DEFAULT_TILE,
                   help="input pixels per tile side (default %(default)s; 0: whole pictures at once). Tiles overlap "
                        "by the generator's receptive field, so the result does not depend on it; smaller tiles "
                        "use less memory")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="skip pictures with more input pixels than this (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default: %(default)s)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.set_defaults(func=run_upscale)
    return p


def run_upscale(args) -> int:
    import torch
    from tqdm.auto import tqdm

    from ..data.prepare import DataError, _printable, find_pictures, read_picture
    from ..runs.export import load_export
    from ..data.images import png_bytes
    from ..runs.folder import atomic_write_bytes
    from ..trainer import pick_device

    if args.tile < 0:
        raise ValueError("--tile must be 0 (whole pictures) or a number of pixels")
    if args.tile and args.tile < 8:
        raise ValueError("--tile must be at least 8 pixels (or 0: whole pictures)")
    if args.max_pixels < 1:
        raise ValueError("--max-pixels must be at least 1")
    engine = load_export(args.target, device=pick_device(args.device))
    if getattr(engine, "kind", "generate") != "upscale":
        raise ValueError(f"{args.target}: engine {engine.name!r} is a {engine.kind} engine; `pokelab upscale` needs "
                         "an upscaling export (srgan)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    found, skipped, ignored = find_pictures(args.pictures)
    if not found and not skipped:
        raise ValueError(f"no pictures in {', '.join(map(str, args.pictures))}"
                         + (f" ({ignored} non-image file(s) ignored)" if ignored else ""))
    total = len(found) + len(skipped)
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    written: list[str] = []
    kept = 0  # outputs that exist already (a second run over the same pictures)
    t0 = time.perf_counter()
    with tqdm(total=len(found), unit="img", desc=f"upscaling x{engine.scale}", disable=not args.progress) as bar:
        for name, path in found:
            bar.update(1)
            dest = out / PurePosixPath(name).with_suffix(".png")
            try:
                if not dest.parent.resolve().is_relative_to(root):  # a link inside --out leading elsewhere
                    skipped.append((name, f"its output folder {dest.parent} leads out of --out (a link); not written"))
                    continue
            except OSError as e:
                skipped.append((name, f"its output folder cannot be used ({e})"))
                continue
            if os.path.lexists(dest) and not args.overwrite:
                skipped.append((name, f"{dest} exists (kept; --overwrite replaces it)"))
                kept += 1
                continue
            try:
                pic = read_picture(path, background=args.background, max_pixels=args.max_pixels)
            except DataError as e:
                skipped.append((name, str(e).removeprefix("cannot use this image: ")))
                continue
            x = torch.from_numpy(pic).permute(2, 0, 1).unsqueeze(0)
            y = engine.upscale_tiled(x, tile=args.tile or None)[0].permute(1, 2, 0).numpy()
            try:
                atomic_write_bytes(dest, png_bytes(y))
            except OSError as e:
                skipped.append((name, f"could not write {dest} ({e.strerror or e})"))
                continue
            written.append(name)
    seconds = time.perf_counter() - t0
    lines = [f"upscaled {len(written)} picture(s) x{engine.scale} with {engine.name} into {out}"
             + (f" ({seconds / len(written):.2f} s per picture)" if written else "")]
    if ignored:
        lines.append(f"  ignored {ignored} non-image file(s)")
    if skipped:
        lines.append(f"  skipped {len(skipped)} file(s):")
        lines += [f"    {name}: {reason}" for name, reason in skipped]
    else:
        lines.append("  skipped 0 files")
    # names come from the files: a newline or an escape sequence in one must not forge or hide report lines
    print("\n".join(_printable(line) for line in lines))
    if not written and not kept:
        print(_printable(f"pokelab upscale: error: none of the {total} file(s) could be "
                         "upscaled (see above)"), file=sys.stderr)
        return 1
    return 0
