"""FID+KID evaluation speed: pokelab's in-memory route vs the pytorch-fid CLI on PNG folders.

    python benchmarks/fid_speed.py --n 2000 --real ../shared/datasets/pokemon/dreamworld-256

Generated images come from a randomly initialised small DCGAN-like generator (fixed seed) at 128x128;
the real set is prepared by engines.data.prepare (white background, 128 px). Routes, each in its own process:
  ours, first      empty statistics cache: real features computed and cached, then FID+KID
  ours, repeated   the same process again (statistics in memory: the trainer's case)
  ours, new proc   a fresh process with the disk cache warm (`pokelab eval` run again)
  pytorch-fid CLI  the same generated images written as PNGs + `python -m pytorch_fid FAKE REAL` (FID only)
Wall time, the process's peak RSS, the values and their relative difference are printed. The three "ours" rows
time plain FID+KID (no intervals: ``intervals=0``), as before the intervals existed.

Then, on the generated features of the repeated call (no further Inception passes), the cost of each number
evaluate_generator can add beside plain FID, in the same process: FID's and KID's 95 % intervals, FID∞,
precision/recall, density/coverage (``--no-extras`` skips it).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_generator(size: int = 128, z_dim: int = 64, width: int = 32, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, width * 4, 4, 1, 0), nn.BatchNorm2d(width * 4), nn.ReLU()]
    ch, res = width * 4, 4
    while res < size // 2:
        nxt = max(width, ch // 2)
        layers += [nn.ConvTranspose2d(ch, nxt, 4, 2, 1), nn.BatchNorm2d(nxt), nn.ReLU()]
        ch, res = nxt, res * 2
    layers += [nn.ConvTranspose2d(ch, 3, 4, 2, 1), nn.Tanh()]
    net = nn.Sequential(*layers).eval()

    @torch.inference_mode()
    def sample_fn(k: int, s: int):
        z = torch.randn(k, z_dim, 1, 1, generator=torch.Generator().manual_seed(s))
        return net(z)

    return sample_fn


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child_ours(args) -> None:
    import warnings

    from engines.data.prepare import load_dataset
    from engines.metrics import evaluate_generator

    warnings.simplefilter("ignore")
    real = load_dataset(args.real, size=128, progress=False)
    sample_fn = make_generator()
    out = {}
    details: dict = {}
    device = None if args.device == "auto" else args.device
    for label in ("call1", "call2") if args.twice else ("call1",):
        t0 = time.perf_counter()
        res = evaluate_generator(sample_fn, real, n=args.n, metrics=("fid", "kid"), batch_size=args.batch_size,
                                 device=device, seed=0, details=details, intervals=0)
        out[label] = {"seconds": time.perf_counter() - t0, "fid": res["fid"], "kid": res["kid"],
                      "kid_std": res["kid_std"], "rss_mb": _peak_rss_mb()}
    if args.twice and args.extras:
        out["extras"] = time_extras(details["fake_features"], real, device)
    print("RESULT " + json.dumps(out))


def time_extras(fake, real, device) -> dict:
    """Seconds and values of each number beside plain FID, on the same generated features (real statistics in
    memory, as in the trainer's repeated evaluations)."""
    from engines.metrics.fid import fid_from_features, real_statistics
    from engines.metrics.kid import kid_and_interval
    from engines.metrics.prdc import prdc
    from engines.metrics.small_n import WeightedFID, fid_infinity, fid_interval
    from engines.metrics.inception import resolve_device

    dev = resolve_device(device)
    stats = real_statistics(real.key, tuple(real.images.shape[-2:]), lambda: None, name=real.name, device=dev)
    rows = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        value = fn()
        rows[name] = {"seconds": time.perf_counter() - t0, "value": value}
        return value

    fid = timed("FID (plain)", lambda: fid_from_features(fake, stats, dev))
    timed("KID (100 subsets)", lambda: kid_and_interval(stats.features, fake, device=dev, replicates=0)[0])
    timed("KID + 95% interval", lambda: kid_and_interval(stats.features, fake, device=dev)[2])
    wf = timed("FID: half-sample setup", lambda: WeightedFID(fake, stats, dev))
    rows["FID: half-sample setup"]["value"] = None
    timed("FID 95% interval (100 halves)", lambda: fid_interval(fake, stats, fid, device=dev, weighted=wf))
    timed("FID∞ (15 points)", lambda: fid_infinity(fake, stats, device=dev, weighted=wf).value)
    timed("precision + recall (k=3)", lambda: prdc(stats.features, fake, ("precision", "recall"), device=dev))
    timed("density + coverage (k=5)", lambda: prdc(stats.features, fake, ("density", "coverage"), device=dev))
    return rows


def child_write(args) -> None:
    """The generated images as PNGs (exactly the batches evaluate_generator sees), and the real set."""
    from engines.data.prepare import load_dataset
    from engines.data.images import to_pil_list
    from engines.metrics.evaluate import _generated

    sample_fn = make_generator()
    t0 = time.perf_counter()
    i = 0
    for batch in _generated(sample_fn, args.n, args.batch_size, 0):
        for im in to_pil_list(batch):
            im.save(Path(args.fake_dir) / f"{i:05d}.png")
            i += 1
    fake_s = time.perf_counter() - t0
    real = load_dataset(args.real, size=128, progress=False)
    for j, im in enumerate(to_pil_list(real.images)):
        im.save(Path(args.real_dir) / f"{j:05d}.png")
    print("RESULT " + json.dumps({"write_fake_seconds": fake_s, "n_real": len(real.images)}))


def run_child(cmd: list[str], env: dict) -> tuple[dict | str, float]:
    """Run a process; return (its RESULT json, or its stdout, and its wall seconds)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({p.returncode}):\n{p.stderr[-3000:]}")
    m = re.search(r"^RESULT (.*)$", p.stdout, re.M)
    return (json.loads(m.group(1)) if m else p.stdout), wall


# the pytorch-fid CLI run in a shim that reports the peak RSS of the process and of its loader workers
_CLI_SHIM = (
    "import resource, runpy, sys; sys.argv = ['pytorch_fid'] + sys.argv[1:]\n"
    "try:\n    runpy.run_module('pytorch_fid', run_name='__main__')\n"
    "finally:\n    r = resource.getrusage\n"
    "    print('RSS', r(resource.RUSAGE_SELF).ru_maxrss / 1024, r(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="generated images (default 2000)")
    ap.add_argument("--real", default=str(ROOT.parent / "shared" / "datasets" / "pokemon" / "dreamworld-256"))
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-cli", action="store_true", help="only time pokelab's route")
    ap.add_argument("--no-extras", dest="extras", action="store_false",
                    help="skip timing the intervals, FID∞ and precision/recall/density/coverage")
    ap.add_argument("--child", choices=["ours", "write"], help=argparse.SUPPRESS)
    ap.add_argument("--twice", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fake-dir", help=argparse.SUPPRESS)
    ap.add_argument("--real-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "ours":
        return child_ours(args)
    if args.child == "write":
        return child_write(args)

    env = dict(os.environ)
    env.setdefault("TORCH_HOME", str(ROOT.parent / "shared" / "torch-home"))
    me = [sys.executable, str(Path(__file__).resolve()), "--n", str(args.n), "--real", args.real,
          "--batch-size", str(args.batch_size), "--device", args.device] + ([] if args.extras else ["--no-extras"])
    # prepare the real set once (engines.data.prepare's own cache), outside every timing
    subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from engines.data.prepare import "
                    "load_dataset; load_dataset(sys.argv[2], size=128, progress=False)", str(ROOT), args.real],
                   check=True, env=env)
    with tempfile.TemporaryDirectory(prefix="fid-speed-") as tmp:
        stats_env = dict(env, POKELAB_CACHE=str(Path(tmp) / "cache"))
        # a fresh statistics cache; the prepared-dataset cache is linked in so the real set is not re-decoded
        data_cache = Path(env.get("POKELAB_CACHE") or Path.home() / ".cache" / "pokelab") / "datasets"
        (Path(tmp) / "cache").mkdir()
        if data_cache.exists():
            os.symlink(data_cache, Path(tmp) / "cache" / "datasets")
        rows = []
        print(f"n={args.n} generated 128x128 vs {args.real} ({args.device}, batch {args.batch_size}) ...", flush=True)
        first, wall1 = run_child(me + ["--child", "ours", "--twice"], stats_env)
        rows.append(("ours, first call (stats computed)", first["call1"]["seconds"], wall1, first["call1"]["rss_mb"],
                     first["call1"]["fid"], first["call1"]["kid"]))
        rows.append(("ours, repeated call (same process)", first["call2"]["seconds"], None, first["call2"]["rss_mb"],
                     first["call2"]["fid"], first["call2"]["kid"]))
        again, wall3 = run_child(me + ["--child", "ours"], stats_env)
        rows.append(("ours, new process (disk cache)", again["call1"]["seconds"], wall3, again["call1"]["rss_mb"],
                     again["call1"]["fid"], again["call1"]["kid"]))
        cli_fid = None
        if not args.skip_cli:
            fake_dir, real_dir = Path(tmp) / "fake", Path(tmp) / "real"
            fake_dir.mkdir()
            real_dir.mkdir()
            wrote, _ = run_child(me + ["--child", "write", "--fake-dir", str(fake_dir), "--real-dir", str(real_dir)],
                                    env)
            cli = [sys.executable, "-c", _CLI_SHIM, str(fake_dir), str(real_dir),
                   "--batch-size", str(min(args.batch_size, args.n, wrote["n_real"]))]
            if args.device != "auto":
                cli += ["--device", args.device]
            out, wall_cli = run_child(cli, env)
            rss_self, rss_workers = map(float, re.search(r"^RSS (\S+) (\S+)", out, re.M).groups())
            rss_cli = rss_self + rss_workers  # loader workers run beside the main process
            cli_fid = float(re.search(r"FID:\s+([0-9.eE+-]+)", out).group(1))
            cli_total = wall_cli + wrote["write_fake_seconds"]
            rows.append(("pytorch-fid CLI (PNG write + CLI)", cli_total, wall_cli, rss_cli, cli_fid, None))

    print(f"\n{'route':<38} {'eval s':>8} {'proc s':>8} {'peak RSS MB':>12} {'FID':>12} {'KID':>10}")
    for name, sec, wall, rss, fid, kid in rows:
        print(f"{name:<38} {sec:8.1f} {'' if wall is None else f'{wall:.1f}':>8} {rss:12.0f} {fid:12.4f} "
              f"{'' if kid is None else f'{kid:.5f}':>10}")
    if cli_fid is not None:
        ours = rows[0][4]
        print(f"\nFID relative difference vs pytorch-fid CLI: {abs(ours - cli_fid) / abs(cli_fid):.2e}")
        print(f"speed-up of a repeated evaluation vs the CLI route: {rows[3][1] / rows[1][1]:.1f}x (same process), "
              f"{rows[3][1] / rows[2][2]:.1f}x (new process, whole process time)")
    print("eval s: time inside evaluate_generator (sampling included); proc s: the whole process (imports, "
          "model load). CLI route eval s = writing the generated PNGs + the CLI process.")
    if first.get("extras"):
        plain = first["extras"]["FID (plain)"]["seconds"]
        print(f"\nbeside plain FID, on the same {args.n} generated features (same process, real statistics in memory; "
              f"the Inception passes of a repeated call took {first['call2']['seconds']:.1f} s):")
        print(f"{'number':<32} {'seconds':>8} {'x plain FID':>11}  value")
        for name, row in first["extras"].items():
            v = row["value"]
            shown = ("" if v is None else f"{v[0]:.4g} .. {v[1]:.4g}" if isinstance(v, list) else
                     ", ".join(f"{k} {x:.4f}" for k, x in v.items()) if isinstance(v, dict) else f"{v:.5g}")
            print(f"{name:<32} {row['seconds']:8.2f} {row['seconds'] / plain:11.1f}  {shown}")


if __name__ == "__main__":
    main()
