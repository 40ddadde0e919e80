"""The engine contract shared by the trainer, the CLI, the metrics and the app.

An engine owns its networks, losses and optimisers; the generic trainer owns epochs,
data, augmentation schedule, logging, grids, metric cadence, checkpoints and signals.

Contract (see docs/engines.md):
- ``name`` (registry key), ``kind`` ("generate" or "translate"), ``domains`` (1, or 2 for translation)
- ``default_config()``: engine hyper-parameters (widths, latent size, lr, betas, ...); every
  key can be overridden with ``--set key=value``
- ``__init__(config, image_size, training=True)``: builds nets (and optimisers when training)
- ``train_step(batch) -> dict[str, Tensor|float]``: one optimisation step; scalars are
  returned as 0-d tensors where possible so the trainer syncs with the host once per epoch
- ``latent(n, seed)``, ``sample(z=None, n=None, seed=None)`` -> images in [-1, 1]
- ``interpolate(seed_a, seed_b, frames, mode)`` -> frames in [-1, 1] (StyleGAN overrides to walk in W)
- ``export_modules()``: the modules an export needs to sample (what the app loads)
- ``state_dict()/load_state_dict()``: full resume state (nets, EMA, optimisers, scaler)
- translation engines add ``translate(x)`` and, where the model has them, ``attention(x)``.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import math
from typing import Any, ClassVar

import torch
from torch import nn

from .distributed import sync_gradients


class Engine(nn.Module):
    name: ClassVar[str] = ""
    kind: ClassVar[str] = "generate"
    domains: ClassVar[int] = 1
    #: augmentation pipeline the trainer builds unless the config names another (engines.augment)
    default_augment: ClassVar[str] = "diffaugment"
    #: paper settings that differ from the shared protocol, recorded in run.json
    protocol_notes: ClassVar[str] = ""
    #: trainer defaults (TrainConfig fields) of this engine's protocol where it is not the generation one
    protocol_defaults: ClassVar[dict[str, Any]] = {}
    #: ``generate`` keyword arguments for samples that feed metrics (inside ``metrics_sampling()``, which
    #: engines.metrics' evaluate_generator enters): how the engine's reference implementation measures, e.g.
    #: StyleGAN2's per-sample random noise. Grids, the app and explicit keyword arguments are not affected.
    metrics_sample_kwargs: ClassVar[dict[str, Any]] = {}
    #: every optimiser step of ``train_step`` goes through ``accumulate`` (its losses are computed per micro-batch,
    #: so ``--set batch_gpu=K`` can split a rank's batch; stylegan2-ada's --batch-gpu); engines whose steps share
    #: one forward pass between phases keep False and the trainer refuses batch_gpu for them
    supports_batch_gpu: ClassVar[bool] = False
    #: conditioned on labels (engines.labels.ConditionalEngine): the trainer feeds (images, labels) batches
    conditional: ClassVar[bool] = False
    #: trains with labels when given them and without otherwise (stylegan2_ada, projected_gan): the trainer and
    #: the CLI accept --labels without requiring them; ``conditional`` is then the instance's (engines.labels)
    labels_optional: ClassVar[bool] = False
    #: channels_last (NHWC) weights and batches on a CPU when the run leaves ``channels_last`` unset: True where
    #: benchmarks/train_throughput.py measured the engine faster so (docs/decisions.md); CUDA always uses it
    cpu_channels_last: ClassVar[bool] = False

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {"lr": 2e-4, "betas": [0.5, 0.999]}

    @classmethod
    def resolve_config(cls, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with overrides; unknown keys are an error (typos must not pass silently)."""
        cfg = copy.deepcopy(cls.default_config())
        for k, v in (overrides or {}).items():
            if k not in cfg:
                raise ValueError(
                    f"engine {cls.name!r} has no setting {k!r}; known: {', '.join(sorted(cfg))}"
                )
            cfg[k] = v
        return cfg

    def __init__(self, config: dict[str, Any] | None = None, image_size: int = 128, *, training: bool = True):
        super().__init__()
        self.config = self.resolve_config(config)
        self.image_size = int(image_size)
        self.training_mode = training
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        # Set by the trainer (setup()); engines read them in train_step.
        self.augment = None
        self.amp_dtype: torch.dtype | None = None
        self.channels_last = False  # NHWC weights; the trainer then makes its batches NHWC too
        # one loss scaler per optimiser (fp16 only): an overflow in D's backward must not shrink G's scale
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        # data parallelism (set by the trainer; engines/distributed.py): processes sharing the global batch, and
        # micro-batches per optimiser step on this rank (batch_gpu): 1 and 1 in one process
        self.world_size = 1
        self.batch_rounds = 1

    # ---- set-up by the trainer -------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def set_memory_format(self, channels_last: bool | None = None) -> "Engine":
        """NHWC weights (``channels_last``; None: with CUDA, and on a CPU when ``cpu_channels_last``) or NCHW, on
        the device the engine is on. Training (``setup``) and exports (``load_export``) decide alike, so an export
        samples bit for bit as its run did on the same device."""
        dev = self.device
        self.channels_last = bool(channels_last if channels_last is not None else
                                  dev.type == "cuda" or (dev.type == "cpu" and self.cpu_channels_last))
        self.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return self

    def setup(self, device: torch.device, amp: bool = False, augment=None, cpu_amp: bool = False,
              amp_dtype: torch.dtype | None = None, channels_last: bool | None = None) -> "Engine":
        """Move to device, choose mixed precision, attach the augmentation pipeline.

        ``cpu_amp``: bf16 autocast on a CPU (1.5x faster for projected_gan on a CPU with AVX512-BF16;
        docs/decisions.md); no loss scaling is needed for bf16. ``amp_dtype`` forces the autocast type on any
        device (benchmarks/gpu_check.py trains every engine under fp16 and bf16 on one GPU). ``channels_last``:
        the memory layout (``set_memory_format``)."""
        self.to(device)
        self.set_memory_format(channels_last)
        if device.type == "cuda":
            # fixed shapes every step: let cuDNN pick its fastest kernels once (the references do the same)
            torch.backends.cudnn.benchmark = True
        self.augment = augment
        if amp and device.type == "cuda":
            self.amp_dtype = cuda_amp_dtype(device)
        elif cpu_amp and device.type == "cpu":
            self.amp_dtype = torch.bfloat16
        else:
            self.amp_dtype = None
        if amp_dtype is not None:
            self.amp_dtype = amp_dtype
        self.scalers = {name: torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
                        for name in self.optimizers}
        return self

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def global_batch(self, n: int) -> int:
        """Images per optimiser step over every rank, from this rank's ``n`` (schedules counted in images, the
        EMA half-life and R1's auto gamma must not change with the number of processes)."""
        return int(n) * self.world_size

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """zero_grad / backward / step for one optimiser, with its own loss scaler under fp16."""
        self.optimizers[name].zero_grad(set_to_none=True)
        self._backward(name, loss)
        self._step(name)

    def accumulate(self, name: str, loss_fn, *inputs: torch.Tensor, gain: float = 1.0) -> dict[str, torch.Tensor]:
        """One step of optimiser ``name`` whose loss is computed in ``batch_rounds`` micro-batches: every tensor
        of ``inputs`` is split along dim 0 and ``loss_fn(*pieces)`` returns a dict with that piece's mean
        ``"loss"`` (and any other tensors the caller wants back). Each piece's backward is weighted by its share
        of the rows (times ``gain``), so the gradients add up to the whole batch's before the one step, as
        stylegan2-ada's --batch-gpu. Returns the dict for the whole batch: ``loss`` the weighted mean, 0-d
        tensors averaged the same way, other tensors concatenated. With one round this is ``optimize``."""
        rows = int(inputs[0].shape[0])
        rounds = max(1, min(self.batch_rounds, *(int(x.shape[0]) for x in inputs)))
        if rounds == 1:  # the whole batch at once: exactly the optimize() path
            out = loss_fn(*inputs)
            self.optimize(name, out["loss"] if gain == 1 else out["loss"] * gain)
            return {k: v.detach() for k, v in out.items()}
        self.optimizers[name].zero_grad(set_to_none=True)
        parts: list[tuple[float, dict[str, torch.Tensor]]] = []
        for piece in zip(*(torch.tensor_split(x, rounds) for x in inputs)):
            share = int(piece[0].shape[0]) / rows
            out = loss_fn(*piece)
            w = share * gain
            self._backward(name, out["loss"] if w == 1 else out["loss"] * w)
            parts.append((share, {k: v.detach() for k, v in out.items()}))
        self._step(name)
        if len(parts) == 1:
            return parts[0][1]
        return {k: (sum(s * p[k] for s, p in parts) if parts[0][1][k].dim() == 0 else torch.cat([p[k] for _, p in parts]))
                for k in parts[0][1]}

    def _backward(self, name: str, loss: torch.Tensor) -> None:
        scaler = self.scalers.get(name)
        (scaler.scale(loss) if scaler is not None and scaler.is_enabled() else loss).backward()

    def _step(self, name: str) -> None:
        """The one place every optimiser step of every engine goes through: the gradients are averaged over the
        ranks (one flattened all-reduce; nothing in one process), then the step.

        Without a scaler, gradients are cleaned with nan_to_num first, as stylegan2-ada-pytorch does (after the
        all-reduce, so every rank cleans the same numbers): one inf would otherwise poison Adam's moments for
        good (and make the NaN guard halve the lr for nothing). Under fp16 the scaler's own check skips the step
        and lowers the scale instead (on every rank alike: they hold the same reduced gradients)."""
        opt = self.optimizers[name]
        sync_gradients(name, opt)
        scaler = self.scalers.get(name)
        if scaler is not None and scaler.is_enabled():
            scaler.step(opt)
            scaler.update()
        else:
            clean_gradients(opt)
            opt.step()

    def make_adam(self, params, lr: float | None = None, betas=None, weight_decay: float = 0.0) -> torch.optim.Adam:
        lr = self.config["lr"] if lr is None else lr
        betas = tuple(self.config["betas"] if betas is None else betas)
        kwargs = {"weight_decay": float(weight_decay)}
        if torch.cuda.is_available():
            kwargs["fused"] = True  # one kernel per step on GPU; CPU keeps the default foreach path
        try:
            return torch.optim.Adam(params, lr=lr, betas=betas, **kwargs)
        except (RuntimeError, TypeError):
            kwargs.pop("fused", None)
            return torch.optim.Adam(params, lr=lr, betas=betas, **kwargs)

    def scale_lr(self, factor: float) -> None:
        """Used by the trainer's NaN guard to retry with a lower learning rate. Engines with an lr schedule keep
        their base rate in each group's ``initial_lr`` (``set_lr_factor``); it is scaled too, so the lower lr
        survives the schedule."""
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g["lr"] *= factor
                if "initial_lr" in g:
                    g["initial_lr"] *= factor

    def set_lr_factor(self, factor: float, names: tuple[str, ...] | None = None) -> None:
        """An lr schedule's step: every group of the named optimisers (all by default) at ``initial_lr`` x factor."""
        for name, opt in self.optimizers.items():
            if names is None or name in names:
                for g in opt.param_groups:
                    g["lr"] = g["initial_lr"] * factor

    def augment_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.augment(x) if self.augment is not None else x

    def augment_feedback(self, real_logits: torch.Tensor) -> None:
        """After each D step: adaptive pipelines (ADA) tune their probability from D's real logits."""
        if self.augment is not None:
            self.augment.update(real_logits.detach())

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the trainer before each epoch (1-based): schedules (lr decay, warm-up phases) go here."""

    # ---- the contract ----------------------------------------------------------
    def train_step(self, batch) -> dict[str, torch.Tensor | float]:
        raise NotImplementedError

    @property
    def z_dim(self) -> int:
        return int(self.config["z_dim"])

    def latent(self, n: int, seed: int | None = 0) -> torch.Tensor:
        """Latents from a private generator: the same seed gives the same z on every device."""
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        return torch.randn(n, self.z_dim, generator=g).to(self.device)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """z -> images in [-1, 1] with the sampling network (EMA where the engine keeps one)."""
        raise NotImplementedError

    @torch.inference_mode()
    def sample(self, z: torch.Tensor | None = None, n: int | None = None, seed: int | None = 0,
               batch_size: int = 64, **gen_kwargs) -> torch.Tensor:
        """Images in [-1, 1]; ``gen_kwargs`` go to ``generate`` (e.g. ``truncation_psi`` for StyleGAN2)."""
        if z is None:
            if n is None:
                raise ValueError("sample() needs z or n")
            z = self.latent(n, seed)
        gen_kwargs = self.sample_kwargs(seed, gen_kwargs)
        was_training = self.training
        self.eval()
        try:
            out = [self.generate(z[i:i + batch_size].to(self.device), **_batch_rows(gen_kwargs, i, batch_size, len(z)))
                   .float().clamp(-1, 1) for i in range(0, len(z), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out)

    def sample_kwargs(self, seed: int | None, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The ``generate`` keyword arguments of one ``sample`` call: inside ``metrics_sampling()`` the
        engine's ``metrics_sample_kwargs`` under the caller's own. Engines whose metric samples need more
        (StyleGAN2: a noise generator seeded from ``seed``) extend this."""
        if self.metrics_sample_kwargs and _METRICS_SAMPLING.get():
            return {**self.metrics_sample_kwargs, **gen_kwargs}
        return dict(gen_kwargs)

    @torch.inference_mode()
    def interpolate(self, seed_a: int, seed_b: int, frames: int = 24, mode: str = "slerp",
                    **gen_kwargs) -> torch.Tensor:
        """A latent walk from seed_a to seed_b: ``frames`` images in [-1, 1] (slerp or lerp in z)."""
        if mode not in ("slerp", "lerp"):
            raise ValueError(f"interpolation mode must be 'slerp' or 'lerp', not {mode!r}")
        za, zb = self.latent(1, seed_a), self.latent(1, seed_b)
        t = torch.linspace(0, 1, frames, device=za.device)
        z = slerp(za, zb, t) if mode == "slerp" else lerp(za, zb, t)
        return self.sample(z, **gen_kwargs)

    def export_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def run_info(self) -> dict[str, Any]:
        """Engine facts for run.json (e.g. a pretrained network's file and hash)."""
        return {}

    def export_extra(self) -> dict[str, Any]:
        """Extra JSON-able facts for the export config (e.g. what the app can do with it)."""
        return {}

    def frozen_state_keys(self) -> list[str]:
        """State-dict keys of pretrained, frozen networks that are reloaded from their own files (e.g. a
        projected discriminator's feature network): left out of checkpoints, which stay small."""
        return []

    def state_dict_full(self) -> dict[str, Any]:
        modules = self.state_dict()
        for k in self.frozen_state_keys():
            modules.pop(k, None)
        return {
            "modules": modules,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "augment": self.augment.state_dict() if hasattr(self.augment, "state_dict") else None,
        }

    def load_state_dict_full(self, state: dict[str, Any]) -> None:
        modules = state["modules"]
        frozen = self.frozen_state_keys()
        if frozen:
            own = self.state_dict()
            modules = {**{k: own[k] for k in frozen}, **modules}
        self.load_state_dict(modules)
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        saved = state.get("scalers") or {}
        if not saved and state.get("scaler"):  # checkpoints before per-optimiser scalers had one for all
            saved = {k: state["scaler"] for k in self.scalers}
        for k, s in self.scalers.items():
            if saved.get(k):
                s.load_state_dict(saved[k])
        if state.get("augment") and hasattr(self.augment, "load_state_dict"):
            self.augment.load_state_dict(state["augment"])


