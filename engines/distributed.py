"""Data-parallel training under torchrun: one process per device (docs/training.md, "Several GPUs or machines";
docs/decisions.md, "Data parallelism without DDP").

Why not ``DistributedDataParallel``: DDP all-reduces gradients from hooks that fire inside ``backward()``. That
breaks on StyleGAN2's R1 and path-length penalties (a second backward through ``create_graph`` gradients) and on
GAN steps that run a net twice (reals and fakes through D) or backward twice before one step. As
stylegan2-ada-pytorch's training loop does, the gradients of one optimiser phase are flattened into one buffer
and all-reduced once, just before the step: ``sync_gradients``, called by ``Engine`` for every optimiser step
(engines/base.py), so every engine, present and future, is synchronised through the same contract.

Everything else the ranks must agree on also goes through this module:
- identical initial weights: ``broadcast_state`` (rank 0's parameters and buffers);
- BatchNorm statistics over the global batch: ``convert_batchnorm`` (``SyncBatchNorm1d/2d/3d``, which also run
  on a CPU with Gloo, unlike ``torch.nn.SyncBatchNorm``);
- host-side decisions and objects: ``any_flag``, ``main_decides``, ``broadcast_object``, ``gather_object``,
  ``raise_together``; tensors: ``all_reduce_``, ``all_reduce_mean``.

One process group serves both: CPU tensors and pickled objects go through Gloo, CUDA tensors (gradients,
BatchNorm sums, evaluation features) through NCCL (``"cpu:gloo,cuda:nccl"``); a CPU run uses Gloo throughout.
Without torchrun (``WORLD_SIZE`` unset or 1) every function here is a no-op and nothing changes.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

#: how long a collective may wait for the other ranks: rank 0 alone writes grids, exports and checkpoints and runs
#: translation metrics while the others wait in their next collective (NCCL's own default is 10 minutes)
DEFAULT_TIMEOUT_MINUTES = 60.0
BACKENDS = ("auto", "nccl", "gloo")
#: how often (optimiser steps) the ranks check that they hold gradients for the same parameters (a host-side
#: Gloo exchange of one number; the first few steps are always checked)
GRAD_PATTERN_CHECK_EVERY = 64


@dataclass
class Dist:
    """Where this process stands: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False  # this module initialised the process group, so it also destroys it

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_SINGLE = Dist()
_current: Dist = _SINGLE
_grad_checks: dict[str, int] = {}


def current() -> Dist:
    return _current


def world_size() -> int:
    return _current.world


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a whole number (torchrun sets it)") from None


def launched_world() -> int:
    """WORLD_SIZE as torchrun set it (1 without torchrun)."""
    return max(_env_int("WORLD_SIZE", 1), 1)


def launched_rank() -> int:
    return _env_int("RANK", 0)


def backend_for(device: torch.device, choice: str = "auto") -> str:
    """The process group's backend string for a device: NCCL for CUDA tensors and Gloo for host-side traffic
    ('cpu:gloo,cuda:nccl'), or Gloo alone (a CPU run, or ``dist_backend=gloo`` on GPUs)."""
    choice = (choice or "auto").lower()
    if choice not in BACKENDS:
        raise ValueError(f"dist_backend must be one of {', '.join(BACKENDS)}, not {choice!r}")
    if choice == "gloo":
        return "gloo"
    if device.type == "cuda":
        return "cpu:gloo,cuda:nccl"
    if choice == "nccl":
        raise ValueError("dist_backend=nccl needs CUDA devices; this run trains on the CPU (use gloo or auto)")
    return "gloo"


def launched_device(name: str = "auto") -> torch.device:
    """The device of this process under torchrun: cuda:LOCAL_RANK when it trains on CUDA, else the CPU."""
    local = _env_int("LOCAL_RANK", 0)
    name = (name or "auto").lower()
    if name.startswith("cuda:"):
        raise ValueError(f"device={name!r} names one GPU, but under torchrun each process takes cuda:LOCAL_RANK; "
                         "use device=cuda (or auto)")
    if name == "mps":
        raise ValueError("device=mps cannot train with several processes; use torchrun on CUDA GPUs or CPUs")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    if local >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} CUDA device(s): "
                         "start at most one process per GPU (torchrun --nproc_per_node)")
    return torch.device("cuda", local)


def init(device_name: str = "auto", backend: str = "auto",
         timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> tuple[Dist, torch.device | None]:
    """Join the torchrun job (idempotent). Returns (Dist, device); the device is None without torchrun (the
    caller picks one as before). A process group someone else initialised is used as it is and left alone."""
    global _current
    world = launched_world()
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return _SINGLE, None
    if _current.active:
        return _current, launched_device(device_name)
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    device = launched_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        be = backend_for(device, backend)
        dist.init_process_group(backend=be, timeout=datetime.timedelta(minutes=float(timeout_minutes)))
        owns = True
    else:
        be = str(dist.get_backend())
    _current = Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=_env_int("LOCAL_RANK", 0),
                    backend=be, owns_group=owns)
    _grad_checks.clear()
    return _current, device


