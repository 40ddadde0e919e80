"""Training throughput: pokelab's trainer vs a plain PyTorch loop of the same architecture.

    python benchmarks/train_throughput.py                      # DCGAN at 64 and 128 px, batch 64
    python benchmarks/train_throughput.py --engines dcgan wgan_gp --sizes 64 --steps 10
    python benchmarks/train_throughput.py --engines stylegan2_ada --sizes 64 --batch 32 \
        --set channel_base=2048 --set channel_max=128 --set z_dim=128 --set w_dim=128 --set mapping_layers=4
    python benchmarks/train_throughput.py --engines cyclegan cartoongan ugatit pix2pix --sizes 128 --steps 4
    python benchmarks/train_throughput.py --engines srgan --sizes 256 --batch 16 --steps 3   # x4, 96 px crops
    python benchmarks/train_throughput.py --engines dcgan projected_gan --sizes 64 --batch 16 --steps 3 \
        --set cpu_amp=true --set projected_gan:ngf=16 --set projected_gan:d_cout=16
    python benchmarks/train_throughput.py --checkpoint-every 1       # the old cadence: a checkpoint every epoch
    python benchmarks/train_throughput.py --augment-ops --sizes 64   # DiffAugment's ops: time and allocations
    python benchmarks/train_throughput.py --memory-format --engines dcgan projected_gan --sizes 64 \
        --augment diffaugment                  # an engine's step with NCHW vs channels_last (NHWC) weights

Each measurement runs in its own subprocess so peak RSS belongs to that configuration alone.
"Plain loop" = the PyTorch DCGAN example's recipe: a DataLoader over a float TensorDataset,
BCEWithLogitsLoss, and `.item()` on the losses every step; for translation engines the same recipe with
CycleGAN's nets and losses (two DataLoaders, LSGAN + cycle + identity, no image pool); for projected_gan
its own G and projected D (hinge, Adam, G EMA, bf16 autocast when cpu_amp is set). The plain loops never
augment. Translation engines run at their protocol batch (4) unless --batch is given; "img/s" counts source
pictures translated in training. The trainer is timed from its own per-epoch img/s (epoch 1 is warm-up and
discarded): training steps only. "wall img/s" also counts what the trainer does between epochs
(checkpoint, run.json, log lines; grids with --sample-every): images of epoch 2 over the time between the
metrics lines of epochs 1 and 2. The plain loops do nothing between epochs, so theirs equals img/s.

``--set KEY=VALUE`` applies to every engine (trainer fields such as cpu_amp included) and to the plain loop
of the same architecture; ``--set ENGINE:KEY=VALUE`` to that engine only (projected_gan's ngf, say).
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
              "cartoongan": ("ngf", "ndf"), "projected_gan": ("ngf",), "pix2pix": ("ngf", "ndf"),
              "srgan": ("g_width", "d_width")}
TRANSLATION = ("cyclegan", "cartoongan", "ugatit", "pix2pix")
#: settings that make a two-epoch measurement time the engine's main phase (CartoonGAN would otherwise
#: spend both epochs in its reconstruction-only initialisation)
TIMING_SETTINGS = {"cartoongan": ["init_epochs=0"],
                   "pix2pix": ["val_fraction=0"],  # every synthetic pair trains: the same steps per epoch
                   # epoch 1 the MSE pre-training, epoch 2 (the timed one) the GAN phase; no held-out pictures
                   "srgan": ["val_fraction=0", "pretrain_epochs=1"]}
#: the engine whose nets each plain loop trains
PLAIN = {"plain": "dcgan", "plain-cyclegan": "cyclegan", "plain-projected": "projected_gan"}


def engine_overrides(engine: str, overrides: list[str]) -> list[str]:
    """``KEY=VALUE`` for every engine, ``ENGINE:KEY=VALUE`` for that engine only."""
    out = []
    for kv in overrides:
        head, sep, rest = kv.partition(":")
        if sep and "=" not in head:
            if head == engine:
                out.append(rest)
        else:
            out.append(kv)
    return out


def bench_config(engine: str, size: int, batch: int, width: int | None, augment: str, device: str,
                 overrides: list[str], checkpoint_every: int = 0, sample_every: int = 0):
    """The TrainConfig a measurement uses (the plain loops read their widths and cpu_amp from it too)."""
    from engines.config import TrainConfig, apply_overrides

    eng = {k: width for k in WIDTH_KEYS.get(engine, ())} if width else {}
    cfg = TrainConfig(image_size=size, batch_size=batch, epochs=2, sample_every=sample_every, eval_every=0,
                      checkpoint_every=checkpoint_every, augment=augment, device=device, engine=eng)
    return apply_overrides(cfg, TIMING_SETTINGS.get(engine, []) + engine_overrides(engine, overrides))


def run_trainer(engine: str, size: int, batch: int, steps: int, width: int | None, augment: str, device: str,
                overrides: list[str], checkpoint_every: int = 0, sample_every: int = 0):
    """(img/s of epoch 2's training steps, img/s of the wall time from epoch 1's metrics line to epoch 2's)."""
    import tempfile

    from engines.registry import get_engine
    from engines.runs.folder import read_metrics
    from engines.trainer import Trainer

    cls = get_engine(engine)
    # file names 0.png, 1.png ... on both sides: paired engines (pix2pix) pair picture i with picture i
    sets = [types.SimpleNamespace(images=synthetic(batch * steps, size), key=f"bench{d}", name=f"bench{d}",
                                  files=[f"{i}.png" for i in range(batch * steps)],
                                  source="synthetic") for d in range(cls.domains)]
    cfg = bench_config(engine, size, batch, width, augment, device, overrides, checkpoint_every, sample_every)
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(engine, sets if len(sets) > 1 else sets[0], d, cfg, progress=False)
        t.fit()
        first, rec = read_metrics(t.run_dir).train[-2:]
    wall = rec["img_per_s"] * rec["epoch_seconds"] / max(rec["time"] - first["time"], 1e-3)
    return rec["img_per_s"], wall


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


def _plain_device(device: str):
    import torch

    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        "cpu" if device == "auto" else device)