def _batch_rows(kwargs: dict[str, Any], start: int, size: int, n: int) -> dict[str, Any]:
    """One batch's ``generate`` keyword arguments: a tensor with one row per latent (a conditional engine's
    labels) is cut like z; everything else is passed whole."""
    return {k: v[start:start + size] if torch.is_tensor(v) and v.dim() > 0 and len(v) == n else v
            for k, v in kwargs.items()}


_METRICS_SAMPLING: contextvars.ContextVar[bool] = contextvars.ContextVar("pokelab_metrics_sampling", default=False)


@contextlib.contextmanager
def metrics_sampling():
    """Inside this block ``Engine.sample`` adds the engine's ``metrics_sample_kwargs``: samples are drawn the
    way the engine's reference implementation draws them for FID/KID (engines.metrics.evaluate enters it)."""
    token = _METRICS_SAMPLING.set(True)
    try:
        yield
    finally:
        _METRICS_SAMPLING.reset(token)


@contextlib.contextmanager
def no_tf32():
    """Full fp32 matmuls and convolutions on CUDA inside the block (TF32 off), restored afterwards.

    Gradient penalties (R1, path length, WGAN-GP) differentiate twice through D or G: TF32's 10-bit mantissa
    turns their small gradient norms into noise, which is why stylegan2-ada-pytorch runs with allow_tf32=False."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """No weight gradients for these modules inside the block (e.g. D during a G step: its gradients would be
    computed and thrown away). Parameters that were already frozen (a pretrained feature network) stay so."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def cuda_amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 only where the GPU computes it natively (compute capability 8.0+: A100, RTX 30xx and newer).
    ``torch.cuda.is_bf16_supported()`` also says yes on a T4 or V100, where bf16 is emulated and slow;
    those get fp16 with loss scaling."""
    major, _minor = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def clean_gradients(opt: torch.optim.Optimizer) -> None:
    """NaN -> 0, +-inf -> +-1e5 in every gradient the optimiser will use (in place)."""
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.view(-1, *([1] * (a.dim() - 1)))
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents (rows of a and b), for Gaussian z."""
    a2, b2 = a.flatten(1), b.flatten(1)
    an = a2 / a2.norm(dim=1, keepdim=True)
    bn = b2 / b2.norm(dim=1, keepdim=True)
    omega = torch.acos((an * bn).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))  # [B]
    t = t.view(-1, 1)
    so = torch.sin(omega)
    if float(so.abs().min()) < 1e-6:
        return lerp(a, b, t.view(-1))
    out = (torch.sin((1 - t) * omega) / so).unsqueeze(-1) * a2.unsqueeze(0) + \
          (torch.sin(t * omega) / so).unsqueeze(-1) * b2.unsqueeze(0)
    # [T, B, D] -> [T*B, ...]
    return out.reshape(-1, *a.shape[1:])


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Exponential moving average of parameters; buffers (BN stats) are copied."""
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm.detach(), 1 - decay)
        for be, bm in zip(ema.buffers(), model.buffers()):
            be.copy_(bm)


def init_dcgan_weights(m: nn.Module) -> None:
    """N(0, 0.02) convs, N(1, 0.02) norm scales (Radford et al.)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def n_upsamplings(image_size: int, base: int = 4) -> int:
    """How many x2 steps from a base x base map to image_size (image_size must be base * 2^k)."""
    k = math.log2(image_size / base)
    if image_size < base * 2 or k != int(k):
        raise ValueError(f"image size {image_size} must be {base} x a power of two (e.g. 32, 64, 128, 256)")
    return int(k)
