"""The generic trainer: everything common to all engines (docs/training.md).

Epochs over a preloaded uint8 tensor (on the GPU when there is one), augmentation, mixed precision,
per-epoch logging with a single host sync, fixed-latent sample grids, metric cadence, atomic
checkpoints, exact resume (also after kill -9), SIGINT/SIGTERM, a NaN guard and a progress bar.

Several processes (torchrun; engines/distributed.py, docs/training.md): every file write goes through rank 0
(``self.is_main``); ``epoch_indices`` gives each rank its slice of every global batch; engines average their
gradients over the ranks at each optimiser step (engines/base.py); decisions that could differ between ranks
(a signal, the clock, the NaN guard's verdict, epoch scalars) are agreed before anyone acts on them; checkpoints
hold every rank's RNG and per-rank state, gathered to rank 0.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .augment import build_augment
from . import distributed
from .config import TrainConfig, apply_resume_overrides, mark_explicit
from .eval_cadence import EvalCadence, explicit_from_info, probe_eval_seconds
from .runs.export import ExportError, read_export_config, save_export
from .data.images import from_uint8, save_grid
from .logsinks import LogSinks, check_available as check_sinks
from .registry import get_engine
from .runs.folder import (RunFormatError, RunLock, RunWriter, atomic_write_bytes, check_info, check_run_files,
                          best_dir, checkpoint_path, clean_orphans, create_run_dir, export_dir, make_run_id, read_info,
                          replace_best, sample_path)

CHECKPOINT_VERSION = 1
#: run.json's progress fields (epoch, step, wall_seconds) are rewritten at most this often, and at every checkpoint,
#: sample and evaluation epoch and at the end: each rewrite is a read, a write and an fsync (docs/training.md)
PROGRESS_SECONDS = 30.0


class TrainingError(RuntimeError):
    pass


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise TrainingError("device 'cuda' was asked for but CUDA is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def batches_per_epoch(n: int, batch_size: int, rank: int = 0, world: int = 1) -> int:
    """Full global batches of ``batch_size`` per epoch (the remainder is dropped): the same on every rank."""
    return n // batch_size


def epoch_indices(n: int, seed: int, epoch: int, batch_size: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """This rank's batches for one epoch: a permutation derived from (seed, epoch) alone, so a resumed
    run sees exactly the batches it would have seen; incomplete last batches are dropped.

    ``batch_size`` is the global batch: with ``world`` ranks, rank r gets rows [r*b, (r+1)*b) of every global
    batch (b = batch_size / world), so the ranks together see, step by step, exactly the batches one process
    would (a distributed sampler that keeps the seeded epoch order; resume and world-size changes keep it)."""
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} does not divide over {world} processes")
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=g)
    b = batch_size // world
    return [perm[i * batch_size + rank * b:i * batch_size + (rank + 1) * b]
            for i in range(batches_per_epoch(n, batch_size, rank, world))]


def check_batch_split(batch_size: int, world: int, batch_gpu: int, engine_cls) -> int:
    """How many micro-batches each rank runs per step (1: none); a batch that does not divide is a clear error."""
    if batch_size % world:
        raise TrainingError(f"--batch-size {batch_size} does not divide over {world} processes (WORLD_SIZE): the "
                            f"batch is the global one, each process trains on batch / {world}; use a multiple "
                            f"of {world}")
    per_rank = batch_size // world
    if not batch_gpu or batch_gpu >= per_rank:
        if batch_gpu > per_rank:
            raise TrainingError(f"batch_gpu={batch_gpu} is larger than each process's share of the batch "
                                f"({batch_size} / {world} = {per_rank})")
        return 1
    if per_rank % batch_gpu:
        raise TrainingError(f"batch_gpu={batch_gpu} does not divide each process's share of the batch "
                            f"({batch_size} / {world} = {per_rank}); choose a divisor of {per_rank}")
    if not getattr(engine_cls, "supports_batch_gpu", False):
        from .registry import get_engine, list_engines

        able = [n for n in list_engines() if getattr(get_engine(n), "supports_batch_gpu", False)]
        raise TrainingError(f"engine {engine_cls.name!r} cannot split its batch into micro-batches (batch_gpu): "
                            f"its optimiser steps share forward passes; engines that can: {', '.join(able)}. "
                            f"Lower --batch-size, or add processes")
    return per_rank // batch_gpu


def _rank_state_keys(engine) -> set[str]:
    """State-dict keys of an engine's buffers: counters, running statistics and last losses may differ between
    ranks (each saw its own batch), so a checkpoint keeps every rank's own (engines/distributed.py)."""
    frozen = set(engine.frozen_state_keys())
    names = {n for n, _ in engine.named_buffers()}
    return {k for k in engine.state_dict() if k in names and k not in frozen}


def _rng_state(cuda_device: torch.device | None = None) -> dict[str, Any]:
    """The RNG states (``cuda_device``: only that GPU's, for a process that owns one GPU of several)."""
    st = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(cuda_device)] if cuda_device is not None
        else torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": st[0], "keys": torch.from_numpy(st[1].astype(np.int64)), "pos": int(st[2]),
                  "has_gauss": int(st[3]), "cached": float(st[4])},
        "python": random.getstate(),
    }


