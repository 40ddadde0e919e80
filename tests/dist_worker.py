"""Entry point of the processes tests/test_distributed.py starts with torchrun (not a test module).

    python tests/dist_worker.py cli ARGS...      `pokelab ARGS...`, with the test hooks below
    python tests/dist_worker.py fid OUT.json     a distributed evaluation of a fixed fake generator

Hooks (environment variables):
- DIST_TEST_SHARED_RNG=1: every torch.randn/rand/randn_like draw in training is taken from one generator shared
  by all ranks, at world x its size, and each rank keeps its own slice of rows: world 2 x batch b then sees exactly
  the random numbers world 1 x batch 2b sees, so the two runs can be compared number for number.
- DIST_TEST_KILL=RANK:STEP[:SIGNAL]: that rank sends itself SIGNAL (default SIGKILL, i.e. kill -9) just before
  its STEP-th training step of this process.
- DIST_TEST_NAN=RANK:STEP: that rank's STEP-th step reports a NaN loss (a divergence only one rank sees).
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines import trainer as trainer_mod  # noqa: E402


def shared_rng(world: int, rank: int, seed: int = 1234) -> list[bool]:
    gen = torch.Generator().manual_seed(seed)
    active = [False]
    orig = {name: getattr(torch, name) for name in ("randn", "rand")}

    def make(name):
        f = orig[name]

        def draw(*size, generator=None, device=None, dtype=None, **kw):
            if not active[0] or generator is not None:
                return f(*size, generator=generator, device=device, dtype=dtype, **kw)
            shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
            if not shape:  # a scalar decision: the same on every rank
                return f((), generator=gen, dtype=dtype).to(device or "cpu")
            full = f((shape[0] * world, *shape[1:]), generator=gen, dtype=dtype)
            return full[rank * shape[0]:(rank + 1) * shape[0]].to(device or "cpu")
        return draw

    torch.randn, torch.rand = make("randn"), make("rand")
    randn = torch.randn
    torch.randn_like = lambda t, **kw: randn(*t.shape, device=t.device, dtype=kw.get("dtype", t.dtype))
    return active


def main() -> int:
    mode, args = sys.argv[1], sys.argv[2:]
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    active = shared_rng(world, rank) if os.environ.get("DIST_TEST_SHARED_RNG") else [False]
    kill, nan = os.environ.get("DIST_TEST_KILL"), os.environ.get("DIST_TEST_NAN")
    real_fit = trainer_mod.Trainer._fit

    def _fit(self):
        active[0] = True  # weights are made (and broadcast) from the ordinary RNG; only training draws are shared
        k_rank, k_step, *sig = (kill or nan or "-1:0").split(":")
        if self.rank == int(k_rank):
            step, calls = self.engine.train_step, [0]

            def hooked_step(batch):
                calls[0] += 1
                if calls[0] == int(k_step) and kill:
                    os.kill(os.getpid(), getattr(signal, sig[0]) if sig else signal.SIGKILL)
                out = step(batch)
                if calls[0] == int(k_step) and nan:
                    out = {**out, "loss/D": torch.tensor(float("nan"))}
                return out
            self.engine.train_step = hooked_step
        return real_fit(self)
    trainer_mod.Trainer._fit = _fit

    if mode == "cli":
        from engines.cli import main as cli_main

        return cli_main(args)
    if mode == "fid":
        return fid(Path(args[0]))
    raise SystemExit(f"unknown mode {mode!r}")


def fake_sampler(k: int, seed: int) -> torch.Tensor:
    """A stand-in generator: smooth random pictures that depend on the seed alone."""
    g = torch.Generator().manual_seed(int(seed))
    low = torch.rand(k, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)


def real_set():
    import types

    g = torch.Generator().manual_seed(7)
    low = torch.rand(24, 3, 4, 4, generator=g)
    imgs = (torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False) * 255).to(torch.uint8)
    return types.SimpleNamespace(images=imgs, key="dist-test-real", name="dist-test-real", files=None)


EVAL = dict(n=36, batch_size=5, metrics="fid,kid,ms_ssim,novelty", seed=11, kid_subsets=10, kid_subset_size=12,
            pairs=40, diversity_pool=23)


def fid(out: Path) -> int:
    from engines import distributed
    from engines.metrics import evaluate_generator

    distributed.init("cpu")
    try:
        res = evaluate_generator(fake_sampler, real_set(), device="cpu", shard=True, **EVAL)
        if distributed.current().is_main:
            out.write_text(json.dumps(res))
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
