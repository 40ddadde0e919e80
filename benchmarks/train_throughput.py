"""Training throughput: pokelab's trainer vs a plain PyTorch loop of the same architecture.

    python benchmarks/train_throughput.py                      # DCGAN at 64 and 128 px, batch 64
    python benchmarks/train_throughput.py --engines dcgan wgan_gp --sizes 64 --steps 10
    python benchmarks/train_throughput.py --engines stylegan2_ada --sizes 64 --batch 32 \
        --set channel_base=2048 --set channel_max=128 --set z_dim=128 --set w_dim=128 --set mapping_layers=4
    python benchmarks/train_throughput.py --engines cyclegan cartoongan ugatit --sizes 128 --steps 4

Each measurement runs in its own subprocess so peak RSS belongs to that configuration alone.
"Plain loop" = the PyTorch DCGAN example's recipe: a DataLoader over a float TensorDataset,
BCEWithLogitsLoss, and `.item()` on the losses every step; for translation engines the same recipe with
CycleGAN's nets and losses (two DataLoaders, LSGAN + cycle + identity, no image pool). Translation engines
run at their protocol batch (4) unless --batch is given; "img/s" counts source pictures translated in training. The trainer is timed from its own
per-epoch img/s (epoch 1 is warm-up and discarded).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n: int, size: int):
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


WIDTH_KEYS = {"dcgan": ("g_width", "d_width"), "wgan_gp": ("g_width", "d_width"),
              "aegan": ("g_width", "d_width", "e_width"), "cyclegan": ("ngf", "ndf"), "ugatit": ("ngf", "ndf"),
              "cartoongan": ("ngf", "ndf")}
TRANSLATION = ("cyclegan", "cartoongan", "ugatit")
#: settings that make a two-epoch measurement time the engine's main phase (CartoonGAN would otherwise
#: spend both epochs in its reconstruction-only initialisation)
TIMING_SETTINGS = {"cartoongan": ["init_epochs=0"]}


def run_trainer(engine: str, size: int, batch: int, steps: int, width: int | None, augment: str, device: str,
                overrides: list[str]):
    import tempfile

    from engines.config import TrainConfig, apply_overrides
    from engines.runs import read_metrics
    from engines.trainer import Trainer

    from engines.registry import get_engine

    cls = get_engine(engine)
    sets = [types.SimpleNamespace(images=synthetic(batch * steps, size), key=f"bench{d}", name=f"bench{d}",
                                  source="synthetic") for d in range(cls.domains)]
    eng = {k: width for k in WIDTH_KEYS.get(engine, ())} if width else {}
    cfg = TrainConfig(image_size=size, batch_size=batch, epochs=2, sample_every=0, eval_every=0,
                      checkpoint_every=0, augment=augment, device=device, engine=eng)
    apply_overrides(cfg, TIMING_SETTINGS.get(engine, []) + list(overrides))
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(engine, sets if len(sets) > 1 else sets[0], d, cfg, progress=False)
        t.fit()
        rec = read_metrics(t.run_dir).train[-1]
    return rec["img_per_s"]


def timed_epoch(epoch, dev) -> float:
    """img/s of the second call of ``epoch() -> images``; the first is warm-up, like the trainer's epoch 1."""
    import torch

    epoch()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = epoch()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def run_plain(size: int, batch: int, steps: int, width: int | None, device: str):
    """The same DCGAN nets trained the way a tutorial loop does it."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from engines.generate.dcgan import DCGANDiscriminator, DCGANGenerator

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    torch.manual_seed(0)
    w = width or 64
    G, D = DCGANGenerator(100, size, w).to(dev), DCGANDiscriminator(size, w).to(dev)
    oG = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    oD = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    crit = nn.BCEWithLogitsLoss()
    data = synthetic(batch * steps, size).float() / 127.5 - 1
    loader = DataLoader(TensorDataset(data), batch_size=batch, shuffle=True, drop_last=True)

    def epoch():
        n = 0
        for (real,) in loader:
            real = real.to(dev)
            b = real.size(0)
            fake = G(torch.randn(b, 100, device=dev))
            oD.zero_grad()
            lossD = crit(D(real), torch.ones(b, device=dev)) + crit(D(fake.detach()), torch.zeros(b, device=dev))
            lossD.backward()
            oD.step()
            oG.zero_grad()
            lossG = crit(D(fake), torch.ones(b, device=dev))
            lossG.backward()
            oG.step()
            _ = (lossD.item(), lossG.item())  # per-step logging, as tutorials do
            n += b
        return n

    return timed_epoch(epoch, dev)


def run_plain_cyclegan(size: int, batch: int, steps: int, width: int | None, device: str):
    """CycleGAN's nets and losses in a tutorial-style loop (the translation reference)."""
    import itertools

    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from engines.translate.cyclegan import PatchDiscriminator, ResnetGenerator

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    torch.manual_seed(0)
    w = width or 64
    G_AB, G_BA = ResnetGenerator(w).to(dev), ResnetGenerator(w).to(dev)
    D_A, D_B = PatchDiscriminator(w).to(dev), PatchDiscriminator(w).to(dev)
    oG = torch.optim.Adam(itertools.chain(G_AB.parameters(), G_BA.parameters()), 2e-4, betas=(0.5, 0.999))
    oD = torch.optim.Adam(itertools.chain(D_A.parameters(), D_B.parameters()), 2e-4, betas=(0.5, 0.999))
    loaders = [DataLoader(TensorDataset(synthetic(batch * steps, size).float() / 127.5 - 1), batch_size=batch,
                          shuffle=True, drop_last=True) for _ in range(2)]
    mse = lambda p, v: F.mse_loss(p, torch.full_like(p, v))  # noqa: E731

    def epoch():
        n = 0
        for (a,), (b,) in zip(*loaders):
            a, b = a.to(dev), b.to(dev)
            fb, fa = G_AB(a), G_BA(b)
            lossG = (mse(D_B(fb), 1) + mse(D_A(fa), 1) + 10 * (F.l1_loss(G_BA(fb), a) + F.l1_loss(G_AB(fa), b))
                     + 5 * (F.l1_loss(G_AB(b), b) + F.l1_loss(G_BA(a), a)))
            oG.zero_grad()
            lossG.backward()
            oG.step()
            lossD = 0.5 * (mse(D_B(b), 1) + mse(D_B(fb.detach()), 0) + mse(D_A(a), 1) + mse(D_A(fa.detach()), 0))
            oD.zero_grad()
            lossD.backward()
            oD.step()
            _ = (lossD.item(), lossG.item())
            n += a.size(0)
        return n

    return timed_epoch(epoch, dev)


