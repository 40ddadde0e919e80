"""What only a GPU shows: every engine trained for a few hundred steps under fp32, bf16 and fp16 on CUDA
(finite losses and weights, img/s), and stylegan2_ada's throughput at 128 px, batch 32, beside the reference's
published figure. Run by benchmarks/gpu_check.sh; on a machine without CUDA it says so and exits 2.

    python benchmarks/gpu_check.py --steps 200             # every engine x every precision
    python benchmarks/gpu_check.py --throughput            # stylegan2_ada 128 px, batch 32
    python benchmarks/gpu_check.py --engines dcgan projected_gan --precisions bf16 --steps 50

Sizes are small (64 px, narrow widths) so the whole matrix takes a few minutes: this checks that mixed
precision trains, not how fast each engine is at full size. bf16 is skipped on GPUs below compute
capability 8.0 (emulated there); fp16 uses one GradScaler per optimiser, as training does.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: small settings per engine (64 px unless noted): what makes 200 steps of each take seconds
SMALL = {
    "dcgan": {"g_width": 32, "d_width": 32},
    "wgan_gp": {"g_width": 32, "d_width": 32},
    "aegan": {"g_width": 16, "e_width": 16, "d_width": 16},
    "stylegan2_ada": {"channel_base": 4096, "channel_max": 128, "z_dim": 128, "w_dim": 128, "mapping_layers": 2},
    "projected_gan": {"ngf": 32},
    "pggan": {"channel_base": 2048, "channel_max": 128, "z_dim": 128, "stable_kimg": 1, "fade_kimg": 1},
    "cyclegan": {"ngf": 16, "ndf": 16},
    "cartoongan": {"ngf": 16, "ndf": 16, "init_epochs": 0},
    "ugatit": {"ngf": 16, "ndf": 16, "n_res": 2},
}
TRANSLATION = ("cyclegan", "cartoongan", "ugatit")
#: stylegan2-ada-pytorch's README: about 13 s/kimg at 128 px on one V100 (its "Expected training time" table)
REFERENCE_SEC_PER_KIMG = 13.0


def _batch(engine, n: int, size: int, device):
    import torch

    x = torch.rand(n, 3, size, size, device=device) * 2 - 1
    x = x.contiguous(memory_format=torch.channels_last)
    return (x, torch.rand_like(x) * 2 - 1) if engine.kind == "translate" else x


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run_engine(name: str, precision: str, steps: int, size: int = 64, batch: int | None = None,
               device: str = "cuda") -> dict:
    import torch

    from engines.augment import build_augment
    from engines.registry import get_engine

    dev = torch.device(device)
    cls = get_engine(name)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    torch.manual_seed(0)
    engine = cls(SMALL.get(name, {}), size)
    aug = build_augment(getattr(cls, "default_augment", "diffaugment"))
    engine.setup(dev, amp=False, augment=aug, amp_dtype=dtype)
    b = batch or (4 if cls.kind == "translate" else 32)
    data = _batch(engine, b, size, dev)
    bad = []
    for i in range(steps):
        if i == min(10, steps - 1):  # warm-up done (cuDNN autotuning, allocator)
            _sync(dev)
            t0, timed = time.perf_counter(), steps - i
        out = engine.train_step(data)
    _sync(dev)
    seconds = time.perf_counter() - t0
    for k, v in out.items():
        v = float(v)
        if not math.isfinite(v):
            bad.append(f"{k}={v}")
    if any(not torch.isfinite(p).all() for p in engine.parameters()):
        bad.append("non-finite weights")
    scales = {k: s.get_scale() for k, s in engine.scalers.items() if s.is_enabled()}
    return {"engine": name, "precision": precision, "img_per_s": timed * b / seconds, "bad": bad,
            "scales": scales, "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if dev.type == "cuda" else 0.0}


def throughput(steps: int = 60) -> dict:
    """stylegan2_ada at 128 px, batch 32, its default widths and the run's default precision."""
    import torch

    from engines.augment import build_augment
    from engines.registry import get_engine

    dev = torch.device("cuda", 0)
    torch.manual_seed(0)
    engine = get_engine("stylegan2_ada")({}, 128).setup(dev, amp=True, augment=build_augment("ada"))
    x = _batch(engine, 32, 128, dev)
    for _ in range(10):
        engine.train_step(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.train_step(x)
    torch.cuda.synchronize()
    img_s = steps * 32 / (time.perf_counter() - t0)
    return {"img_per_s": img_s, "sec_per_kimg": 1000 / img_s, "amp": str(engine.amp_dtype)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", nargs="+", default=list(SMALL))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--throughput", action="store_true", help="only the stylegan2_ada 128 px figure")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run the matrix on the CPU (a smoke test of this script where there is no GPU)")
    args = p.parse_args(argv)
    import torch

    if args.cpu_dry_run:
        for name in args.engines:
            for prec in args.precisions:
                r = run_engine(name, prec, args.steps, size=64, batch=2 if name not in TRANSLATION else 1, device="cpu")
                print(f"{name:<14} {prec:<9} {r['img_per_s']:>9.1f}  {'ok' if not r['bad'] else r['bad']}")
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU", file=sys.stderr)
        return 2
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, compute capability {props.major}.{props.minor}, {props.total_memory / 2 ** 30:.0f} GiB; "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    if args.throughput:
        r = throughput()
        print(f"stylegan2_ada 128 px, batch 32, {r['amp']}: {r['img_per_s']:.1f} img/s = {r['sec_per_kimg']:.2f} s/kimg "
              f"(reference: ~{REFERENCE_SEC_PER_KIMG:g} s/kimg on one V100; "
              f"{REFERENCE_SEC_PER_KIMG / r['sec_per_kimg']:.2f}x)")
        return 0
    failed = 0
    print(f"{'engine':<14} {'precision':<9} {'img/s':>9} {'peak GiB':>9}  result")
    for name in args.engines:
        for prec in args.precisions:
            if prec == "bf16" and props.major < 8:
                print(f"{name:<14} {prec:<9} {'':>9} {'':>9}  skipped (no native bf16 below capability 8.0)")
                continue
            try:
                torch.cuda.reset_peak_memory_stats()
                r = run_engine(name, prec, args.steps)
            except Exception as e:  # noqa: BLE001 — report every engine, then fail at the end
                failed += 1
                print(f"{name:<14} {prec:<9} {'':>9} {'':>9}  ERROR {type(e).__name__}: {e}")
                continue
            ok = "ok" if not r["bad"] else "NON-FINITE " + ", ".join(r["bad"])
            failed += bool(r["bad"])
            scales = f" (loss scales {r['scales']})" if r["scales"] else ""
            print(f"{name:<14} {prec:<9} {r['img_per_s']:>9.1f} {r['peak_gib']:>9.2f}  {ok}{scales}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