def run_plain(size: int, batch: int, steps: int, width: int | None, device: str, overrides: list[str] = ()):
    """The same DCGAN nets trained the way a tutorial loop does it."""
    import contextlib

    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from engines.generate.dcgan import DCGAN, DCGANDiscriminator, DCGANGenerator

    dev = _plain_device(device)
    torch.manual_seed(0)
    cfg = bench_config("dcgan", size, batch, width, "none", device, list(overrides))
    c = DCGAN.resolve_config(cfg.engine)
    z_dim = c["z_dim"]
    bf16 = cfg.cpu_amp and dev.type == "cpu"  # the trainer's cpu_amp: bf16 autocast, as the engines do
    ac = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    G = DCGANGenerator(z_dim, size, c["g_width"], c["max_channels"]).to(dev)
    D = DCGANDiscriminator(size, c["d_width"], c["max_channels"]).to(dev)
    oG = torch.optim.Adam(G.parameters(), c["lr"], betas=tuple(c["betas"]))
    oD = torch.optim.Adam(D.parameters(), c["lr"], betas=tuple(c["betas"]))
    crit = nn.BCEWithLogitsLoss()
    data = synthetic(batch * steps, size).float() / 127.5 - 1
    loader = DataLoader(TensorDataset(data), batch_size=batch, shuffle=True, drop_last=True)

    def epoch():
        n = 0
        for (real,) in loader:
            real = real.to(dev)
            b = real.size(0)
            with ac():
                fake = G(torch.randn(b, z_dim, device=dev))
                lossD = crit(D(real).float(), torch.ones(b, device=dev)) \
                    + crit(D(fake.detach()).float(), torch.zeros(b, device=dev))
            oD.zero_grad()
            lossD.backward()
            oD.step()
            oG.zero_grad()
            with ac():
                lossG = crit(D(fake).float(), torch.ones(b, device=dev))
            lossG.backward()
            oG.step()
            _ = (lossD.item(), lossG.item())  # per-step logging, as tutorials do
            n += b
        return n

    return timed_epoch(epoch, dev)


