"""Progressive Growing of GANs (Karras, Aila, Laine and Lehtinen, ICLR 2018, "Progressive Growing of GANs for
Improved Quality, Stability, and Variation"); written from the paper and the official TensorFlow code
(tkarras/progressive_growing_of_gans: ``networks.py`` G_paper / D_paper, ``loss.py``, ``train.py``).

G  z -> pixel norm -> 4x4 block (equalised dense to 16 x C(4) values reshaped 4x4, bias, lrelu, pixel norm,
   3x3 conv, lrelu, pixel norm) -> per resolution 8..R: nearest x2, 3x3 conv, lrelu, pixel norm, 3x3 conv,
   lrelu, pixel norm. A 1x1 toRGB (linear) per resolution.
D  a 1x1 fromRGB (lrelu) per resolution; per resolution R..8: 3x3 conv, lrelu, 3x3 conv, 2x2 average pool,
   lrelu (the reference's fused conv + downscale: the pool comes before the bias and activation); at 4x4:
   minibatch standard deviation (groups of 4, one averaged feature map), 3x3 conv, lrelu, dense, lrelu,
   dense to one score.
Widths C(r) = min(channel_base // r, channel_max): 16384 / 512 gives the paper's 512 up to 32 px, then 256,
128, 64, 32, 16. Every weight has an equalised learning rate (stored N(0, 1), multiplied by
gain / sqrt(fan_in) when used: gain sqrt(2), 1 for toRGB and D's last layer, sqrt(2)/4 for G's first dense
as in the reference); biases start at 0; leaky ReLU slope 0.2.

Growing. Training starts at ``start_resolution`` (4x4). Each phase shows ``stable_kimg`` thousand images at
a resolution, then fades the next resolution in over ``fade_kimg`` thousand images with alpha going linearly
from 0 to 1 (the reference's TrainingSchedule; its ``lod`` is log2(R / r) + 1 - alpha during a fade).
During a fade G outputs (1 - alpha) * up(toRGB_old(x)) + alpha * toRGB_new(block(x)), D reads
(1 - alpha) * fromRGB_old(pool(img)) + alpha * block(fromRGB_new(img)) and the reals are blended the same way
(alpha * x + (1 - alpha) * up(pool(x)) at the new resolution). The phase is a pure function of the engine's
image counter ``nimg`` (a buffer in the checkpoint), so the generic trainer needs no change and a resumed run
continues exactly, mid-fade included. Real batches arrive at the full size and are average-pooled down.
The Adam state is reset at every phase boundary (start and end of each fade), as the reference's
``reset_opt_for_new_lod``.

Loss: WGAN-GP with the epsilon-drift term (the paper's):
  D: E[D(G(z))] - E[D(x)] + lambda E[(|grad D(x_hat)| / f - 1)^2] + eps_drift E[D(x)^2]
  G: -E[D(G(z))]
lambda 10, eps_drift 0.001; one D step then one G step per batch (D_repeats 1), fresh latents each.
f = R / r: the reference's D always takes full-size (upscaled) images, so its gradient norm is measured in
the full-resolution image; at resolution r that norm is the low-resolution gradient's divided by R / r.
Adam lr 0.001, betas (0, 0.99), eps 1e-8. G EMA: the paper's is beta 0.999 per step, a half-life of ~1% of a
phase at its batch sizes and 600 + 600 kimg phases; with our 20x shorter phases that EMA would lag a whole phase,
so the default half-life follows the schedule: ``ema_kimg`` "auto" = (stable_kimg + fade_kimg) / 30 thousand
images (2 kimg by default); ``ema_kimg: null`` uses ``ema_beta`` per step (0.999: the paper). The EMA generator
(with its phase) is used for every sample, grid, metric and export.
``generate`` returns the full image size at any phase (nearest upscaling of the current resolution).

The paper's batch size changes with the resolution (e.g. 128 at 4-16 px, 16 at 128 px); the generic trainer
has one batch size for the run: see docs/pggan.md.
"""
from __future__ import annotations

