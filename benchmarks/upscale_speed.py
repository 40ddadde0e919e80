"""`pokelab upscale` speed on a CPU, beside PIL's bicubic resize of the same pictures in the same run.

    python benchmarks/upscale_speed.py                         # 64 pictures of 64 px, x4, the paper's SRResNet
    python benchmarks/upscale_speed.py --n 16 --size 128 --threads 2
    python benchmarks/upscale_speed.py --export checkpoints/runs/<srgan run>/export

The pictures are the first N of the shared Dream World set (../shared/datasets/pokemon/dreamworld-256), brought to
SIZE px with the data layer's preparation (flattened on white, Lanczos), written as PNGs into a temporary folder;
synthetic colour blobs when the set is not there. Without --export the generator is a freshly initialised SRGAN of
the paper's size (16 residual blocks, 64 channels, x4): the weights do not change the speed. Reported, in ms per
picture:
- ``pokelab upscale``: the whole command in this process (find and read the files, upscale, encode and write
  the PNGs atomically), and its network part alone (``upscale_tiled`` on the decoded pictures);
- PIL bicubic: the same pictures read, resized x4 with ``Image.resize(BICUBIC)`` and written as PNGs the same
  way, and the resize alone.
Each figure is given as wall time and as CPU time of this process (``time.process_time``): on a machine shared with
other work the wall time grows with the load, the CPU time of a single-threaded run hardly does.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets" / "pokemon" / "dreamworld-256"


def make_pictures(folder: Path, n: int, size: int) -> str:
    import numpy as np
    from PIL import Image

    from engines.data.prepare import prepare_image

    folder.mkdir(parents=True, exist_ok=True)
    files = sorted(SHARED.glob("*.png"), key=lambda p: int(p.stem))[:n] if SHARED.is_dir() else []
    if len(files) == n:
        for f in files:
            Image.fromarray(prepare_image(f, size=size)).save(folder / f.name)
        return f"the first {n} Dream World pictures at {size} px"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        mask = ((xx - rng.uniform(0.3, 0.7)) ** 2 + (yy - rng.uniform(0.3, 0.7)) ** 2 < 0.1)[..., None]
        Image.fromarray(np.where(mask, rng.integers(0, 256, 3), 255).astype(np.uint8)).save(folder / f"{i}.png")
    return f"{n} synthetic {size} px pictures (the shared set is not here)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--size", type=int, default=64, help="side of the input pictures")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--export", help="an upscaling export or run (default: an untrained SRGAN of the paper's size)")
    ap.add_argument("--tile", type=int, default=None, help="pokelab upscale --tile (default: its own)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from engines.cli import main as pokelab
    from engines.data.prepare import read_picture
    from engines.runs.export import load_export, save_export
    from engines.data.images import png_bytes
    from engines.registry import get_engine
    from engines.runs.folder import atomic_write_bytes

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        what = make_pictures(tmp / "in", args.n, args.size)
        export = args.export
        if export is None:
            torch.manual_seed(0)
            export = str(save_export(get_engine("srgan")({}, 256, training=False), tmp / "srgan"))
        engine = load_export(export, device="cpu")
        s = engine.scale
        files = sorted((tmp / "in").glob("*.png"))

        # warm-up: the first convolutions allocate and pick their kernels
        with contextlib.redirect_stdout(io.StringIO()):
            pokelab(["upscale", export, str(files[0]), "--out", str(tmp / "warm"), "--no-progress", "--device", "cpu"])

        cmd = ["upscale", export, str(tmp / "in"), "--out", str(tmp / "out"), "--no-progress", "--device", "cpu"]
        if args.tile is not None:
            cmd += ["--tile", str(args.tile)]
        with Timer(len(files)) as cli:
            with contextlib.redirect_stdout(io.StringIO()):
                rc = pokelab(cmd)
        if rc != 0:
            raise SystemExit(f"pokelab upscale failed ({rc})")

        pics = [torch.from_numpy(read_picture(f)).permute(2, 0, 1)[None] for f in files]
        with Timer(len(files)) as net:
            for x in pics:
                engine.upscale_tiled(x) if args.tile is None else engine.upscale_tiled(x, tile=args.tile or None)

        with Timer(len(files)) as pil:
            for f in files:
                with Image.open(f) as im:
                    big = im.convert("RGB").resize((im.width * s, im.height * s), Image.Resampling.BICUBIC)
                atomic_write_bytes(tmp / "pil" / f.name, png_bytes(np.asarray(big)))
        ims = [Image.open(f).convert("RGB") for f in files]
        with Timer(len(files)) as resize:
            for im in ims:
                im.resize((im.width * s, im.height * s), Image.Resampling.BICUBIC)

    which = f"export {args.export}" if args.export else "untrained, paper size"
    print(f"{what}, x{s} with {engine.name} ({which}), "
          f"{args.threads} thread(s), torch {torch.__version__}")
    print(f"  {'ms per picture':<28}{'wall':>9}{'CPU':>9}")
    for name, t in (("pokelab upscale", cli), ("  its network alone", net), ("PIL bicubic (read, write)", pil),
                    ("  its resize alone", resize)):
        print(f"  {name:<28}{t.wall_ms:9.2f}{t.cpu_ms:9.2f}")
    print(f"  pokelab upscale / PIL bicubic: {cli.cpu_ms / pil.cpu_ms:.0f}x the CPU time")
    return 0


class Timer:
    """Wall and process CPU milliseconds per item of the block."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall_ms = (time.perf_counter() - self.w) * 1000 / self.n
        self.cpu_ms = (time.process_time() - self.c) * 1000 / self.n


if __name__ == "__main__":
    sys.exit(main())