def run_plain_projected(size: int, batch: int, steps: int, width: int | None, device: str,
                        overrides: list[str] = ()):
    """projected_gan's nets (FastGAN G, projected D on the frozen EfficientNet-Lite0) in a tutorial-style loop:
    a G step then a D step with fresh latents, hinge losses, Adam, G EMA by a parameter lerp, bf16 autocast
    on a CPU when cpu_amp is set, `.item()` every step."""
    import contextlib

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from engines.generate.projected_gan import ProjectedGAN, hinge_d_loss, hinge_g_loss

    dev = _plain_device(device)
    torch.manual_seed(0)
    cfg = bench_config("projected_gan", size, batch, width, "none", device, list(overrides))
    net = ProjectedGAN(cfg.engine, size, training=True)  # only to build the same nets from the same settings
    G, D, G_ema = net.G.to(dev), net.D.to(dev), net.G_ema.to(dev)
    c = net.config
    adam = dict(lr=c["lr"], betas=tuple(c["betas"]), eps=c["eps"])
    oG, oD = torch.optim.Adam(G.parameters(), **adam), torch.optim.Adam(D.trainable_parameters(), **adam)
    bf16 = cfg.cpu_amp and dev.type == "cpu"
    ac = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    loader = DataLoader(TensorDataset(synthetic(batch * steps, size).float() / 127.5 - 1), batch_size=batch,
                        shuffle=True, drop_last=True)
    z_dim, seen = int(c["z_dim"]), [0]

    def epoch():
        n = 0
        for (real,) in loader:
            real = real.to(dev)
            b = real.size(0)
            D.discs.requires_grad_(False)
            with ac():
                lossG = hinge_g_loss(D(G(torch.randn(b, z_dim, device=dev))).float())
            oG.zero_grad()
            lossG.backward()
            oG.step()
            D.discs.requires_grad_(True)
            with torch.no_grad(), ac():
                fake = G(torch.randn(b, z_dim, device=dev))
            with ac():
                lr_, lf = hinge_d_loss(D(real).float(), D(fake).float())
                lossD = lr_ + lf
            oD.zero_grad()
            lossD.backward()
            oD.step()
            seen[0] += b
            half = (c["ema_kimg"] if c["ema_kimg"] is not None else b * 10 / 32) * 1000
            half = min(half, seen[0] * c["ema_rampup"]) if c["ema_rampup"] is not None else half
            beta = 0.5 ** (b / max(half, 1e-8))
            with torch.no_grad():
                for pe, p in zip(G_ema.parameters(), G.parameters()):
                    pe.lerp_(p, 1 - beta)
                for be, bb in zip(G_ema.buffers(), G.buffers()):
                    be.copy_(bb)
            _ = (lossD.item(), lossG.item())
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
        ips = run_plain(args.size, args.batch, args.steps, args.width, args.device, args.set or [])
    elif args.one == "plain-projected":
        ips = run_plain_projected(args.size, args.batch, args.steps, args.width, args.device, args.set or [])
    elif args.one == "plain-cyclegan":
        ips = run_plain_cyclegan(args.size, args.batch, args.steps, args.width, args.device)
    if args.one in PLAIN:
        wall = ips
    else:
        ips, wall = run_trainer(args.one, args.size, args.batch, args.steps, args.width, args.augment,
                                args.device, args.set or [], args.checkpoint_every, args.sample_every)
    print(json.dumps({"img_per_s": ips, "wall_img_per_s": wall, "peak_rss_mb": peak_rss_mb()}))