def one(args) -> None:
    import torch

    torch.set_num_threads(args.threads) if args.threads else None
    if args.one == "plain":
        ips = run_plain(args.size, args.batch, args.steps, args.width, args.device)
    elif args.one == "plain-cyclegan":
        ips = run_plain_cyclegan(args.size, args.batch, args.steps, args.width, args.device)
    else:
        ips = run_trainer(args.one, args.size, args.batch, args.steps, args.width, args.augment, args.device,
                          args.set or [])
    print(json.dumps({"img_per_s": ips, "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", nargs="+", default=["dcgan"])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--batch", type=int, default=None,
                   help="default: 64 for generation engines, 4 for translation engines (their protocols)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per measurement (one epoch)")
    p.add_argument("--width", type=int, default=None, help="g_width/d_width (default: the engine's)")
    p.add_argument("--augment", default="none", help="trainer augmentation (the plain loop has none)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="engine settings, as for pokelab train")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(args)

    def measure(kind: str, size: int, augment: str, batch: int) -> dict:
        cmd = [sys.executable, __file__, "--one", kind, "--size", str(size), "--batch", str(batch),
               "--steps", str(args.steps), "--augment", augment, "--device", args.device,
               "--threads", str(args.threads)] + (["--width", str(args.width)] if args.width else []) \
            + [a for kv in (args.set or []) for a in ("--set", kv)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{kind} at {size} px failed:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    gen_batch = args.batch or 64
    tr_batch = args.batch or 4
    print(f"batch {gen_batch} (translation {tr_batch}), {args.steps} timed steps, device {args.device}, "
          f"width {args.width or 'default'}" + (f", settings {' '.join(args.set)}" if args.set else ""))
    print(f"{'engine':10s} {'size':>4s} {'route':22s} {'img/s':>8s} {'peak RSS MB':>12s} {'ratio':>6s}")

    def row(eng, size, route, r, ratio="-"):
        print(f"{eng:10s} {size:4d} {route:22s} {r['img_per_s']:8.1f} {r['peak_rss_mb']:12.0f} {ratio:>6s}",
              flush=True)

    for size in args.sizes:
        plain = measure("plain", size, "none", gen_batch) if "dcgan" in args.engines else None
        if plain:
            row("dcgan", size, "plain PyTorch loop", plain, "1.00")
        plain_cg = measure("plain-cyclegan", size, "none", tr_batch) if "cyclegan" in args.engines else None
        if plain_cg:
            row("cyclegan", size, "plain PyTorch loop", plain_cg, "1.00")
        for eng in args.engines:
            augs = [args.augment, "diffaugment"] if eng == "dcgan" else [args.augment]
            if eng == "stylegan2_ada":
                augs = ["ada"]  # its own pipeline, part of the method
            batch = tr_batch if eng in TRANSLATION else gen_batch
            for aug in dict.fromkeys(augs):
                r = measure(eng, size, aug, batch)
                ref = plain if eng == "dcgan" else plain_cg if eng == "cyclegan" else None
                row(eng, size, f"trainer ({aug})", r, f"{r['img_per_s'] / ref['img_per_s']:.2f}" if ref else "-")


if __name__ == "__main__":
    main()
