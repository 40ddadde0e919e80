"""How far one training step's gradients move under bf16 autocast and under channels_last, against fp32 NCHW.

    python benchmarks/step_numerics.py                                   # projected_gan, 64 px, batch 16
    python benchmarks/step_numerics.py --engine dcgan --size 64 --batch 64
    python benchmarks/step_numerics.py --engine projected_gan --set ngf=32

Each variant builds the engine from the same seed with lr 0 (so every phase of the step sees the same nets),
draws the same batch and random numbers, runs one ``train_step`` with DiffAugment, and compares each parameter's
gradient with the fp32 NCHW one: relative error ||g - g_ref|| / ||g_ref||, mean and max over the generator's and
the discriminator's parameters (parameters whose reference gradient is ~0, such as conv biases before a batch norm,
are left out). The random draws of ``torch.randn_like`` follow the memory layout, so engines that use it (StyleGAN2's
path-length noise) differ in NHWC for that reason too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {"fp32 NHWC": (False, True), "bf16 NCHW": (True, False), "bf16 NHWC": (True, True)}


def step_grads(engine: str, size: int, batch: int, cpu_amp: bool, channels_last: bool, overrides: dict):
    import torch

    from engines.augment import build_augment
    from engines.registry import get_engine

    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(2)) * 2 - 1
    torch.manual_seed(0)
    e = get_engine(engine)({**overrides, "lr": 0.0}, size, training=True)
    e.setup(torch.device("cpu"), augment=build_augment("diffaugment"), cpu_amp=cpu_amp, channels_last=channels_last)
    torch.manual_seed(1)
    e.train_step(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    return {k: p.grad.detach().float().clone() for k, p in e.named_parameters() if p.grad is not None}


def main() -> None:
    from engines.config import parse_value

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="projected_gan")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="engine settings")
    args = p.parse_args()
    overrides = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    ref = step_grads(args.engine, args.size, args.batch, False, False, overrides)
    ref = {k: g for k, g in ref.items() if g.norm() > 1e-6 * max(1.0, g.numel() ** 0.5)}
    print(f"{args.engine}, {args.size} px, batch {args.batch}: one step's gradients against fp32 NCHW "
          f"(relative error; {len(ref)} parameters)")
    print(f"{'variant':10s} {'G mean':>7s} {'G max':>7s} {'D mean':>7s} {'D max':>7s}")
    for name, (amp, cl) in VARIANTS.items():
        got = step_grads(args.engine, args.size, args.batch, amp, cl, overrides)
        err = {k: float((got[k] - g).norm() / g.norm()) for k, g in ref.items() if k in got}
        cols = []
        for prefix in ("G", "D"):
            v = [e for k, e in err.items() if k.split(".")[0].startswith(prefix)]
            cols += [sum(v) / len(v), max(v)] if v else [float("nan")] * 2
        print(f"{name:10s} " + " ".join(f"{c:7.3f}" for c in cols), flush=True)


if __name__ == "__main__":
    main()
