"""The shared experiment protocol as a config, and ``--set key=value`` overrides."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


#: the evaluation numbers RUN/best/ may follow: lower is better in both (the projected-gan reference keeps the
#: lowest-FID snapshot; KID is the default here because it is unbiased at the cadence's small sample counts)
BEST_METRICS = ("kid", "fid", "")


@dataclass
class TrainConfig:
    # shared protocol (DESIGN.md): 128 px, batch 64, 1000 epochs, grids every 10, FID every 10
    image_size: int = 128
    batch_size: int = 64
    epochs: int = 1000
    seed: int = 0
    sample_every: int = 10
    eval_every: int = 10          # 0 disables evaluation during training
    eval_n: int = 2000            # generated samples per evaluation
    eval_metrics: str = "fid,kid,ms_ssim"
    eval_budget: float = 0.15     # off CUDA: most of a run's time evaluation may take (0: off; eval_cadence.py)
    best_metric: str = "kid"      # keep RUN/best/: the export of the evaluation lowest in it (fid | kid | "": off)
    checkpoint_every: int = 0     # epochs; 0: by time (checkpoint_minutes). Always also at epoch 0, at the end,
    #                               on SIGINT/SIGTERM and after a NaN rollback (docs/training.md)
    checkpoint_minutes: float = 5.0  # checkpoint_every=0: at the first epoch end this long after the last checkpoint
    max_hours: float = 0.0        # training wall-clock budget: the run finishes at the first epoch end past it (0: none)
    grid_n: int = 64              # images in the fixed-latent sample grid
    augment: str | None = None    # None: the engine's default (DiffAugment; ADA for StyleGAN2)
    augment_options: dict[str, Any] = field(default_factory=dict)  # e.g. DiffAugment's policy, ADA's target
    mirror: bool = False          # x-flip each real image with probability 1/2 (stylegan2-ada's --mirror)
    amp: bool = True              # mixed precision on CUDA (bf16, or fp16 + loss scaling)
    cpu_amp: bool = False         # bf16 autocast on a CPU (fast where the CPU has native bf16)
    channels_last: bool | None = None  # NHWC weights and batches; None: with CUDA, and on a CPU for the engines
    #                               measured faster so (Engine.cpu_channels_last; docs/decisions.md)
    device: str = "auto"          # auto | cpu | cuda | cuda:N | mps
    background: str = "white"     # alpha flattening when the data is prepared on the fly
    nan_policy: str = "rollback"  # rollback (to the last checkpoint with a lower lr) | stop
    nan_lr_factor: float = 0.5
    max_nan_rollbacks: int = 3
    # several processes (torchrun; docs/training.md): batch_size stays the global batch, split over the processes
    batch_gpu: int = 0            # rows per micro-batch on each process (gradient accumulation); 0: its whole share
    dist_backend: str = "auto"    # auto (NCCL on CUDA, Gloo on CPUs) | nccl | gloo
    tensorboard: bool = False     # mirror metrics and grids to RUN/tensorboard (engines.logsinks; needs `tensorboard`)
    wandb_project: str | None = None  # mirror them to this Weights & Biases project (needs `wandb`)
    engine: dict[str, Any] = field(default_factory=dict)  # engine overrides (see the engine's default_config)

    def validate(self) -> "TrainConfig":
        for name in ("image_size", "batch_size", "epochs", "grid_n"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("sample_every", "eval_every", "checkpoint_every", "eval_n"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not float(self.checkpoint_minutes) >= 0:
            raise ValueError("checkpoint_minutes must be >= 0 (0: no time-based checkpoints)")
        if not float(self.max_hours) >= 0:
            raise ValueError("max_hours must be >= 0 (0: no wall-clock budget)")
        if not 0 <= float(self.eval_budget) < 1:
            raise ValueError("eval_budget must be in [0, 1): the largest share of a run's time spent evaluating "
                             "(0: no budget, the protocol cadence)")
        if self.nan_policy not in ("rollback", "stop"):
            raise ValueError("nan_policy must be 'rollback' or 'stop'")
        if not 0 < self.nan_lr_factor <= 1:
            raise ValueError("nan_lr_factor must be in (0, 1]")
        if int(self.batch_gpu) < 0:
            raise ValueError("batch_gpu must be >= 0 (0: no gradient accumulation)")
        if self.best_metric is None:  # --set best_metric=none
            self.best_metric = ""
        if self.best_metric not in BEST_METRICS:
            raise ValueError(f"best_metric must be one of {', '.join(repr(m) for m in BEST_METRICS)} ('': keep no "
                             f"best export), not {self.best_metric!r}")
        if self.channels_last not in (None, True, False):
            raise ValueError(f"channels_last must be true, false or null (auto), not {self.channels_last!r}")
        if str(self.dist_backend).lower() not in ("auto", "nccl", "gloo"):
            raise ValueError(f"dist_backend must be auto, nccl or gloo, not {self.dist_backend!r}")
        return self

    @classmethod
    def for_engine(cls, engine_cls) -> "TrainConfig":
        """The protocol defaults of an engine: generation's, updated by ``engine_cls.protocol_defaults``
        (translation: batch 4, 200 epochs, samples every 5 epochs)."""
        return cls(**getattr(engine_cls, "protocol_defaults", {}))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


#: what ``pokelab train --resume RUN --set KEY=VALUE`` may change: when and how a run is looked at and saved,
#: never what it trains (a different lr, batch or network would break the exact resume: that is a new run)
RESUME_SETTINGS = ("sample_every", "eval_every", "eval_n", "eval_metrics", "eval_budget", "best_metric",
                   "checkpoint_every", "checkpoint_minutes", "tensorboard")


def apply_resume_overrides(cfg: TrainConfig, pairs: list[str]) -> list[str]:
    """Apply ``key=value`` pairs to a resumed run's config; any key outside RESUME_SETTINGS is refused before
    anything changes. Returns the changes in words ("eval_every 10 -> 40") for the run's log."""
    keys = []
    for pair in pairs:  # a bare "key" passes here and gets apply_overrides' "expects key=value"
        key = pair.split("=", 1)[0].strip()
        if key not in RESUME_SETTINGS:
            raise ValueError(f"--set {key} cannot change on --resume: only {', '.join(RESUME_SETTINGS)} can (they "
                             f"change what the run records, not what it trains); start a new run to change {key}")
        keys.append(key)
    before = {k: getattr(cfg, k) for k in keys}
    apply_overrides(cfg, pairs)
    cfg.validate()
    return [f"{k} {before[k]!r} -> {getattr(cfg, k)!r}" for k in dict.fromkeys(keys) if before[k] != getattr(cfg, k)]