def shutdown() -> None:
    """Leave the job: destroy the process group if this module created it (every exit path of a run calls
    this; a second call does nothing)."""
    global _current
    d, _current = _current, _SINGLE
    if d.owns_group and dist.is_available() and dist.is_initialized():
        try:
            # every rank leaves together: a rank that tears Gloo down while a peer still talks to it can make the
            # peer's Gloo thread abort that process at exit ("terminate called without an active exception");
            # bounded, so a peer that died first costs seconds, not a hang
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=10))
        except Exception:  # noqa: BLE001 — a dead peer, or a backend without monitored barriers
            pass
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 — a peer that died first must not turn an exit into a traceback
            pass


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random streams (latents, augmentation, noise): rank 0 keeps ``seed``, so a
    run's rank 0 draws what a one-process run draws; the others get independent streams of (seed, rank)."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) % 2**63, int(rank)]).generate_state(1, np.uint64)[0] >> 1)


# ---- host-side agreement (Gloo, CPU tensors) ---------------------------------------------------------------
def any_flag(flag: bool) -> bool:
    """True on every rank if it is true on any (e.g. a SIGINT that reached one process)."""
    if not _current.active:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def main_decides(flag: bool) -> bool:
    """Rank 0's value of a decision on every rank (clock-based ones: budgets, checkpoint cadence)."""
    if not _current.active:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.broadcast(t, src=0)
    return bool(t.item())


def broadcast_object(obj: Any = None) -> Any:
    """Rank 0's object on every rank (pickled between the job's own processes; files are never unpickled)."""
    if not _current.active:
        return obj
    box = [obj if _current.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_object(obj: Any) -> list[Any] | None:
    """Every rank's object, in rank order, on rank 0 (None elsewhere)."""
    if not _current.active:
        return [obj]
    out = [None] * _current.world if _current.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_gather_object(obj: Any) -> list[Any]:
    if not _current.active:
        return [obj]
    out: list[Any] = [None] * _current.world
    dist.all_gather_object(out, obj)
    return out


def raise_together(error: BaseException | str | None, exc_type: type[Exception] = RuntimeError) -> None:
    """Collective error check: when any rank has an error, every rank raises (``exc_type``, the first rank's
    message), so no rank is left waiting in a collective the others never reach."""
    if not _current.active:
        if isinstance(error, BaseException):
            raise error
        if error:
            raise exc_type(str(error))
        return
    msgs = all_gather_object(None if error is None else str(error))
    bad = [(r, m) for r, m in enumerate(msgs) if m is not None]
    if not bad:
        return
    if isinstance(error, BaseException) and bad[0][0] == _current.rank:
        raise error
    r, m = bad[0]
    raise exc_type(m if r == 0 else f"rank {r}: {m}")


def barrier() -> None:
    """Wait for every rank (a host-side exchange of one number over Gloo)."""
    any_flag(False)


@contextlib.contextmanager
def local_main_first():
    """The block runs on each machine's LOCAL_RANK 0 first, then on its other ranks (e.g. preparing the dataset
    cache once per machine instead of every process racing to write it)."""
    early = not _current.active or _current.local_rank == 0
    if not early:
        barrier()
    yield
    if early and _current.active:
        barrier()


# ---- tensors -----------------------------------------------------------------------------------------------
def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place across ranks (sum or max); returns ``t``."""
    if _current.active:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean over ranks (a new tensor; the input is left alone)."""
    if not _current.active:
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out / _current.world


def broadcast_state(module: nn.Module, skip: Iterable[str] = ()) -> None:
    """Rank 0's parameters and persistent buffers into every rank's module (``skip``: state-dict keys of frozen,
    pretrained networks that every rank loads from the same file)."""
    if not _current.active:
        return
    skip = set(skip)
    with torch.no_grad():
        for k, t in module.state_dict(keep_vars=True).items():
            if k in skip or not torch.is_tensor(t):
                continue
            t = t.data if isinstance(t, nn.Parameter) else t
            if t.is_contiguous():
                dist.broadcast(t, src=0)
            else:  # channels_last weights: send a packed copy
                c = t.contiguous()
                dist.broadcast(c, src=0)
                t.copy_(c)


def sync_gradients(name: str, opt: torch.optim.Optimizer) -> None:
    """Average the gradients of one optimiser over the ranks, in one flattened all-reduce (stylegan2-ada's way).

    Parameters without a gradient keep none (Adam must skip them, as in one process); the ranks must agree on
    which those are, which they do by construction (the same code on the same schedule) and which is checked
    on the first steps and every GRAD_PATTERN_CHECK_EVERY-th step afterwards."""
    if not _current.active:
        return
    params = [p for g in opt.param_groups for p in g["params"]]
    have = [p for p in params if p.grad is not None]
    n = _grad_checks.get(name, 0)
    _grad_checks[name] = n + 1
    if n < 4 or n % GRAD_PATTERN_CHECK_EVERY == 0:
        pattern = hash(tuple(p.grad is not None for p in params)) & 0x7FFFFFFF
        t = torch.tensor([pattern, -pattern], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if int(t[0]) != -int(t[1]):
            raise RuntimeError(f"optimiser {name!r}: the ranks computed gradients for different parameters; an "
                               "engine's train_step must take the same path on every rank")
    if not have:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in have])
    dist.all_reduce(flat)
    flat /= _current.world
    for p, g in zip(have, flat.split([p.numel() for p in have])):
        p.grad.copy_(g.view(p.grad.shape))  # copy_ keeps each gradient's own memory format (channels_last)