def _set_rng_state(s: dict[str, Any], cuda_device: torch.device | None = None) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and cuda_device is not None:
        torch.cuda.set_rng_state(s["cuda"][0], cuda_device)
    elif s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = s["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def _map_tensors(obj: Any, fn) -> Any:
    """``obj`` with every tensor in its dicts, lists and tuples replaced by ``fn(tensor)``."""
    if torch.is_tensor(obj):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    v = {"pokelab": __version__, "python": platform.python_version(), "torch": torch.__version__,
         "numpy": np.__version__}
    try:
        import torchvision

        v["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return v


#: bounds on run.json's config when a run is resumed (a hostile or damaged run.json must give a clear error,
#: not a traceback or a huge allocation); fields not named here only get their type checked
_CONFIG_RANGES: dict[str, tuple[float, float]] = {
    "image_size": (1, 4096), "batch_size": (1, 1 << 20), "epochs": (1, 10**9), "grid_n": (1, 4096),
    "seed": (-(2**40), 2**40), "sample_every": (0, 10**9), "eval_every": (0, 10**9), "eval_n": (0, 10**7),
    "checkpoint_every": (0, 10**9), "checkpoint_minutes": (0, 10**7), "max_hours": (0, 10**7),
    "nan_lr_factor": (0, 1), "max_nan_rollbacks": (0, 10**6), "eval_budget": (0, 1), "batch_gpu": (0, 1 << 20),
}


def config_from_info(info: dict[str, Any], where: str | os.PathLike) -> TrainConfig:
    """run.json's ``config`` as a TrainConfig, each known field checked for its type and range first:
    a RunFormatError names every wrong field (unknown keys are ignored, missing ones take their defaults)."""
    raw = info.get("config")
    if not isinstance(raw, dict):
        raise RunFormatError(f"{where}: 'config' must be an object (the training settings), not "
                             f"{type(raw).__name__ if raw is not None else 'missing'}")
    defaults = TrainConfig()
    bad = []
    for f in dataclasses.fields(TrainConfig):
        if f.name not in raw:
            continue
        v, d = raw[f.name], getattr(defaults, f.name)
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:39] + "…"
        if isinstance(d, bool):
            ok = isinstance(v, bool)
        elif isinstance(d, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif isinstance(d, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        elif isinstance(d, dict):
            ok = isinstance(v, dict)
        elif isinstance(d, str):
            ok = isinstance(v, str)
        else:  # an optional setting (augment: text or null): any plain value
            ok = v is None or isinstance(v, str) or (isinstance(v, (int, float)) and math.isfinite(v))
        if not ok:
            bad.append(f"config.{f.name} = {shown} is not {type(d).__name__ if d is not None else 'a plain value'}")
            continue
        lo, hi = _CONFIG_RANGES.get(f.name, (None, None))
        if lo is not None and not lo <= v <= hi:
            bad.append(f"config.{f.name} = {shown} is outside {lo:g}..{hi:g}")
    if bad:
        raise RunFormatError(f"{where}: {'; '.join(bad)}")
    try:
        return TrainConfig.from_dict(raw).validate()
    except (ValueError, TypeError, OverflowError) as e:
        raise RunFormatError(f"{where}: config: {e}") from None


def _removal_options(rec: dict[str, Any] | None) -> dict[str, Any]:
    """load_dataset options that redo a recorded background removal (rembg) when a run is resumed."""
    if not rec:
        return {}
    opts: dict[str, Any] = {"remove_background": True}
    if rec.get("model_path"):
        opts["rembg_model_path"] = rec["model_path"]
    elif rec.get("model"):
        opts["rembg_model"] = rec["model"]
    return opts


class Trainer:
    """``Trainer(engine_name, dataset, runs_dir, config).fit()`` or ``Trainer.resume(run_dir).fit()``.

    ``dataset`` is a PreparedDataset (engines.data.prepare) or anything with ``images`` (uint8 NCHW), ``key``,
    ``name``, ``source``; translation engines (domains == 2) take a pair ``(source_set, target_set)``.
    """

    #: the clock of the time-based checkpoint cadence and of run.json's progress updates (tests replace it)
    _clock = staticmethod(time.monotonic)

    def __init__(self, engine_name: str, dataset, runs_dir: str | os.PathLike | None, config: TrainConfig,
                 run_dir: str | os.PathLike | None = None, progress: bool | None = None,
                 _lock: RunLock | None = None, info: dict[str, Any] | None = None):
        self.cfg = config.validate()
        self.extra_info = dict(info or {})  # more run.json fields from the caller (a sweep's tag and settings)
        self.engine_cls = get_engine(engine_name)
        # under torchrun, join the job first (engines/distributed.py): each process takes cuda:LOCAL_RANK or the CPU
        self.dist, launched = distributed.init(self.cfg.device, self.cfg.dist_backend)
        self.rank, self.world = self.dist.rank, self.dist.world
        self.is_main = self.rank == 0
        self.batch_rounds = check_batch_split(self.cfg.batch_size, self.world, int(self.cfg.batch_gpu),
                                              self.engine_cls)
        if self.is_main:
            check_sinks(self.cfg)  # --set tensorboard=true without the package: say so before anything is made
        self.device = launched if launched is not None else pick_device(self.cfg.device)
        self.progress = progress
        torch.manual_seed(self.cfg.seed)
        np.random.seed(self.cfg.seed % 2**32)
        random.seed(self.cfg.seed)

        self.datasets = list(dataset) if isinstance(dataset, (tuple, list)) else [dataset]
        if len(self.datasets) != self.engine_cls.domains:
            raise TrainingError(f"engine {engine_name!r} needs {self.engine_cls.domains} dataset(s), "
                                f"got {len(self.datasets)}")
        for ds in self.datasets:
            if ds.images.dtype != torch.uint8 or ds.images.dim() != 4:
                raise TrainingError("a dataset must be a uint8 tensor [N, C, H, W]")
            if ds.images.shape[-1] != self.cfg.image_size or ds.images.shape[-2] != self.cfg.image_size:
                raise TrainingError(f"dataset {ds.name!r} holds {ds.images.shape[-1]} px images but the run asks "
                                    f"for image_size={self.cfg.image_size}; prepare it at that size")
            if len(ds.images) < self.cfg.batch_size:
                raise TrainingError(f"dataset {ds.name!r} has {len(ds.images)} images, fewer than one batch "
                                    f"({self.cfg.batch_size}); lower --batch-size")
        # preload once on the device; batches are gathered from it, no DataLoader workers needed
        self.images = [ds.images.to(self.device) for ds in self.datasets]
        self.pairing = None  # paired engines (pix2pix): the pairs by file id and the held-out split
        if getattr(self.engine_cls, "paired", False):
            from .paired import PairedSplit

            ecfg = self.engine_cls.resolve_config(self.cfg.engine)
            self.pairing = PairedSplit.from_datasets(*self.datasets, val_fraction=ecfg["val_fraction"],
                                                     split_seed=ecfg["split_seed"])
            self.images = self.pairing.train_images(*self.images)  # row i of both: pair i; only training ids
            if self.is_main:  # unpaired pictures are named here and in log.txt, never left out silently
                print(self.pairing.report(), file=sys.stderr)
            if len(self.images[0]) < self.cfg.batch_size:
                raise TrainingError(f"{len(self.images[0])} training pair(s), fewer than one batch "
                                    f"({self.cfg.batch_size}); lower --batch-size or val_fraction")

        # labelled sets (engines.labels): conditional engines get (images, labels) batches, and the vocabulary
        # in their config (labels_optional engines: conditional when given labels); anything else is refused
        self.labels = getattr(self.datasets[-1], "labels", None)
        if self.labels is not None and not (self.engine_cls.conditional or self.engine_cls.labels_optional):
            raise TrainingError(f"engine {engine_name!r} is not conditional and cannot use labels; drop --labels, "
                                f"or train a conditional engine (cgan, stylegan2_ada, projected_gan)")
        if self.engine_cls.conditional or self.labels is not None or (self.cfg.engine or {}).get("labels"):
            if self.labels is None:  # (also a labels_optional engine whose config names labels the data lacks)
                raise TrainingError(f"engine {engine_name!r} is conditional: give the labels with --labels FILE "
                                    "(a CSV with an id or file column, or a dataset.json)")
            from .labels import engine_labels

            self.cfg.engine["labels"] = engine_labels(self.cfg.engine.get("labels"), self.datasets[-1].label_spec)
            self.labels = self.labels.to(self.device)
            if hasattr(self.engine_cls, "config_for_data"):  # what else the data decides (stackgan: captions, words)
                self.cfg.engine = self.engine_cls.config_for_data(self.cfg.engine, self.datasets[-1])
        self.engine = self.engine_cls(self.cfg.engine, self.cfg.image_size, training=True)
        if self.labels is not None and hasattr(self.engine, "batch_conditions"):
            # per-image rows the steps get in place of the multi-hot labels (stackgan: each image's captions)
            self.labels = self.engine.batch_conditions(self.datasets[-1]).to(self.device)
        self.cfg.engine = dict(self.engine.config)  # record the fully resolved engine config
        aug_name = self.cfg.augment or self.engine_cls.default_augment
        augment = build_augment(aug_name, **(self.cfg.augment_options or {}))
        self.engine.setup(self.device, amp=self.cfg.amp, augment=augment, cpu_amp=self.cfg.cpu_amp,
                          channels_last=self.cfg.channels_last)
        # upscaling engines: a seeded held-out split stays out of training, for their metrics and grids
        self.heldout = None
        if self.engine_cls.kind == "upscale":
            train_idx, val_idx = self.engine.heldout_split(len(self.images[0]))
            if len(val_idx):
                self.heldout = self.images[0].index_select(0, val_idx.to(self.device))
            self.images = [self.images[0].index_select(0, train_idx.to(self.device))]
            if len(self.images[0]) < self.cfg.batch_size:
                raise TrainingError(f"{len(self.images[0])} training picture(s) after holding out "
                                    f"{len(val_idx)}, fewer than one batch ({self.cfg.batch_size}); lower "
                                    "--batch-size or val_fraction")

        self.engine.world_size, self.engine.batch_rounds = self.world, self.batch_rounds
        if self.batch_rounds > 1:
            norms = sorted({n.split(".")[0] for n, m in self.engine.named_modules()
                            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                            and any(p.requires_grad for p in m.parameters())})
            if norms:  # micro-batches would each be normalised with their own statistics: not the batch's step
                raise TrainingError(f"batch_gpu={self.cfg.batch_gpu}: {engine_name}'s {', '.join(norms)} use "
                                    "BatchNorm, which would normalise each micro-batch on its own statistics "
                                    "(a different step from the whole batch's); lower --batch-size or add processes")
        self.synced_batchnorms = 0
        if self.dist.active:
            # one model on every rank: BatchNorm statistics of the global batch, rank 0's initial weights; then
            # each rank's own random streams (latents, augmentation, noise), rank 0 keeping the one-process stream
            self.synced_batchnorms = distributed.convert_batchnorm(self.engine)
            distributed.broadcast_state(self.engine, skip=self.engine.frozen_state_keys())
            if self.rank:
                s = distributed.rank_seed(self.cfg.seed, self.rank)
                torch.manual_seed(s)
                np.random.seed(s % 2**32)
                random.seed(s)

        self.epoch = 0               # last completed epoch
        self.step = 0
        self.batch_in_epoch = 0      # > 0 only when resuming a run stopped mid-epoch
        self.accum: dict[str, list] = {}
        self.nan_rollbacks = 0
        self.wall_seconds = 0.0
        self.epoch_partial_seconds = 0.0  # training time of an epoch interrupted mid-way, before the resume
        self._stop = threading.Event()
        self._stopping = False  # the stop every rank agreed on at the last check (_stop_agreed)
        self._eval_warnings: set[str] = set()
        # when to evaluate: the protocol's epochs, kept within eval_budget of the run's time off CUDA
        self.eval_plan = EvalCadence.plan(
            self.cfg, self.engine_cls, self.device.type, self.world, note=self._eval_note,
            probe=lambda: probe_eval_seconds(self.engine, self.datasets[-1], self.eval_plan.eval_n, self.device,
                                             self.cfg.seed + 1_000_000))
        self._last_checkpoint = self._clock()  # when the last checkpoint was written (or loaded)
        self._last_progress = self._clock()    # when run.json's progress fields were last written

        # one run per folder: a new run gets a folder of its own (created atomically; the id gets a suffix when
        # taken) and every trainer holds the run's lock (RunLock) from here until fit() returns
        self._lock = _lock
        self.orphans_removed: list[str] = []
        self.writer = None
        self.sinks: LogSinks | None = None  # TensorBoard / W&B mirrors, opened by fit() on the main rank
        if run_dir is None:
            if runs_dir is None:
                raise TrainingError("runs_dir or run_dir is required")
            if self.is_main:
                run_dir = create_run_dir(runs_dir, make_run_id(engine_name, "-to-".join(d.name for d in self.datasets)))
            run_dir = distributed.broadcast_object(str(run_dir) if run_dir is not None else None)  # rank 0's folder
        self.run_dir = Path(run_dir)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._own()
            self.writer = RunWriter(self.run_dir)

    # ---- owning the run folder --------------------------------------------------------------
    def _own(self) -> None:
        """Take the run's lock (a second owner gets RunLockedError naming the holder's PID), refuse run files
        that are links or FIFOs, and remove temp files a kill -9 left behind (safe: no one else writes)."""
        if not self.is_main:
            return
        if self._lock is not None and self._lock.held and getattr(self, "_checked", False):
            return
        self._lock = (self._lock or RunLock(self.run_dir)).acquire()
        try:
            check_run_files(self.run_dir)
            self.orphans_removed = clean_orphans(self.run_dir)
        except BaseException:
            self.close()
            raise
        self._checked = True

    def close(self) -> None:
        """Release the run's lock (fit() does this on every exit path; also after a failed resume)."""
        self._checked = False
        if self._lock is not None:
            self._lock.release()

    # ---- creation and resume ------------------------------------------------------------
    def _run_info(self) -> dict[str, Any]:
        dev = str(self.device)
        if self.device.type == "cuda":
            dev += f" ({torch.cuda.get_device_name(self.device)})"
        return {
            "run_id": self.run_dir.name,
            "engine": self.engine_cls.name,
            "kind": self.engine_cls.kind,
            "status": "running",
            "config": self.cfg.to_dict(),
            "protocol_notes": self.engine_cls.protocol_notes,
            "dataset": [self._dataset_info(d) for d in self.datasets] if len(self.datasets) > 1
            else self._dataset_info(self.datasets[0]),
            "versions": _versions(),
            "git_commit": _git_commit(),
            "device": dev,
            "world_size": self.world,  # processes (torchrun); resume needs the same number
            **({"distributed": {"backend": self.dist.backend, "batch_per_process": self.cfg.batch_size // self.world,
                                "micro_batches": self.batch_rounds, "synced_batchnorms": self.synced_batchnorms}}
               if self.dist.active else {}),
            "amp": str(self.engine.amp_dtype).replace("torch.", "") if self.engine.amp_dtype else None,
            "memory_format": "channels_last" if self.engine.channels_last else "contiguous",
            **({"engine_info": info} if (info := self.engine.run_info()) else {}),
            **({"pairing": self.pairing.record()} if self.pairing is not None else {}),
            **self.extra_info,
            "command": " ".join(sys.argv),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "epoch": 0, "step": 0, "wall_seconds": 0.0,
            "eval_cadence": self.eval_plan.summary(0.0),
        }

    @staticmethod
    def _dataset_info(ds) -> dict[str, Any]:
        return {"name": ds.name, "key": ds.key, "count": int(len(ds.images)), "size": int(ds.images.shape[-1]),
                "source": str(getattr(ds, "source", "")), "background": getattr(ds, "background", None),
                "skipped": len(getattr(ds, "skipped", []) or []),
                "background_removal": getattr(ds, "background_removal", None),
                **({"labels": ds.label_record} if getattr(ds, "label_record", None) else {})}

    @classmethod
    def resume(cls, run_dir: str | os.PathLike, dataset=None, epochs: int | None = None,
               progress: bool | None = None, max_hours: float | None = None,
               overrides: list[str] | None = None) -> "Trainer":
        """Continue a run exactly where its last checkpoint left it. ``overrides`` (``--set k=v``) may change the
        bookkeeping settings of config.RESUME_SETTINGS (eval/sample/checkpoint cadence), nothing that trains.
        ``dataset`` defaults to the recorded source, which must still have the same content key. A run stopped
        before its first checkpoint (killed between run.json and the epoch-0 checkpoint) restarts in place from epoch 0.
        The run's lock is taken first: a run another trainer owns is refused (RunLockedError)."""
        run_dir = Path(run_dir)
        read_info(run_dir)  # a run folder at all, before a lock file is made in it
        # under torchrun every rank reads run.json (the run folder must be on storage they all see); rank 0 alone
        # owns the folder: its lock, its checks, its writes
        main = distributed.launched_rank() == 0
        lock = RunLock(run_dir).acquire() if main else None
        try:
            if main:
                check_run_files(run_dir)
            where = run_dir / "run.json"
            info = check_info(read_info(run_dir), where, resumable=True)
            recorded = info.get("world_size", 1)
            if isinstance(recorded, bool) or not isinstance(recorded, int) or recorded < 1:
                raise RunFormatError(f"{where}: world_size = {recorded!r} is not a whole number >= 1")
            if recorded != distributed.launched_world():
                launch = (f"torchrun --nproc_per_node={recorded} -m engines train --resume {run_dir}" if recorded > 1
                          else f"pokelab train --resume {run_dir} (without torchrun)")
                raise TrainingError(
                    f"{run_dir} was trained by {recorded} process(es) and this launch has "
                    f"{distributed.launched_world()}: an exact resume needs the same number (each process's random "
                    f"streams are in the checkpoint); resume with {launch} (or as many processes over several "
                    f"machines)")
            cfg = config_from_info(info, where)
            mark_explicit(cfg, *explicit_from_info(info))  # e.g. an eval_every given with --set: it still wins
            engine_cls = get_engine(info["engine"])
            try:
                cfg.engine = engine_cls.resolve_config(cfg.engine)
            except (ValueError, TypeError) as e:
                raise RunFormatError(f"{where}: config.engine: {e}") from None
            from .runs.export import check_engine_size

            try:
                check_engine_size(engine_cls, cfg.engine, cfg.image_size, training=True)
            except ExportError as e:
                raise RunFormatError(f"{where}: {e}") from None
            ck = checkpoint_path(run_dir)
            restart = not ck.is_file()
            if restart and (info.get("epoch") or info.get("step") or cls._logged_epochs(run_dir)):
                raise TrainingError(f"{run_dir} has no checkpoint to resume from ({ck} is missing) although it "
                                    "trained past epoch 0; start a new run")
            if epochs is not None:
                cfg.epochs = int(epochs)
            if max_hours is not None:
                cfg.max_hours = float(max_hours)
            changed = apply_resume_overrides(cfg, list(overrides or ()))
            ds_infos = info["dataset"] if isinstance(info["dataset"], list) else [info["dataset"]]
            distributed.init(cfg.device, cfg.dist_backend)  # under torchrun: join the job (a no-op otherwise)
            if dataset is None:
                from .data.prepare import load_dataset

                with distributed.local_main_first():  # one process per machine prepares the dataset cache
                    dataset = [load_dataset(d["source"], size=d["size"],
                                            background=d.get("background") or cfg.background,
                                            **_removal_options(d.get("background_removal")))
                               for d in ds_infos]
                from .labels import reattach

                dataset = [reattach(ds, d.get("labels")) for ds, d in zip(dataset, ds_infos)]  # the recorded labels
            datasets = list(dataset) if isinstance(dataset, (tuple, list)) else [dataset]
            for want, got in zip(ds_infos, datasets):
                if want["key"] != got.key:
                    raise TrainingError(f"dataset {want['name']!r} changed since the run started "
                                        f"(content key {want['key']} -> {got.key}); resume needs the same images")
            t = cls(info["engine"], datasets if len(datasets) > 1 else datasets[0], None, cfg, run_dir=run_dir,
                    progress=progress, _lock=lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        try:
            restart = distributed.main_decides(restart)  # rank 0 saw the checkpoint (or not): all ranks follow
            if not restart:
                t._load_checkpoint(ck)
            if t.writer:
                dropped = t.writer.truncate_after(t.epoch)
                t.writer.update_info(status="running", config=t.cfg.to_dict(),
                                    eval_cadence=t.eval_plan.summary(t.wall_seconds, t.epoch))
                notes = list(t.writer.truncate_notes)
                if t.orphans_removed:
                    notes.append(f"removed {len(t.orphans_removed)} temp file(s) left by a crash: "
                                 f"{', '.join(t.orphans_removed)}")
                if restart:
                    msg = "no checkpoint yet (stopped before its first one): restarted in place from epoch 0"
                else:
                    msg = f"resumed at epoch {t.epoch} step {t.step}"
                msg += f"; dropped {dropped} later log lines" + (f" ({'; '.join(notes)})" if notes else "")
                if changed:
                    msg += f"; settings changed: {', '.join(changed)}"
                t.writer.log("event", t.epoch, t.step, event="restarted" if restart else "resumed", message=msg)
                t.writer.append_log(msg)
        except BaseException:
            t.close()
            raise
        t._resumed = True
        return t

    @staticmethod
    def _logged_epochs(run_dir: Path) -> bool:
        """Whether metrics.jsonl has a training line (then the run got past epoch 0)."""
        from .runs.folder import read_metrics

        return bool(read_metrics(run_dir).train)

    # ---- checkpoints -------------------------------------------------------------------
    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "engine": self.engine.state_dict_full(),
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
            "accum": {k: [v[0].detach().cpu(), int(v[1])] for k, v in self.accum.items()},
            "rng": _rng_state(self._own_gpu()),
            "nan_rollbacks": self.nan_rollbacks,
            "wall_seconds": self.wall_seconds,
            "epoch_partial_seconds": self.epoch_partial_seconds,
            "world_size": self.world,
            "eval_cadence": self.eval_plan.state_dict(),
        }

    def _own_gpu(self) -> torch.device | None:
        """Under torchrun on GPUs each process saves and restores the RNG of its own GPU only."""
        return self.device if self.dist.active and self.device.type == "cuda" else None

    def _rank_state(self) -> dict[str, Any]:
        """What differs between ranks, for the checkpoint: RNG streams, the epoch's loss sums, the engine's
        buffers (counters, statistics, last losses of its own batches) and extra state (ADA's sign sums between
        adjustments, translation image pools). The weights and optimisers are the same on every rank."""
        full = self.engine.state_dict_full()
        extras = {k: v for k, v in full.items() if k not in ("modules", "optimizers", "scalers")}
        extras["buffers"] = {k: full["modules"][k] for k in _rank_state_keys(self.engine)}
        return _map_tensors({"rng": _rng_state(self._own_gpu()),
                             "accum": {k: [v[0].detach(), int(v[1])] for k, v in self.accum.items()},
                             "engine": extras}, lambda t: t.detach().cpu())

    def save_checkpoint(self) -> None:
        # under torchrun every rank takes part (its own state goes to rank 0, which alone writes the file)
        ranks = distributed.gather_object(self._rank_state()) if self.dist.active else None
        if not self.is_main:
            return
        if self.writer:
            self.writer.sync()  # the lines up to this checkpoint are on disk before it is (docs/run-format.md)
        state = self._checkpoint_state()
        if ranks is not None:
            state["ranks"] = ranks
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(checkpoint_path(self.run_dir), buf.getvalue())
        self._last_checkpoint = self._clock()

    def _checkpoint_due(self, epoch: int, last: bool) -> bool:
        """At an epoch end: the last epoch always; every ``checkpoint_every`` epochs when that is set; else the
        first epoch end ``checkpoint_minutes`` after the last checkpoint (0: none until the end)."""
        cfg = self.cfg
        if last:
            return True
        if cfg.checkpoint_every:
            return epoch % cfg.checkpoint_every == 0
        minutes = float(cfg.checkpoint_minutes)
        return minutes > 0 and self._clock() - self._last_checkpoint >= minutes * 60

    def _read_checkpoint(self, path: Path, map_location) -> dict[str, Any]:
        try:
            st = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:
            raise TrainingError(f"{path}: unreadable checkpoint ({e})") from e
        if not isinstance(st, dict) or not isinstance(st.get("engine"), dict) or not isinstance(st.get("rng"), dict):
            raise TrainingError(f"{path}: not a pokelab checkpoint (no engine state or RNG states)")
        ranks = st.get("ranks")
        saved = len(ranks) if isinstance(ranks, list) else 1
        if saved != self.world:
            raise TrainingError(f"{path} holds the state of {saved} process(es) and this run has {self.world}: "
                                "resume with the same number of processes")
        return st

    def _load_checkpoint(self, path: Path) -> None:
        if not self.dist.active:
            st = self._read_checkpoint(path, self.device)
        else:  # rank 0 reads the file (the others may not see it: another machine), every rank gets its state
            st, err = None, None
            if self.is_main:
                try:
                    st = self._read_checkpoint(path, "cpu")
                except TrainingError as e:
                    err = e
            distributed.raise_together(err, TrainingError)
            st = _map_tensors(distributed.broadcast_object(st), lambda t: t.to(self.device))
            mine = st["ranks"][self.rank]
            engine = {**st["engine"], **{k: v for k, v in mine["engine"].items() if k != "buffers"}}
            engine["modules"] = {**engine["modules"], **mine["engine"]["buffers"]}
            st = {**st, "engine": engine, "accum": mine["accum"], "rng": mine["rng"]}
        self.engine.load_state_dict_full(st["engine"])
        self.epoch, self.step = int(st["epoch"]), int(st["step"])
        self.batch_in_epoch = int(st.get("batch_in_epoch", 0))
        self.accum = {k: [v[0].to(self.device), int(v[1])] for k, v in st.get("accum", {}).items()}
        self.nan_rollbacks = int(st.get("nan_rollbacks", 0))
        self.wall_seconds = float(st.get("wall_seconds", 0.0))
        self.epoch_partial_seconds = float(st.get("epoch_partial_seconds", 0.0))
        self.eval_plan.load_state_dict(st.get("eval_cadence"))
        self._last_checkpoint = self._clock()
        rng = st["rng"]
        rng["torch"] = rng["torch"].cpu()
        rng["cuda"] = [s.cpu() for s in rng.get("cuda", [])]
        rng["numpy"]["keys"] = rng["numpy"]["keys"].cpu()
        _set_rng_state(rng, self._own_gpu())

    # ---- signals ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current step, checkpoint, mark the run interrupted (SIGINT/SIGTERM do this)."""
        self._stop.set()

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        old, seen = {}, set()

        def handler(signum, frame):
            # the same signal twice (a second Ctrl-C): give up immediately. Another one only confirms the stop:
            # torchrun answers a Ctrl-C by sending SIGTERM to processes the SIGINT already reached
            if signum in seen:
                raise KeyboardInterrupt
            seen.add(signum)
            self._stop.set()

        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, handler)
        return old

    # ---- the loop ---------------------------------------------------------------------------
    def _batch(self, domain: int, idx: torch.Tensor) -> torch.Tensor:
        # index_select, not images[idx]: the same rows, ~3x faster than advanced indexing on a CPU
        x = from_uint8(self.images[domain].index_select(0, idx.to(self.images[domain].device)))
        if self.engine.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _mirror(self, batch: list[torch.Tensor]) -> list[torch.Tensor]:
        """``mirror``: each real image x-flipped with probability 1/2, drawn per image and step from the torch RNG
        the checkpoint saves (resume stays exact); the two sides of a pair flip together."""
        shared = torch.rand(batch[0].shape[0], device=batch[0].device) < 0.5 if self.pairing is not None else None
        out = []
        for x in batch:
            flip = shared if shared is not None else torch.rand(x.shape[0], device=x.device) < 0.5
            out.append(torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x))
        return out

    def _steps_per_epoch(self) -> int:
        """The same count _epoch_batches yields: unpaired domains stop at the shorter one."""
        return min(batches_per_epoch(len(im), self.cfg.batch_size, self.rank, self.world) for im in self.images)

    def _epoch_batches(self, epoch: int):
        """Index batches for each domain; translation domains get independent permutations (unpaired)."""
        if self.pairing is not None:  # one permutation for both sides: each pair is shuffled as one
            return [(b, b) for b in epoch_indices(len(self.images[0]), self.cfg.seed, epoch, self.cfg.batch_size,
                                                  self.rank, self.world)]
        per_domain = [epoch_indices(len(im), self.cfg.seed + 7919 * d, epoch, self.cfg.batch_size,
                                    self.rank, self.world) for d, im in enumerate(self.images)]
        return [tuple(b[i] for b in per_domain) for i in range(self._steps_per_epoch())]

    def fit(self) -> Path:
        """Train to ``cfg.epochs`` (or the budget, or a signal); the run's lock is held throughout and released
        on every way out."""
        self._own()
        try:
            return self._fit()
        finally:
            self.close()
            distributed.shutdown()  # under torchrun: leave the job on every way out (a no-op in one process)

    def _fit(self) -> Path:
        cfg = self.cfg
        self._last_progress = self._clock()  # run.json is (re)written just below or by resume()
        if self.writer and not getattr(self, "_resumed", False):
            self.writer.write_info(self._run_info())
            where = str(self.device) if self.world == 1 else (
                f"{self.world} processes ({self.dist.backend}; {cfg.batch_size // self.world} images each per step"
                + (f" in {self.batch_rounds} micro-batches" if self.batch_rounds > 1 else "") + f"), rank 0 on "
                f"{self.device}")
            self.writer.append_log(f"run {self.run_dir.name}: engine {self.engine_cls.name} on {where}, "
                                   f"{len(self.images[-1])} images at {cfg.image_size} px")
            if self.pairing is not None:  # every unpaired picture by name, as `pokelab data prepare` reports
                self.writer.append_log(self.pairing.report())
            if getattr(self.datasets[-1], "label_report", None) is not None:  # images left out for want of a label
                self.writer.append_log(self.datasets[-1].label_report.format())
        if distributed.main_decides(bool(self.writer) and not checkpoint_path(self.run_dir).is_file()):
            self.save_checkpoint()  # epoch 0: the NaN guard can always roll back to something
        old_handlers = self._install_signals()
        spe = self._steps_per_epoch()
        bar = tqdm(total=cfg.epochs * spe, initial=min(self.step, cfg.epochs * spe), unit="step",
                   dynamic_ncols=True, desc=self.engine_cls.name,
                   # None: tqdm shows the bar on a terminal only; log.txt has the same figures
                   disable=True if not self.is_main else (None if self.progress is None else not self.progress))
        if self.writer:  # a resumed run's mirrors drop what they hold after the checkpoint's epoch
            self.sinks = LogSinks.open(self.run_dir, cfg, read_info(self.run_dir), report=self.writer.append_log,
                                       first_epoch=self.epoch + 1 if getattr(self, "_resumed", False) else None)
        status = "running"
        try:
            while self.epoch < cfg.epochs:
                epoch = self.epoch + 1
                t0 = time.perf_counter()
                batches = self._epoch_batches(epoch)
                self.engine.start_epoch(epoch, cfg.epochs)
                start = self.batch_in_epoch
                images_seen = 0
                for bi in range(start, len(batches)):
                    batch = [self._batch(d, idx) for d, idx in enumerate(batches[bi])]
                    if cfg.mirror:
                        batch = self._mirror(batch)
                    if self.labels is not None:  # a conditional engine: the batch's labels ride along
                        batch = [batch[0], self.labels.index_select(0, batches[bi][0].to(self.labels.device))]
                    out = self.engine.train_step(batch[0] if len(batch) == 1 else tuple(batch))
                    for k, v in out.items():  # accumulate on device: no host sync per step
                        v = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v), device=self.device)
                        if k in self.accum:
                            self.accum[k][0] = self.accum[k][0] + v
                            self.accum[k][1] += 1
                        else:
                            self.accum[k] = [v, 1]
                    self.step += 1
                    images_seen += batch[0].shape[0] * self.world
                    self.batch_in_epoch = bi + 1
                    bar.update(1)
                    if self._stop_agreed():
                        break
                if self._stopping and self.batch_in_epoch < len(batches):
                    self.wall_seconds += time.perf_counter() - t0
                    # the epoch's time so far goes into the checkpoint: its epoch_seconds counts both parts
                    self.epoch_partial_seconds += time.perf_counter() - t0
                    status = "interrupted"
                    break
                train_seconds = time.perf_counter() - t0
                self.wall_seconds += train_seconds
                scalars = self._epoch_scalars()  # the epoch's one sync
                bad = [k for k, v in scalars.items() if not math.isfinite(v)]
                if bad:
                    self._handle_nan(epoch, bad)
                    continue
                self.epoch, self.batch_in_epoch, self.accum = epoch, 0, {}
                scalars["img_per_s"] = images_seen / max(train_seconds, 1e-9)
                scalars["epoch_seconds"] = train_seconds + self.epoch_partial_seconds
                self.epoch_partial_seconds = 0.0
                scalars["augment_p"] = float(getattr(self.engine.augment, "p", 0.0))
                scalars["lr"] = next(iter(self.engine.optimizers.values())).param_groups[0]["lr"]
                self._end_of_epoch(epoch, scalars)
                bar.set_postfix({k.split("/")[-1] if k.startswith("loss/") else k: f"{scalars[k]:.3g}"
                                 for k in ("loss/D", "loss/G", "img_per_s") if k in scalars})
                if self._stop_agreed():
                    status = "interrupted"
                    break
                if self._budget_spent():
                    status = "finished"
                    break
            else:
                status = "finished"
        except TrainingError:
            status = "failed"
            raise
        except KeyboardInterrupt:
            # a second Ctrl-C may land inside a step: keep the last consistent checkpoint instead
            status = "aborted"
            raise
        except BaseException as e:
            status = "failed"
            if self.writer:
                # under torchrun this is most often a peer that died (kill -9, out of memory): the job stops, and
                # the last checkpoint resumes it
                hint = f"; the job stopped: resume with {self._resume_command()}" if self.dist.active else ""
                self.writer.log("event", self.epoch, self.step, event="error",
                                message=f"{type(e).__name__}: {e}{hint}")
            raise
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
            if self.sinks:
                self.sinks.close(status)
            self._finish(status)
        return self.run_dir

    def _budget_spent(self) -> bool:
        """The wall-clock budget (``max_hours``, training time without evaluation) is used up (rank 0's clock
        decides for every rank)."""
        return distributed.main_decides(bool(self.cfg.max_hours)
                                        and self.wall_seconds >= float(self.cfg.max_hours) * 3600)

    def _stop_agreed(self) -> bool:
        """Whether to stop now: a SIGINT/SIGTERM that reached any rank stops every rank after the same step."""
        flag = self._stop.is_set()
        if self.dist.active:
            flag = distributed.any_flag(flag)
            if flag:
                self._stop.set()
        self._stopping = flag
        return flag

    def _epoch_scalars(self) -> dict[str, float]:
        """The epoch's mean of every logged scalar; under torchrun over every rank's steps, in one all-reduce
        (so the NaN guard reaches the same verdict on every rank)."""
        if not self.dist.active:
            return {k: (v[0] / v[1]).item() for k, v in self.accum.items()}
        keys = sorted(self.accum)
        if not keys:
            return {}
        means = torch.stack([(self.accum[k][0] / self.accum[k][1]).float().reshape(()) for k in keys])
        reduced = dict(zip(keys, (distributed.all_reduce_(means) / self.world).tolist()))
        return {k: reduced[k] for k in self.accum}

    def _end_of_epoch(self, epoch: int, scalars: dict[str, float]) -> None:
        cfg = self.cfg
        last = epoch == cfg.epochs or self._budget_spent()
        if last and epoch != cfg.epochs and self.writer:
            self.writer.log("event", epoch, self.step, event="budget_reached",
                            message=f"wall-clock budget of {cfg.max_hours:g} h reached at epoch {epoch}")
        if self.writer:
            rec = self.writer.log("train", epoch, self.step, **scalars)
            if self.sinks:
                self.sinks.line(rec)
            self.writer.append_log(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
        sampled = bool(cfg.sample_every) and (epoch % cfg.sample_every == 0 or last)
        if sampled:
            self.save_samples(epoch)
            if self.sinks:
                self.sinks.grids(self.run_dir, epoch)
            self.export()
        evaluated = self.eval_plan.due(epoch, last, self.wall_seconds) and (
            self.is_main or self._evaluates_together())
        if evaluated:
            self._keep_best(epoch, self.evaluate(epoch))
        checkpointed = distributed.main_decides(self._checkpoint_due(epoch, last))  # rank 0's clock for all
        if checkpointed:
            self.save_checkpoint()
        # run.json's progress: with every checkpoint, grid and evaluation, else at most every PROGRESS_SECONDS
        # (metrics.jsonl has every epoch; resume reads the checkpoint, never these fields)
        if self.writer and (checkpointed or sampled or evaluated
                            or self._clock() - self._last_progress >= PROGRESS_SECONDS):
            self.writer.update_info(epoch=epoch, step=self.step, wall_seconds=round(self.wall_seconds, 2),
                                    nan_rollbacks=self.nan_rollbacks)
            self._last_progress = self._clock()

    def _handle_nan(self, epoch: int, keys: list[str]) -> None:
        msg = f"non-finite loss at epoch {epoch} ({', '.join(keys)})"
        if self.cfg.nan_policy == "stop" or self.nan_rollbacks >= self.cfg.max_nan_rollbacks:
            if self.writer:
                self.writer.log("event", epoch, self.step, event="nan_stop", message=msg)
            raise TrainingError(msg + ("; stopping (nan_policy=stop)" if self.cfg.nan_policy == "stop" else
                                       f"; still diverging after {self.nan_rollbacks} rollbacks with a lower "
                                       f"learning rate — lower lr (--set lr=...) or check the data"))
        rollbacks = self.nan_rollbacks + 1
        self._load_checkpoint(checkpoint_path(self.run_dir))
        self.nan_rollbacks = rollbacks
        self.engine.scale_lr(self.cfg.nan_lr_factor)
        lr = next(iter(self.engine.optimizers.values())).param_groups[0]["lr"]
        text = f"{msg}; rolled back to epoch {self.epoch} with lr x{self.cfg.nan_lr_factor} (now {lr:.3g})"
        if self.writer:
            self.writer.truncate_after(self.epoch)
            if self.sinks:
                self.sinks.rewind(self.epoch)
            self.writer.log("event", self.epoch, self.step, event="nan_rollback", message=text)
            self.writer.append_log(text)
        if self.is_main:
            tqdm.write(f"warning: {text}")
        self.save_checkpoint()  # the lowered lr and rollback count survive a crash

    def save_samples(self, epoch: int) -> None:
        if not self.is_main:
            return
        grid_seed = self.cfg.seed  # fixed latents: the same z at every epoch
        if self.pairing is not None:  # held-out pairs: input | output | true target
            grid = self.engine.sample_grid(*self.pairing.grid_pairs(8))
            save_grid(grid["images"], sample_path(self.run_dir, epoch), nrow=grid.get("nrow"))
            return
        if self.engine_cls.kind == "upscale":  # held-out pictures: LR (nearest) | bicubic | engine | HR
            pics = self.heldout if self.heldout is not None else self.images[0]
            grid = self.engine.sample_grid(pics[: min(self.cfg.grid_n, len(pics))])
            save_grid(grid["images"], sample_path(self.run_dir, epoch), nrow=grid.get("nrow"))
            return
        if self.engine_cls.kind == "translate":
            grid = self.engine.sample_grid(self.images[0][: min(8, len(self.images[0]))])
            save_grid(grid["images"], sample_path(self.run_dir, epoch), nrow=grid.get("nrow"))
            return
        imgs = self.engine.sample(n=self.cfg.grid_n, seed=grid_seed)
        save_grid(imgs, sample_path(self.run_dir, epoch))
        extra = getattr(self.engine, "extra_grids", None)
        if extra is not None:
            real = from_uint8(self.images[0][: min(16, len(self.images[0]))])
            with torch.inference_mode():
                for name, t in extra(real).items():
                    save_grid(t, self.run_dir / "samples" / f"{name}_epoch_{epoch:06d}.png", nrow=8)

    def export(self, folder: Path | None = None, **trained: Any) -> None:
        """Write the sampling nets to export/ (or ``folder``), with what they were trained on (and ``trained``)."""
        if not self.is_main:
            return
        save_export(self.engine, folder or export_dir(self.run_dir), trained={
            "run_id": self.run_dir.name, "epochs": self.epoch, "steps": self.step,
            "dataset": self._dataset_info(self.datasets[-1]), "image_size": self.cfg.image_size,
            "batch_size": self.cfg.batch_size, "device": str(self.device),
            **({"source_dataset": self._dataset_info(self.datasets[0])} if len(self.datasets) > 1 else {}),
            **({"pairing": self.pairing.record()} if self.pairing is not None else {}),
            **trained,
        })

    def _recorded_best(self) -> dict[str, Any] | None:
        """best/'s record ({"metric", "value", "epoch", ...}) when it follows the current best_metric; a missing,
        unreadable or other-metric best/ is no record (the next evaluation replaces it)."""
        try:
            rec = read_export_config(best_dir(self.run_dir)).get("trained", {}).get("best")
        except (ExportError, OSError):
            return None
        if (isinstance(rec, dict) and rec.get("metric") == self.cfg.best_metric
                and isinstance(rec.get("value"), (int, float)) and math.isfinite(rec["value"])):
            return rec
        return None

    def _keep_best(self, epoch: int, res: dict[str, float] | None) -> None:
        """After an evaluation: when it is the lowest best_metric yet and not flagged collapsed, its weights
        replace best/ (the projected-gan reference's best_model.pkl). A resumed run compares with best/'s record,
        so an exact resume re-evaluating an epoch already in best/ leaves it as it is."""
        metric = self.cfg.best_metric
        if not (self.is_main and metric and res) or not isinstance(res.get(metric), (int, float)):
            return
        value = float(res[metric])
        if not math.isfinite(value) or res.get("collapse", 0.0) >= 0.5:
            return
        prev = self._recorded_best()
        if prev is not None and value >= prev["value"]:
            return
        rec = {"metric": metric, "value": value, "epoch": epoch, "step": self.step,
               "hours": round(self.wall_seconds / 3600, 4), "kimg": round(self.step * self.cfg.batch_size / 1000, 3),
               "eval_n": int(res.get("eval_n", self.eval_plan.eval_n))}
        replace_best(self.run_dir, lambda folder: self.export(folder, best=rec))
        self.writer.update_info(best=rec)
        text = (f"best {metric} so far ({value:.4g} at epoch {epoch}" +
                (f", was {prev['value']:.4g} at epoch {prev['epoch']}" if prev else "") + "): written to best/")
        self.writer.log("event", epoch, self.step, event="best", message=text)
        self.writer.append_log(text)

    def _evaluates_together(self) -> bool:
        """Generators are evaluated by every rank of a torchrun job (each its share of the samples); the other
        kinds by rank 0 alone, while the other ranks wait in their next collective."""
        return self.dist.active and self.engine_cls.kind == "generate"

    def evaluate(self, epoch: int) -> dict[str, float] | None:
        """FID/KID/MS-SSIM (translation: engines.metrics.translation) on the cadence; a failing evaluation is
        logged, never kills the run."""
        try:
            from .metrics import evaluate_generator
            from .metrics.translation import evaluate_translation
        except ImportError as e:
            if self.writer:
                self.writer.log("event", epoch, self.step, event="eval_skipped", message=f"metrics unavailable: {e}")
            return None
        t0 = time.perf_counter()
        metrics = tuple(m.strip() for m in self.cfg.eval_metrics.split(",") if m.strip())
        try:
            # evaluation must not consume the training RNG stream (resume stays exact)
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), \
                    warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if self.engine_cls.kind == "upscale":  # the engine and bicubic against the held-out pictures
                    from .metrics.superres import evaluate_upscaling

                    pics = self.heldout if self.heldout is not None else self.images[0]
                    res = evaluate_upscaling(self.engine, pics, metrics=metrics, n=self.eval_plan.eval_n,
                                             device=self.device)
                elif self.engine_cls.kind == "translate":
                    # paired engines: the held-out pictures (their true targets are found by id)
                    source = self.pairing.eval_source() if self.pairing is not None else self.datasets[0]
                    res = evaluate_translation(self.engine, source, self.datasets[1], metrics=metrics,
                                               n=self.eval_plan.eval_n, device=self.device,
                                               seed=self.cfg.seed + 1_000_000)
                elif getattr(self.engine, "conditional", False):  # the same, plus per-label KID/FID + consistency
                    from .metrics.per_label import evaluate_conditional

                    res = evaluate_conditional(self.engine, self.datasets[-1], n=self.eval_plan.eval_n,
                                               metrics=metrics, device=self.device, seed=self.cfg.seed + 1_000_000,
                                               shard=self._evaluates_together())
                else:
                    # under torchrun every rank generates and embeds its share; rank 0 gets the numbers
                    res = evaluate_generator(lambda k, s: self.engine.sample(n=k, seed=s), self.datasets[-1],
                                             n=self.eval_plan.eval_n, metrics=metrics, device=self.device,
                                             seed=self.cfg.seed + 1_000_000, shard=self._evaluates_together())
        except Exception as e:  # noqa: BLE001 — report, keep training
            if self.writer:
                self.writer.log("event", epoch, self.step, event="eval_failed", message=f"{type(e).__name__}: {e}")
                tqdm.write(f"warning: evaluation failed at epoch {epoch}: {e}")
            return None
        if not self.is_main:
            return None
        for w in caught:  # e.g. "FID from 649 real images is biased": say it once per run, not every epoch
            text = str(w.message)
            if text not in self._eval_warnings:
                self._eval_warnings.add(text)
                self.writer.log("event", epoch, self.step, event="eval_warning", message=text)
                self.writer.append_log(f"warning: {text}")
        res = dict(res)
        res.setdefault("eval_seconds", time.perf_counter() - t0)
        rec = self.writer.log("eval", epoch, self.step, **res)
        if self.sinks:
            self.sinks.line(rec)
        self.writer.append_log(f"eval epoch {epoch}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in res.items() if isinstance(v, (int, float))))
        self.eval_plan.record(epoch, res["eval_seconds"], self.wall_seconds)
        self.writer.update_info(eval_cadence=self.eval_plan.summary(self.wall_seconds, epoch))
        return res

    def _eval_note(self, epoch: int, text: str) -> None:
        """An event of the evaluation cadence (engines/eval_cadence.py) in metrics.jsonl and log.txt."""
        if self.writer:
            self.writer.log("event", epoch, self.step, event="eval_cadence", message=text)
            self.writer.append_log(text)

    def _resume_command(self) -> str:
        if self.world > 1:  # the same number of processes (over any number of machines)
            return f"torchrun --nproc_per_node={self.world} -m engines train --resume {self.run_dir}"
        return f"pokelab train --resume {self.run_dir}"

    def _finish(self, status: str) -> None:
        if status == "interrupted":
            self.save_checkpoint()
            self.export()
            if self.writer:
                self.writer.log("event", self.epoch, self.step, event="interrupted",
                                message=f"stopped at epoch {self.epoch} (+{self.batch_in_epoch} batches); "
                                        f"resume with: {self._resume_command()}")
        elif status == "finished":
            self.export()
        if status == "aborted":
            status = "interrupted"
        self.status = status
        if self.writer:
            self.writer.sync()  # the run's last lines (an 'interrupted' event) survive a power cut too
            self.writer.update_info(status=status, epoch=self.epoch, step=self.step,
                                    wall_seconds=round(self.wall_seconds, 2), nan_rollbacks=self.nan_rollbacks)
            self.writer.append_log(f"status: {status}")