def parse_value(text: str) -> Any:
    """'1e-4' -> 1e-4, 'true' -> True, '[0.5, 0.99]' -> list, 'null' -> None, else the string itself."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def mark_explicit(cfg: TrainConfig, *names: str) -> None:
    """Remember that these settings were given explicitly (``--set``), not left at the protocol's defaults:
    the evaluation cadence keeps an explicit eval_every / eval_n (engines/eval_cadence.py). Kept beside the
    dataclass fields, so it never shows up in run.json's config."""
    cfg.__dict__.setdefault("_explicit", set()).update(names)


def explicit_settings(cfg: TrainConfig) -> set[str]:
    return set(cfg.__dict__.get("_explicit", ()))


def apply_overrides(cfg: TrainConfig, pairs: list[str]) -> TrainConfig:
    """``key=value`` pairs: trainer fields by name; ``engine.k`` / ``augment_options.k`` for those dicts;
    any other bare key goes to the engine (validated later against the engine's defaults)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        key, value = key.strip(), parse_value(raw)
        if "." in key:
            head, sub = key.split(".", 1)
            if head not in ("engine", "augment_options"):
                raise ValueError(f"unknown setting {key!r}")
            getattr(cfg, head)[sub] = value
        elif key in fields and key not in ("engine", "augment_options"):
            current = getattr(cfg, key)
            if key == "augment" and value is None:  # `--set augment=none` means no augmentation, not the default
                value = "none"
            if isinstance(current, bool) and not isinstance(value, bool):
                raise ValueError(f"{key} expects true/false")
            if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float) \
                    and value.is_integer():
                value = int(value)
            setattr(cfg, key, value)
            mark_explicit(cfg, key)
        else:
            cfg.engine[key] = value
    return cfg