# ---- BatchNorm over the global batch -------------------------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """A sum over ranks that gradients flow through: the backward of a sum is the sum of every rank's incoming
    gradient (each rank's loss depends on every rank's input through the shared statistics)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _all_reduce_with_grad(t: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(t)


class _SyncBatchNorm:
    """Training-mode BatchNorm whose batch statistics are those of every rank's batch together (two
    all-reduces: the sums, then the squared deviations from the global mean, as a one-process BatchNorm
    computes them). Gradients flow through the all-reduces, so d(loss)/d(x) includes every rank's terms, as
    in one process. Eval mode, and one process, are the parent class unchanged. Same state-dict keys as the
    parent, so checkpoints and exports do not change."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not (self.training and _current.active):
            return super().forward(x)  # type: ignore[misc]
        self._check_input_dim(x)  # type: ignore[attr-defined]
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = (x.numel() // x.shape[1]) * _current.world  # every rank holds the same number of rows
        if count <= 1:
            raise ValueError(f"BatchNorm over {count} value per channel: use a larger batch")
        mean = _all_reduce_with_grad(xf.sum(dims)) / count
        centred = xf - mean.view(shape)
        var = _all_reduce_with_grad(centred.square().sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_((var.detach() * count / (count - 1)).to(self.running_var.dtype), factor)
        return y.to(x.dtype)


class SyncBatchNorm1d(_SyncBatchNorm, nn.BatchNorm1d):
    pass


class SyncBatchNorm2d(_SyncBatchNorm, nn.BatchNorm2d):
    pass


class SyncBatchNorm3d(_SyncBatchNorm, nn.BatchNorm3d):
    pass


_SYNCED = {nn.BatchNorm1d: SyncBatchNorm1d, nn.BatchNorm2d: SyncBatchNorm2d, nn.BatchNorm3d: SyncBatchNorm3d}


def convert_batchnorm(module: nn.Module) -> int:
    """Turn the trainable BatchNorm layers of ``module`` into SyncBatchNorm (in place: the same parameters and
    buffers, so optimisers and state dicts are untouched). Frozen ones (a pretrained feature network in eval
    mode, parameters without grad) are left alone. Returns how many were converted."""
    n = 0
    for m in module.modules():
        cls = _SYNCED.get(type(m))
        if cls is None:
            if isinstance(m, _BatchNorm) and not isinstance(m, (_SyncBatchNorm, nn.SyncBatchNorm)):
                raise ValueError(f"{type(m).__name__} is a BatchNorm that cannot be synchronised across ranks")
            continue
        if m.affine and not any(p.requires_grad for p in m.parameters()):
            continue
        m.__class__ = cls
        n += 1
    return n


# ---- distributed evaluation: each rank embeds its share of the batches ---------------------------------------
def gather_batches(*per_batch: list, error: BaseException | None = None) -> tuple[list, ...] | None:
    """Each argument: this rank's per-batch results (CPU tensors or arrays) for batches rank, rank + world, ...
    (engines.metrics.evaluate shards them so), in order. Rank 0
    gets every list back in the global batch order (batch b came from rank b % world); the other ranks get
    None. An error on any rank is raised on every rank (``raise_together``) before anything is sent."""
    raise_together(error, RuntimeError)
    if not _current.active:
        return per_batch
    got = gather_object(list(per_batch))
    if got is None:
        return None
    out = []
    w = _current.world
    for i in range(len(per_batch)):
        lists, merged = [g[i] for g in got], []
        # batch b is rank b % w's (b // w)-th; a list may stop early (a capped pool): the merge stops at the
        # first batch missing, so what comes back is always a prefix of the one-process order
        for b in range(sum(len(x) for x in lists)):
            if b // w >= len(lists[b % w]):
                break
            merged.append(lists[b % w][b // w])
        out.append(merged)
    return tuple(out)