import copy
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Engine, ema_update, no_tf32
from ..registry import register

SQRT2 = math.sqrt(2.0)
MIN_SIZE, MAX_SIZE = 8, 1024


def _is_pow2(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v & (v - 1) == 0


def _wide(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 (half/bf16 -> fp32; fp64 stays, so gradient checks in double work)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


# ---- the growth schedule ---------------------------------------------------------------------------------
class Phase(NamedTuple):
    level: int        # index of the current resolution: resolution = 4 * 2 ** level
    alpha: float      # weight of the newest resolution (1 outside a fade)
    fading: bool      # inside a fade-in
    index: int        # 0, 1, 2, ... : stable 4, fade 8, stable 8, fade 16, ... (the Adam state resets on change)

    @property
    def resolution(self) -> int:
        return 4 * 2 ** self.level

    def label(self, image_size: int) -> str:
        if self.fading:
            return f"fading in {self.resolution} px (alpha {self.alpha:.2f}) of {image_size} px"
        if self.resolution >= image_size:
            return f"trained up to {self.resolution} px (full size)"
        return f"trained up to {self.resolution} px of {image_size} px"


def growth_phase(nimg: int, stable_nimg: int, fade_nimg: int, start_level: int, max_level: int) -> Phase:
    """The phase after ``nimg`` images, as the reference's TrainingSchedule: ``stable_nimg`` images at each
    resolution, then ``fade_nimg`` images fading the next one in (alpha 0 -> 1), until ``max_level``.

    The fade into level k starts at the first image after the stable part (alpha exactly 0 there) and ends
    where the stable part of level k starts (alpha 1). stable + fade = 0: no growing (start_level forever)."""
    nimg, stable_nimg, fade_nimg = int(nimg), int(stable_nimg), int(fade_nimg)
    dur = stable_nimg + fade_nimg
    if dur <= 0 or start_level >= max_level:
        return Phase(min(start_level, max_level), 1.0, False, 0)
    k, rem = divmod(max(nimg, 0), dur)
    if start_level + k >= max_level:  # fully grown: the index stops changing
        return Phase(max_level, 1.0, False, 2 * (max_level - start_level))
    if rem < stable_nimg:
        return Phase(start_level + k, 1.0, False, 2 * k)
    return Phase(start_level + k + 1, (rem - stable_nimg) / fade_nimg, True, 2 * k + 1)


# ---- equalised-learning-rate layers and the small pieces -------------------------------------------------
class EqualizedConv2d(nn.Module):
    """Conv with weights N(0, 1) scaled by gain / sqrt(fan_in) at run time ("equalised learning rate").

    ``down``: 2x2 average pooling after the conv and before the bias (the reference's fused conv + downscale,
    equal to conv -> pool)."""

    def __init__(self, cin: int, cout: int, kernel: int, gain: float = SQRT2, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin * kernel * kernel)
        self.pad, self.down = kernel // 2, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.scale, padding=self.pad)
        if self.down:
            x = F.avg_pool2d(x, 2)
        return x + self.bias.to(x.dtype).view(1, -1, 1, 1)


class EqualizedLinear(nn.Module):
    def __init__(self, cin: int, cout: int, gain: float = SQRT2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each pixel's feature vector scaled to unit mean square (over channels), in fp32."""
    y = _wide(x)
    return (y * (y.square().mean(1, keepdim=True) + eps).rsqrt()).to(x.dtype)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_norm(x)


class MinibatchStd(nn.Module):
    """The paper's minibatch standard deviation: split the batch into groups of ``group`` samples (sample i
    in group i % (N / group), as the reference's reshape), take each feature's std over the group, average
    over features and pixels, append as one constant feature map. The group shrinks to the largest size that
    divides the batch (the reference needs a divisible batch); ``group`` < 2 disables the layer."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = int(group)

    @property
    def extra_channels(self) -> int:
        return 1 if self.group > 1 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.group < 2:
            return x
        n, c, h, w = x.shape
        g = next(k for k in range(min(self.group, n), 0, -1) if n % k == 0)
        with torch.autocast(x.device.type, enabled=False):
            y = _wide(x).reshape(g, -1, c, h, w)
            y = (y - y.mean(0)).square().mean(0)          # variance over the group    [M, C, H, W]
            y = (y + 1e-8).sqrt().mean([1, 2, 3])         # std, averaged               [M]
            y = y.view(-1, 1, 1, 1).repeat(g, 1, h, w)    # back to every sample        [N, 1, H, W]
        return torch.cat([x, y.to(x.dtype)], 1)


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    return max(1, min(channel_base // res, channel_max))


# ---- the networks ----------------------------------------------------------------------------------------
class GBlock(nn.Module):
    """Nearest x2 (level > 0), two 3x3 convs, each followed by lrelu and pixel norm."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(cin, cout, 3)
        self.conv1 = EqualizedConv2d(cout, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = pixel_norm(_lrelu(self.conv0(x)))
        return pixel_norm(_lrelu(self.conv1(x)))


class GFirst(nn.Module):
    """z -> pixel norm -> dense (gain sqrt(2)/4) to C x 4 x 4 -> bias per channel, lrelu, pixel norm ->
    3x3 conv, lrelu, pixel norm."""

    def __init__(self, z_dim: int, ch: int):
        super().__init__()
        self.ch = ch
        self.weight = nn.Parameter(torch.randn(ch * 16, z_dim))
        self.scale = (SQRT2 / 4) / math.sqrt(z_dim)
        self.bias = nn.Parameter(torch.zeros(ch))
        self.conv = EqualizedConv2d(ch, ch, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.linear(pixel_norm(z), self.weight * self.scale).view(-1, self.ch, 4, 4)
        x = pixel_norm(_lrelu(x + self.bias.to(x.dtype).view(1, -1, 1, 1)))
        return pixel_norm(_lrelu(self.conv(x)))


class Generator(nn.Module):
    """z -> images at 4 * 2**level px (about [-1, 1]; linear output). The phase it samples at when none is
    given lives in buffers (``level``, ``alpha``): the EMA copy carries them into checkpoints and exports."""

    def __init__(self, z_dim: int, image_size: int, channel_base: int, channel_max: int, channels: int = 3):
        super().__init__()
        self.max_level = int(math.log2(image_size)) - 2
        ch = [channels_at(4 * 2 ** k, channel_base, channel_max) for k in range(self.max_level + 1)]
        self.z_dim = z_dim
        self.blocks = nn.ModuleList([GFirst(z_dim, ch[0])] +
                                    [GBlock(ch[k - 1], ch[k]) for k in range(1, self.max_level + 1)])
        self.to_rgb = nn.ModuleList([EqualizedConv2d(c, channels, 1, gain=1.0) for c in ch])
        self.register_buffer("level", torch.zeros((), dtype=torch.long))
        self.register_buffer("alpha", torch.ones(()))

    def set_phase(self, level: int, alpha: float) -> None:
        self.level.fill_(int(level))
        self.alpha.fill_(float(alpha))

    def forward(self, z: torch.Tensor, level: int | None = None, alpha: float | None = None) -> torch.Tensor:
        level = int(self.level) if level is None else int(level)
        alpha = float(self.alpha) if alpha is None else float(alpha)
        if not 0 <= level <= self.max_level:
            raise ValueError(f"level must be in [0, {self.max_level}], got {level}")
        x = self.blocks[0](z)
        prev = x
        for k in range(1, level + 1):
            prev, x = x, self.blocks[k](x)
        img = _wide(self.to_rgb[level](x))
        if level > 0 and alpha < 1:
            old = F.interpolate(_wide(self.to_rgb[level - 1](prev)), scale_factor=2, mode="nearest")
            img = torch.lerp(old, img, alpha)
        return img


class DBlock(nn.Module):
    """3x3 conv, lrelu, 3x3 conv + 2x2 average pool, lrelu: resolution r -> r / 2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(cin, cin, 3)
        self.conv1 = EqualizedConv2d(cin, cout, 3, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _lrelu(self.conv1(_lrelu(self.conv0(x))))


class DFinal(nn.Module):
    """4x4: minibatch std, 3x3 conv, lrelu, dense, lrelu, dense (gain 1) to one score."""

    def __init__(self, ch: int, ch_dense: int, mbstd_group: int):
        super().__init__()
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualizedConv2d(ch + self.mbstd.extra_channels, ch, 3)
        self.fc = EqualizedLinear(ch * 16, ch_dense)
        self.out = EqualizedLinear(ch_dense, 1, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _lrelu(self.conv(self.mbstd(x)))
        return self.out(_lrelu(self.fc(x.flatten(1)))).flatten()


class Discriminator(nn.Module):
    def __init__(self, image_size: int, channel_base: int, channel_max: int, mbstd_group: int = 4,
                 channels: int = 3):
        super().__init__()
        self.max_level = int(math.log2(image_size)) - 2
        ch = [channels_at(4 * 2 ** k, channel_base, channel_max) for k in range(self.max_level + 1)]
        self.from_rgb = nn.ModuleList([EqualizedConv2d(channels, c, 1) for c in ch])
        # blocks[k] takes level k to level k - 1 (blocks[0] is the 4x4 head)
        self.blocks = nn.ModuleList([DFinal(ch[0], channels_at(2, channel_base, channel_max), mbstd_group)] +
                                    [DBlock(ch[k], ch[k - 1]) for k in range(1, self.max_level + 1)])

    def forward(self, img: torch.Tensor, level: int, alpha: float = 1.0) -> torch.Tensor:
        """Scores [N] of images at 4 * 2**level px."""
        if img.shape[-1] != 4 * 2 ** level or img.shape[-2] != 4 * 2 ** level:
            raise ValueError(f"D at level {level} takes {4 * 2 ** level} px images, got {list(img.shape)}")
        x = _lrelu(self.from_rgb[level](img))
        if level > 0:
            x = self.blocks[level](x)
            if alpha < 1:
                old = _lrelu(self.from_rgb[level - 1](F.avg_pool2d(img, 2)))
                x = torch.lerp(old, x, alpha)
            for k in range(level - 1, 0, -1):
                x = self.blocks[k](x)
        return self.blocks[0](x)


# ---- losses ----------------------------------------------------------------------------------------------
def downsample_reals(x: torch.Tensor, resolution: int, alpha: float = 1.0) -> torch.Tensor:
    """Full-size reals -> the current resolution by average pooling; during a fade (alpha < 1) blended with
    their half-resolution version upscaled back (nearest), as the reference's ``process_reals``."""
    f = x.shape[-1] // resolution
    if f < 1 or x.shape[-1] % resolution:
        raise ValueError(f"cannot bring {x.shape[-1]} px reals to {resolution} px")
    x = F.avg_pool2d(x, f) if f > 1 else x
    if alpha < 1:
        low = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
        x = torch.lerp(low, x, alpha)
    return x


def gradient_penalty(D: nn.Module, real: torch.Tensor, fake: torch.Tensor, level: int, alpha: float,
                     norm_scale: float = 1.0) -> torch.Tensor:
    """Per-sample (|grad_x D(x_hat)| / norm_scale - 1)^2 on random interpolates (fp32, graph kept).

    ``norm_scale`` = R / r measures the gradient in the full-size image, as the reference does."""
    real, fake = _wide(real.detach()), _wide(fake.detach())
    mix = torch.rand(real.size(0), 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = torch.lerp(real, fake.to(real.dtype), mix).requires_grad_(True)
    scores = D(x_hat, level, alpha)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) / norm_scale - 1).square()


def d_wgan_loss(s_real: torch.Tensor, s_fake: torch.Tensor, gp: torch.Tensor, gp_lambda: float,
                eps_drift: float) -> dict[str, torch.Tensor]:
    """The paper's critic loss on per-sample scores: fake - real + lambda * GP + eps_drift * real^2."""
    drift = s_real.square().mean()
    wdist = s_real.mean() - s_fake.mean()
    total = -wdist + gp_lambda * gp.mean() + eps_drift * drift
    return {"total": total, "wasserstein": wdist, "gp": gp.mean(), "drift": drift}


# ---- the engine ------------------------------------------------------------------------------------------
@register
class PGGAN(Engine):
    """Progressive growing (Karras et al. 2018): 4 px -> image size with fade-ins, WGAN-GP + drift, G EMA."""

    name = "pggan"
    protocol_notes = (
        "PGGAN (Karras et al. 2018): Adam lr 0.001, betas (0, 0.99), eps 1e-8 as the paper, not the protocol's "
        "2e-4 (equalised learning rate keeps every weight at unit scale, so 2e-4 trains ~5x slower per step; "
        "docs/pggan.md); WGAN-GP lambda 10 + drift 0.001, one D step per G step; G EMA half-life (stable_kimg + "
        "fade_kimg) / 30 kimg instead of the paper's beta 0.999 per step (which would lag a whole shortened phase); "
        "growth 4 px -> image size with stable_kimg/fade_kimg 30/30 (the paper's 600/600 scaled to the "
        "protocol's ~650 kimg); one batch size for every resolution (the paper shrinks it as the resolution "
        "grows); Adam state reset at every phase boundary as the reference"
    )

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "lr": 0.001, "betas": [0.0, 0.99], "eps": 1e-8,
            "z_dim": 512, "channel_base": 16384, "channel_max": 512,
            "start_resolution": 4, "stable_kimg": 30.0, "fade_kimg": 30.0,
            "mbstd_group": 4, "gp_lambda": 10.0, "eps_drift": 0.001,
            "ema_kimg": "auto", "ema_beta": 0.999,  # ema_beta (per step, the paper's) only with ema_kimg null
            "reset_optimizer": True,
        }

    def __init__(self, config=None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self._check_config(self.config, self.image_size)
        self.max_level = int(math.log2(self.image_size)) - 2
        self.start_level = int(math.log2(int(c["start_resolution"]))) - 2
        self.stable_nimg = int(round(float(c["stable_kimg"]) * 1000))
        self.fade_nimg = int(round(float(c["fade_kimg"]) * 1000))
        G = Generator(int(c["z_dim"]), self.image_size, int(c["channel_base"]), int(c["channel_max"]))
        first = self.phase(0)
        G.set_phase(first.level, first.alpha)
        if training:
            self.G = G
            self.G_ema = copy.deepcopy(G).requires_grad_(False)
            self.D = Discriminator(self.image_size, int(c["channel_base"]), int(c["channel_max"]),
                                   int(c["mbstd_group"]))
            self.optimizers = {"D": self._adam(self.D.parameters()), "G": self._adam(self.G.parameters())}
            # the resume state beyond nets and optimisers lives in buffers (saved with the modules)
            self.register_buffer("nimg", torch.zeros((), dtype=torch.long))
            self.register_buffer("opt_phase", torch.full((), first.index, dtype=torch.long))
            self._mirror_buffers()
        else:
            self.G_ema = G.requires_grad_(False)

    # ---- configuration ------------------------------------------------------------------------------------
    @staticmethod
    def _check_config(c: dict[str, Any], image_size: int) -> dict[str, Any]:
        if not _is_pow2(image_size) or not MIN_SIZE <= image_size <= MAX_SIZE:
            raise ValueError(f"pggan grows to a power-of-two image size from {MIN_SIZE} to {MAX_SIZE} px "
                             f"(the project uses 32..1024), not {image_size}")
        for k in ("z_dim", "channel_base", "channel_max"):
            if not isinstance(c[k], int) or isinstance(c[k], bool) or c[k] < 1:
                raise ValueError(f"pggan setting {k} must be an integer >= 1, got {c[k]!r}")
        sr = c["start_resolution"]
        if not _is_pow2(sr) or not 4 <= sr <= image_size:
            raise ValueError(f"start_resolution must be a power of two from 4 to the image size ({image_size}), "
                             f"got {sr!r}")
        for k in ("stable_kimg", "fade_kimg"):
            if not isinstance(c[k], (int, float)) or isinstance(c[k], bool) or not c[k] >= 0:
                raise ValueError(f"{k} must be a number >= 0 (thousands of images), got {c[k]!r}")
        if round(float(c["stable_kimg"]) * 1000) + round(float(c["fade_kimg"]) * 1000) == 0 and sr != image_size:
            raise ValueError("stable_kimg + fade_kimg is 0 (no growing): set start_resolution to the image size "
                             f"({image_size}) to train without growing")
        if not isinstance(c["mbstd_group"], int) or c["mbstd_group"] < 0:
            raise ValueError(f"mbstd_group must be an integer >= 0 (0 or 1 disables the layer), got "
                             f"{c['mbstd_group']!r}")
        for k in ("gp_lambda", "eps_drift"):
            if not float(c[k]) >= 0:
                raise ValueError(f"{k} must be >= 0, got {c[k]!r}")
        if not float(c["lr"]) > 0:
            raise ValueError(f"lr must be > 0, got {c['lr']!r}")
        if not isinstance(c["betas"], (list, tuple)) or len(c["betas"]) != 2:
            raise ValueError("betas must be a pair, e.g. [0.0, 0.99]")
        if not isinstance(c["ema_beta"], (int, float)) or not 0 <= float(c["ema_beta"]) < 1:
            raise ValueError(f"ema_beta must be in [0, 1) (0: no averaging), got {c['ema_beta']!r}")
        ek = c["ema_kimg"]
        if not (ek is None or ek == "auto" or (isinstance(ek, (int, float)) and not isinstance(ek, bool) and ek > 0)):
            raise ValueError(f"ema_kimg must be 'auto' ((stable_kimg + fade_kimg) / 30), a half-life > 0 in kimg, "
                             f"or null (ema_beta per step), got {ek!r}")
        if not isinstance(c["reset_optimizer"], bool):
            raise ValueError("reset_optimizer must be true or false")
        return c

    def _adam(self, params) -> torch.optim.Optimizer:
        opt = self.make_adam(params)
        for g in opt.param_groups:
            g["eps"] = float(self.config["eps"])
        return opt

    def _mirror_buffers(self) -> None:
        # Python mirrors of the counters: the schedule is read every step without a device sync; the
        # buffers (saved in checkpoints) stay the truth
        self._nimg, self._opt_phase = int(self.nimg), int(self.opt_phase)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.training_mode:
            self._mirror_buffers()
        return result

    # ---- the schedule ---------------------------------------------------------------------------------
    def phase(self, nimg: int | None = None) -> Phase:
        """The growth phase after ``nimg`` images (default: the images this engine has trained on; for a
        sampling engine, e.g. a loaded export, the phase its generator samples at)."""
        if nimg is None:
            if not self.training_mode:
                return self.sampling_phase()
            nimg = self._nimg
        return growth_phase(nimg, self.stable_nimg, self.fade_nimg, self.start_level, self.max_level)

    def sampling_phase(self) -> Phase:
        """The phase the sampling generator (G_ema, also in an export) is at."""
        level, alpha = int(self.G_ema.level), float(self.G_ema.alpha)
        return Phase(level, alpha, alpha < 1, -1)

    def ema_beta(self, batch: int) -> float:
        """The EMA decay for one step of ``batch`` images."""
        c = self.config
        if c["ema_kimg"] is None:
            return float(c["ema_beta"])
        half_life = self.ema_half_life_nimg()
        return 0.5 ** (batch / half_life)

    def ema_half_life_nimg(self) -> float:
        """The EMA half-life in images when set by ``ema_kimg`` ("auto": a 30th of a grow phase; 10 kimg, as
        StyleGAN2's, when there is no growing)."""
        ek = self.config["ema_kimg"]
        if ek == "auto":
            dur = self.stable_nimg + self.fade_nimg
            return dur / 30 if dur > 0 else 10_000.0
        return float(ek) * 1000

    def _reset_optimizers(self) -> None:
        for opt in self.optimizers.values():
            opt.state.clear()  # moments and step counts: bias correction restarts, as the reference

    # ---- sampling -------------------------------------------------------------------------------------
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """z -> images at the full image size: G_ema at its phase, upscaled (nearest) from its resolution."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [N, {self.z_dim}], got {list(z.shape)}")
        img = self.G_ema(z.to(self.device))
        f = self.image_size // img.shape[-1]
        return F.interpolate(img, scale_factor=f, mode="nearest") if f > 1 else img

    def export_modules(self) -> dict[str, nn.Module]:
        return {"G_ema": self.G_ema}

    def export_extra(self) -> dict[str, Any]:
        ph = self.sampling_phase()
        growth = {"resolution": ph.resolution, "alpha": round(ph.alpha, 6), "fading": ph.fading,
                  "complete": ph.resolution >= self.image_size and not ph.fading,
                  "start_resolution": int(self.config["start_resolution"]), "image_size": self.image_size,
                  "label": ph.label(self.image_size)}
        if self.training_mode:
            growth["kimg"] = self._nimg / 1000
        return {"growth": growth}

    # ---- training -------------------------------------------------------------------------------------
    def train_step(self, real: torch.Tensor) -> dict[str, torch.Tensor | float]:
        if not self.training_mode:
            raise RuntimeError("this engine was built with training=False (an export): it cannot train")
        c = self.config
        n = real.size(0)
        G, D = self.G, self.D
        ph = self.phase()
        if ph.index != self._opt_phase:
            if c["reset_optimizer"]:
                self._reset_optimizers()
            self._opt_phase = ph.index
            self.opt_phase.fill_(ph.index)
        level, alpha, res = ph.level, ph.alpha, ph.resolution
        G.set_phase(level, alpha)
        x = downsample_reals(real, res, alpha)

        # -- D: WGAN-GP + drift on fresh fakes and the (faded) reals
        G.requires_grad_(False)
        D.requires_grad_(True)
        z = torch.randn(n, self.z_dim, device=real.device)
        with torch.no_grad(), self.autocast():
            fake = G(z, level, alpha)
        real_a, fake_a = self.augment_images(x), self.augment_images(fake)
        with self.autocast():
            s_real = D(real_a, level, alpha).float()
            s_fake = D(fake_a, level, alpha).float()
        with no_tf32():  # the penalty differentiates through D twice: full fp32 as the references
            gp = gradient_penalty(D, real_a, fake_a, level, alpha, norm_scale=self.image_size / res)
            d = d_wgan_loss(s_real, s_fake, gp, float(c["gp_lambda"]), float(c["eps_drift"]))
            self.optimize("D", d["total"])

        # -- G: maximise D's score of fresh fakes
        G.requires_grad_(True)
        D.requires_grad_(False)
        z = torch.randn(n, self.z_dim, device=real.device)
        with self.autocast():
            loss_g = -D(self.augment_images(G(z, level, alpha)), level, alpha).float().mean()
        self.optimize("G", loss_g)
        D.requires_grad_(True)

        # -- EMA of G (its phase buffers are copied with it); the growth schedule counts the images of every rank
        nb = self.global_batch(n)
        self._nimg += nb
        self.nimg.fill_(self._nimg)
        ema_update(self.G_ema, G, self.ema_beta(nb))

        # a critic has no 0.5 threshold: "real" above the midpoint of the mean real and fake scores (wgan_gp)
        mid = 0.5 * (s_real.mean() + s_fake.mean()).detach()
        return {
            "loss/D": d["total"].detach(), "loss/G": loss_g.detach(),
            "loss/gp": d["gp"].detach(), "loss/drift": d["drift"].detach(),
            "wasserstein": d["wasserstein"].detach(),
            "acc/D_real": (s_real > mid).float().mean(), "acc/D_fake": (s_fake < mid).float().mean(),
            "score/real": s_real.detach().mean(), "score/fake": s_fake.detach().mean(),
            "growth/resolution": float(res), "growth/alpha": float(alpha),
        }