def augment_ops(sizes: list[int], batches: list[int], reps: int) -> None:
    """DiffAugment's ops, forward + backward on one batch, as the engines call them (3x per GAN step): the
    op-by-op chain (the reference's structure) against the fused ops the pipeline runs. Allocations: bytes of
    every new tensor an aten op returns, forward and backward (a TorchDispatchMode; no profiler needed)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from engines.augment import diffaugment as da

    class Allocs(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n, self.bytes = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            seen = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                    if isinstance(t, torch.Tensor)}
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                    seen.add(t.untyped_storage().data_ptr())
                    self.n, self.bytes = self.n + 1, self.bytes + t.untyped_storage().nbytes()
            return out

    def chain(fns):
        def run(x):
            for f in fns:
                x = f(x)
            return x
        return run

    cases = {"color": (chain(da.POLICIES["color"]), da.rand_color),
             "translation+cutout": (chain(da.POLICIES["translation"] + da.POLICIES["cutout"]),
                                    da.rand_translation_cutout),
             "policy c,t,c": (chain([f for p in ("color", "translation", "cutout") for f in da.POLICIES[p]]),
                              da.DiffAugment("color,translation,cutout"))}
    print(f"DiffAugment, forward + backward, {torch.get_num_threads()} thread(s); median of {reps}")
    print(f"{'size':>4s} {'batch':>5s} {'ops':20s} {'op-by-op ms':>11s} {'fused ms':>9s} {'speed-up':>8s} "
          f"{'op-by-op MiB':>12s} {'fused MiB':>9s} {'allocs':>11s}")
    for size in sizes:
        for batch in batches:
            x = torch.randn(batch, 3, size, size, requires_grad=True)
            g = torch.ones_like(x)
            for name, (ref, fused) in cases.items():
                times: dict = {ref: [], fused: []}
                for i in range(reps + 2):
                    for f in (ref, fused):  # interleaved, so load changes hit both alike
                        t0 = time.perf_counter()
                        f(x).backward(g)
                        if i >= 2:
                            times[f].append(time.perf_counter() - t0)
                        x.grad = None
                mem = {}
                for f in (ref, fused):
                    with Allocs() as a:
                        f(x).backward(g)
                    x.grad = None
                    mem[f] = (a.n, a.bytes / 2**20)
                med = {f: sorted(t)[len(t) // 2] * 1e3 for f, t in times.items()}
                print(f"{size:4d} {batch:5d} {name:20s} {med[ref]:11.2f} {med[fused]:9.2f} "
                      f"{med[ref] / med[fused]:7.2f}x {mem[ref][1]:12.1f} {mem[fused][1]:9.1f} "
                      f"{mem[ref][0]:5d}/{mem[fused][0]:<5d}", flush=True)


def memory_format(engines: list[str], sizes: list[int], batch: int | None, steps: int, reps: int,
                  augment: str, device: str, overrides: list[str]) -> None:
    """An engine's ``train_step`` with contiguous (NCHW) against channels_last (NHWC) weights and batches, both
    built from the same seed in this one process and timed in alternating rounds (load changes hit both alike);
    the median round of each. This is what ``Engine.cpu_channels_last`` is decided on."""
    import torch

    from engines.augment import build_augment
    from engines.registry import get_engine

    dev = _plain_device(device)
    print(f"train_step img/s on {dev}, {torch.get_num_threads()} thread(s), {steps} steps x {reps} alternating "
          f"rounds, augment {augment}" + (f", settings {' '.join(overrides)}" if overrides else ""))
    print(f"{'engine':13s} {'size':>4s} {'batch':>5s} {'contiguous':>10s} {'channels_last':>13s} {'speed-up':>8s}")
    for eng in engines:
        cls = get_engine(eng)
        if cls.conditional:
            print(f"{eng:13s} (conditional: its steps need labels; measure it through the trainer)")
            continue
        for size in sizes:
            b = batch or (4 if eng in TRANSLATION else 64)
            cfg = bench_config(eng, size, b, None, augment, device, overrides)
            nets, times = {}, {False: [], True: []}
            for cl in (False, True):
                torch.manual_seed(0)
                nets[cl] = cls(dict(cfg.engine), size, training=True).setup(
                    dev, amp=cfg.amp, augment=build_augment(augment), cpu_amp=cfg.cpu_amp, channels_last=cl)
            x = synthetic(b, size).float() / 127.5 - 1
            for r in range(reps + 1):
                for cl in (False, True):
                    xb = (x.contiguous(memory_format=torch.channels_last) if cl else x).to(dev)
                    xb = (xb, xb.flip(0)) if cls.domains == 2 else xb
                    if r == 0:  # warm-up round
                        nets[cl].train_step(xb)
                        continue
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(steps):
                        nets[cl].train_step(xb)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    times[cl].append(b * steps / (time.perf_counter() - t0))
            med = {cl: sorted(v)[len(v) // 2] for cl, v in times.items()}
            print(f"{eng:13s} {size:4d} {b:5d} {med[False]:10.1f} {med[True]:13.1f} {med[True] / med[False]:7.2f}x",
                  flush=True)


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
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="the trainer's checkpoint_every (0, its default: by time, so none between epochs 1 and 2; "
                        "1: the old every-epoch cadence)")
    p.add_argument("--sample-every", type=int, default=0, help="the trainer's sample_every (0: no grids)")
    p.add_argument("--augment-ops", action="store_true",
                   help="time DiffAugment's ops (op by op vs fused) at --sizes and --batch (default 16 32 64)")
    p.add_argument("--reps", type=int, default=None,
                   help="repetitions per --augment-ops measurement (default 30); rounds per --memory-format one (5)")
    p.add_argument("--memory-format", action="store_true",
                   help="time each engine's train_step with NCHW vs channels_last weights (one process, alternating)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(args)
    if args.augment_ops:
        import torch

        torch.set_num_threads(args.threads or 1)
        return augment_ops(args.sizes, [args.batch] if args.batch else [16, 32, 64], args.reps or 30)
    if args.memory_format:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        return memory_format(args.engines, args.sizes, args.batch, args.steps, args.reps or 5,
                             args.augment, args.device, args.set or [])

    def measure(kind: str, size: int, augment: str, batch: int) -> dict:
        cmd = [sys.executable, __file__, "--one", kind, "--size", str(size), "--batch", str(batch),
               "--steps", str(args.steps), "--augment", augment, "--device", args.device,
               "--threads", str(args.threads), "--checkpoint-every", str(args.checkpoint_every),
               "--sample-every", str(args.sample_every)] + (["--width", str(args.width)] if args.width else []) \
            + [a for kv in (args.set or []) for a in ("--set", kv)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{kind} at {size} px failed:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    gen_batch = args.batch or 64
    tr_batch = args.batch or 4
    import os

    print(f"batch {gen_batch} (translation {tr_batch}), {args.steps} timed steps, device {args.device}, "
          f"width {args.width or 'default'}, checkpoint_every {args.checkpoint_every}, sample_every "
          f"{args.sample_every}" + (f", settings {' '.join(args.set)}" if args.set else ""))
    if hasattr(os, "getloadavg"):
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other work skews figures)")
    print(f"{'engine':13s} {'size':>4s} {'route':22s} {'img/s':>8s} {'wall img/s':>10s} {'peak RSS MB':>11s} "
          f"{'ratio':>6s} {'wall ratio':>10s}")

    def row(eng, size, route, r, ref=None):
        ratio = f"{r['img_per_s'] / ref['img_per_s']:.2f}" if ref else "-"
        wall = f"{r['wall_img_per_s'] / ref['img_per_s']:.2f}" if ref else "-"
        print(f"{eng:13s} {size:4d} {route:22s} {r['img_per_s']:8.1f} {r['wall_img_per_s']:10.1f} "
              f"{r['peak_rss_mb']:11.0f} {ratio:>6s} {wall:>10s}", flush=True)

    for size in args.sizes:
        refs = {}
        for kind, eng in PLAIN.items():
            if eng in args.engines:
                refs[eng] = measure(kind, size, "none", tr_batch if eng in TRANSLATION else gen_batch)
                row(eng, size, "plain PyTorch loop", refs[eng], refs[eng])
        for eng in args.engines:
            augs = [args.augment, "diffaugment"] if eng in ("dcgan", "projected_gan") else [args.augment]
            if eng == "stylegan2_ada":
                augs = ["ada"]  # its own pipeline, part of the method
            batch = tr_batch if eng in TRANSLATION else gen_batch
            for aug in dict.fromkeys(augs):
                row(eng, size, f"trainer ({aug})", measure(eng, size, aug, batch), refs.get(eng))


if __name__ == "__main__":
    main()
