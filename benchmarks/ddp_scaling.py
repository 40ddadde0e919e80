"""Data-parallel scaling: training img/s with 1, 2, ... processes under torchrun (docs/training.md).

    python benchmarks/ddp_scaling.py                         # CPU (Gloo): dcgan and stylegan2_ada, 1 and 2 processes
    python benchmarks/ddp_scaling.py --device cuda           # stylegan2_ada at 128 px on 1, 2, 4, ... GPUs (NCCL)
    python benchmarks/ddp_scaling.py --device cuda --worlds 1 2 --check   # gpu_check.sh: fails if a run fails

Weak scaling, as stylegan2-ada grows its batch with the GPUs: every process keeps ``--batch-per-process`` images
per step, so the global batch is that times the world size. Each configuration runs as its own torchrun job of
the real trainer (gradients all-reduced per optimiser step, BatchNorm synchronised, per-step stop agreement) on a
synthetic uint8 set on the device; its rank 0 reports the trainer's own img/s of the last epoch (the first ones
are warm-up). Printed: total img/s, img/s per process, and the scaling efficiency
img/s(W) / (W x img/s(1)). On a CPU the processes share the machine's cores (--cpus pins them, e.g. to the one
core a busy machine has free), so expect little or no gain there: the figure is the cost of the synchronisation.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CPU_ENGINES = {
    "dcgan": {"size": 32, "batch": 16, "engine": {"g_width": 32, "d_width": 32, "z_dim": 64}},
    "stylegan2_ada": {"size": 32, "batch": 8, "engine": {"z_dim": 64, "w_dim": 64, "mapping_layers": 2,
                                                         "channel_base": 2048, "channel_max": 64}},
}
#: the reference's 128 px StyleGAN2-ADA (ADA "auto" widths), mixed precision as the trainer chooses it
CUDA_ENGINES = {"stylegan2_ada": {"size": 128, "batch": 32, "engine": {}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(spec: dict) -> None:
    """One torchrun job's process: train ``spec['epochs']`` epochs of the real trainer on a synthetic set."""
    import torch

    from engines.config import TrainConfig
    from engines.trainer import Trainer

    world = int(os.environ.get("WORLD_SIZE", 1))
    size, per = spec["size"], spec["batch"]
    g = torch.Generator().manual_seed(0)
    n = per * world * spec["steps"]
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    ds = types.SimpleNamespace(images=images, key=f"synthetic-{n}-{size}", name="synthetic", source="/synthetic",
                               skipped=[], background="white")
    cfg = TrainConfig(image_size=size, batch_size=per * world, epochs=spec["epochs"], eval_every=0, sample_every=0,
                      checkpoint_every=0, checkpoint_minutes=0, device=spec["device"], engine=dict(spec["engine"]),
                      batch_gpu=spec.get("batch_gpu", 0))
    with tempfile.TemporaryDirectory() as runs:
        t = Trainer(spec["name"], ds, runs, cfg, progress=False)
        main = t.is_main
        run = t.fit()
        if main:
            from engines.runs.folder import read_metrics

            last = read_metrics(run).train[-1]
            print("RESULT " + json.dumps({"img_per_s": last["img_per_s"], "world": world,
                                          "epoch_seconds": last["epoch_seconds"]}), flush=True)


def measure(name: str, spec: dict, world: int, args) -> dict | None:
    spec = {**spec, "name": name, "device": args.device, "steps": args.steps, "epochs": args.epochs}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--master_port", str(free_port()),
           f"--nproc_per_node={world}", str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    if args.cpus:
        cmd = ["taskset", "-c", args.cpus, *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(ROOT)}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"  {name} x{world} failed (exit {p.returncode}):\n{p.stderr[-3000:]}", file=sys.stderr)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--engines", nargs="+", help="default: dcgan stylegan2_ada on a CPU, stylegan2_ada on CUDA")
    ap.add_argument("--worlds", nargs="+", type=int, help="process counts (default: 1 2 on a CPU; 1, 2, 4, ... up "
                                                           "to the GPUs on CUDA)")
    ap.add_argument("--batch-per-process", type=int, help="images per process per step (default: per engine)")
    ap.add_argument("--steps", type=int, default=8, help="steps per epoch")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run; the last one is timed")
    ap.add_argument("--cpus", help="taskset CPU list for every process (e.g. 1 on a machine whose core 0 is busy)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--check", action="store_true", help="exit 1 unless every configuration trains")
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    import torch

    table = CUDA_ENGINES if args.device == "cuda" else CPU_ENGINES
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("no CUDA device", file=sys.stderr)
            return 2
        gpus = torch.cuda.device_count()
        worlds = args.worlds or [w for w in (1, 2, 4, 8, 16) if w <= gpus]
        if max(worlds) > gpus:
            print(f"asked for {max(worlds)} processes but this machine has {gpus} GPU(s)", file=sys.stderr)
            return 2
        print(f"{gpus} x {torch.cuda.get_device_name(0)}")
    else:
        worlds = args.worlds or [1, 2]
        print(f"CPU, {os.cpu_count()} core(s); processes pinned to: {args.cpus or 'any'}; "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}")
    failed = False
    for name in args.engines or list(table):
        spec = dict(table.get(name) or {"size": 32, "batch": 8, "engine": {}})
        if args.batch_per_process:
            spec["batch"] = args.batch_per_process
        print(f"\n{name} at {spec['size']} px, {spec['batch']} images per process per step "
              f"(global batch = {spec['batch']} x processes)")
        print(f"{'processes':>9} {'img/s':>10} {'img/s/proc':>11} {'s/kimg':>8} {'efficiency':>10}")
        base = None
        for w in worlds:
            r = measure(name, spec, w, args)
            if r is None:
                failed = True
                continue
            ips = r["img_per_s"]
            base = ips if w == 1 else base
            eff = f"{ips / (w * base):.2f}" if base else "-"
            print(f"{w:>9} {ips:>10.1f} {ips / w:>11.1f} {1000 / ips:>8.2f} {eff:>10}", flush=True)
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
