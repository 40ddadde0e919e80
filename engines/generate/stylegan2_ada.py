"""StyleGAN2 with adaptive discriminator augmentation (Karras et al. 2020: "Analyzing and Improving the
Image Quality of StyleGAN" and "Training Generative Adversarial Networks with Limited Data").

Config-F-like, written for 8..1024 px (powers of two; the project uses 32..256):

G  mapping      z -> normalise (2nd moment) -> ``mapping_layers`` equalised FC layers (lr x 0.01, lrelu) -> w;
                w_avg tracked with beta 0.995 while training; truncation w_avg + psi (w - w_avg) on the first
                ``cutoff`` of the ``num_ws`` style inputs.
   synthesis    learned constant 4x4 -> per resolution: [3x3 modulated conv with x2 up] -> 3x3 modulated conv
                -> toRGB (1x1 modulated conv, no demodulation); the RGB outputs are summed through x2
                upsampling ("skip" generator). Each conv: per-sample styles from an affine layer of w (bias 1),
                weight demodulation in fp32, a per-layer noise input with a learned strength, bias, leaky ReLU
                with gain sqrt(2), clamp to +-conv_clamp.
                Upsampling uses the FIR filter [1, 3, 3, 1] (outer product, zero padding), for features fused
                with the 3x3 conv as a stride-2 transposed conv followed by the filter, as in the reference.
D  residual     fromRGB at full resolution, then per resolution two 3x3 convs (the second with [1,3,3,1]
                blur + stride-2 down) plus a 1x1 skip (blur + down), summed with gain sqrt(1/2); at 4x4 a
                minibatch standard deviation layer (group 4, 1 channel), a 3x3 conv, FC, FC -> one logit.
All weights: equalised learning rate (stored N(0, 1), scaled by 1/sqrt(fan_in) at run time).

Training (``train_step``), in the reference's phase order Gmain, Greg, Dmain, Dreg:
  Gmain  non-saturating logistic loss softplus(-D(aug(G(z)))), style mixing with probability 0.9
  Greg   every ``pl_interval`` (4) G steps: path-length penalty on a batch / ``pl_batch_shrink`` (2),
         weight ``pl_weight`` (2), running mean decay 0.01, loss x interval (lazy regularisation)
  Dmain  softplus(D(aug(G(z)))) + softplus(-D(aug(x))); then ADA's p update from sign(D(aug(x)))
  Dreg   every ``r1_interval`` (16) D steps: R1 = gamma/2 * |grad_x D(aug(x))|^2 on reals, x interval;
         gamma "auto" = 0.0002 * res^2 / batch (the reference's auto config)
  Adam with the lazy-regularisation correction: lr * c and betas ** c, c = interval / (interval + 1).
  G_ema: half-life ``ema_kimg`` thousand images (default batch * 10 / 32) with ramp-up 0.05, used for every
  sample and export.
Precision (under the trainer's autocast), as the reference's num_fp16_res=4: only the top 4 resolutions of G
and D run in reduced precision; the mapping network, lower resolutions, the RGB skip path, D's epilogue and
the regularisers (with TF32 off) run in fp32. FID/KID samples use random noise, as the reference's metrics.
See docs/stylegan2_ada.md for the departures from the reference and how to size it for CPU or GPU.

Class-conditional with --labels (the reference's c_dim > 0; engines.labels): the label row joins z in the mapping
network (FC embedding, 2nd-moment normalisation, concatenation) and D projects it (a label mapping network gives
cmap; logit = sum(epilogue output * cmap) / sqrt(cmap_dim)). Without labels none of these layers exist.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Engine, ema_update, lerp, n_upsamplings, no_tf32, slerp
from ..distributed import all_reduce_mean
from ..labels import ConditionalEngine
from ..registry import register

SQRT2 = math.sqrt(2.0)


def noise_seed(seed: int) -> int:
    """The seed of a sample's noise generator: derived from, but not equal to, the latent seed (z comes from a
    CPU generator seeded with ``seed``; the noise must not replay the same stream)."""
    return (int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (2 ** 63)


def _fp32(x: torch.Tensor):
    """A region where autocast is off (the mapping network, demodulation, the low-resolution blocks, the RGB
    skip path and D's epilogue are computed in fp32)."""
    return torch.autocast(x.device.type, enabled=False)


def _precision(x: torch.Tensor, reduced: bool):
    """The autocast state of one block: as the caller set it where ``reduced``, else fp32."""
    return contextlib.nullcontext() if reduced else _fp32(x)


def fp16_resolution(image_size: int, num_fp16_res: int) -> int:
    """Lowest resolution whose blocks may run in reduced precision: the top ``num_fp16_res`` resolutions, never
    below 8 (the reference's rule; with the default 4: R/8, e.g. 16 px at 128 px)."""
    return max(2 ** (int(math.log2(image_size)) + 1 - int(num_fp16_res)), 8)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 (half/bf16 -> fp32; fp64 stays, so gradcheck in double works)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _clamp(x: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """conv_clamp guards fp16 activations against overflow; fp32/bf16 have the range, so skip the extra
    pass there (values near 256 do not occur in a healthy network)."""
    return x.clamp(-clamp, clamp) if clamp is not None and x.dtype == torch.float16 else x


def _lrelu(x: torch.Tensor, gain: float = SQRT2, clamp: float | None = None) -> torch.Tensor:
    return _clamp(F.leaky_relu(x, 0.2) * gain, clamp)


# ---- FIR resampling with the [1, 3, 3, 1] filter ----------------------------------------------------------
class FIR(nn.Module):
    """The separable [1, 3, 3, 1] filter (normalised to sum 1), applied depthwise with zero padding.

    Pixel centres follow the half-pixel convention, so x2 up then x2 down are aligned with the image."""

    def __init__(self):
        super().__init__()
        f = torch.tensor([1.0, 3.0, 3.0, 1.0])
        f = torch.outer(f, f)
        self.register_buffer("f", (f / f.sum())[None, None], persistent=False)

    def _kernel(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        return (self.f * gain).to(x.dtype).expand(x.shape[1], 1, 4, 4)

    def blur(self, x: torch.Tensor, pad: int, gain: float = 1.0) -> torch.Tensor:
        return F.conv2d(F.pad(x, [pad] * 4), self._kernel(x, gain), groups=x.shape[1])

    def up(self, x: torch.Tensor) -> torch.Tensor:
        # zero insertion + filter in one transposed conv (gain 4 restores the level); 2H output
        return F.conv_transpose2d(x, self._kernel(x, 4.0), stride=2, padding=1, groups=x.shape[1])

    def down(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, [1] * 4), self._kernel(x), stride=2, groups=x.shape[1])


# ---- equalised-learning-rate layers --------------------------------------------------------------------
class EqualLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias * self.lr_mul if self.bias is not None else None
        x = F.linear(x, self.weight * self.weight_gain, b)
        return _lrelu(x) if self.activation else x


class EqualConv2d(nn.Module):
    """Discriminator conv: optional [1,3,3,1] blur + stride-2 downsampling, bias, lrelu (gain, clamp)."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool = True, activation: bool = True,
                 down: bool = False, gain: float = 1.0, clamp: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.weight_gain = 1 / math.sqrt(cin * kernel * kernel)
        self.kernel, self.down, self.activation = kernel, down, activation
        self.gain, self.clamp = gain, clamp
        self.fir = FIR() if down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        if self.down and self.kernel == 1:
            x = F.conv2d(self.fir.down(x), w)
        elif self.down:
            # blur so that the strided 3x3 conv samples the [1,3,3,1]-filtered image: (2H + 1) -> H
            x = F.conv2d(self.fir.blur(x, pad=(self.kernel + 1) // 2), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.kernel // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).view(1, -1, 1, 1)
        if self.activation:
            clamp = self.clamp * self.gain if self.clamp is not None else None
            return _lrelu(x, SQRT2 * self.gain, clamp)
        x = x * self.gain if self.gain != 1 else x
        return _clamp(x, self.clamp * self.gain if self.clamp is not None else None)


# ---- the generator ---------------------------------------------------------------------------------------
def normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    return x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()


class MappingNetwork(nn.Module):
    """z (and a label c) -> w. With ``c_dim`` > 0 (a conditional run), as the reference's MappingNetwork: c (a
    multi-hot row [N, c_dim]) goes through an FC embedding (``w_dim`` wide, lr x 1), is normalised to a unit 2nd
    moment like z, and the two are concatenated before the FC layers. ``z_dim`` 0: c alone (the discriminator's
    label mapping); ``num_ws`` None: [N, w_dim] without broadcasting or a tracked w_avg."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int | None, layers: int = 8, lr_mul: float = 0.01,
                 w_avg_beta: float = 0.995, c_dim: int = 0):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.c_dim = z_dim, w_dim, num_ws, c_dim
        self.w_avg_beta = w_avg_beta
        if z_dim <= 0 and c_dim <= 0:
            raise ValueError("a mapping network needs a latent (z_dim > 0) or a label (c_dim > 0)")
        embed = w_dim if c_dim > 0 else 0
        if c_dim > 0:
            self.embed = EqualLinear(c_dim, embed)
        dims = [z_dim + embed] + [w_dim] * layers
        self.net = nn.Sequential(*[EqualLinear(a, b, lr_mul=lr_mul, activation=True)
                                   for a, b in zip(dims[:-1], dims[1:])])
        if num_ws is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor | None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool = False, c: torch.Tensor | None = None) -> torch.Tensor:
        """z [N, z_dim] (and c [N, c_dim]) -> ws [N, num_ws, w_dim], always in fp32 (the reference keeps the
        mapping out of fp16: its lr multiplier of 0.01 makes the weights' updates tiny and its output feeds every
        layer)."""
        ref = z if z is not None else c
        if self.c_dim > 0 and (c is None or c.dim() != 2 or c.shape[1] != self.c_dim):
            got = "none" if c is None else list(c.shape)
            raise ValueError(f"this mapping network is conditional: it needs labels [N, {self.c_dim}], got {got}")
        with _fp32(ref):
            x = normalize_2nd_moment(_wide(z)) if self.z_dim > 0 else None
            if self.c_dim > 0:
                y = normalize_2nd_moment(_wide(self.embed(_wide(c).to(self.embed.weight.dtype))))
                x = y if x is None else torch.cat([x, y], 1)
            w = _wide(self.net(x))
        if self.num_ws is None:
            return w
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], truncation_psi)
        return ws


class ModulatedConv(nn.Module):
    """Style-modulated conv. ``fused=True``: per-sample weights in one grouped conv (the paper's form);
    ``False``: scale the activations by the styles, one shared conv, scale by the demodulation
    coefficients — the same function, cheaper for training batches."""

    def __init__(self, cin: int, cout: int, kernel: int, w_dim: int, demodulate: bool = True,
                 up: bool = False):
        super().__init__()
        self.affine = EqualLinear(w_dim, cin, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.weight_gain = 1 / math.sqrt(cin * kernel * kernel)
        self.cin, self.cout, self.kernel = cin, cout, kernel
        self.demodulate, self.up = demodulate, up
        self.fir = FIR() if up else None

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = False) -> torch.Tensor:
        n = x.shape[0]
        with _fp32(x):
            styles = self.affine(_wide(w))                      # [N, I]
            weight = _wide(self.weight) * self.weight_gain      # [O, I, k, k]
            dcoefs = None
            if self.demodulate and x.dtype == torch.float16:
                # demodulation cancels any positive scale of the styles, so bring them to max |s| = 1 first:
                # the same function, but the fp16 activations x * s cannot overflow (as in the reference)
                styles = styles / styles.abs().amax(1, keepdim=True).clamp_min(1e-8)
            if self.demodulate:
                # |w'|^2 per output channel = sum_i s_i^2 sum_k w_oik^2, cheaper than building w'
                dcoefs = (styles.square() @ weight.square().sum([2, 3]).t() + 1e-8).rsqrt()  # [N, O]
        dtype = x.dtype
        if fused:
            wmod = weight.unsqueeze(0) * styles.view(n, 1, -1, 1, 1)
            if dcoefs is not None:
                wmod = wmod * dcoefs.view(n, -1, 1, 1, 1)
            xg = x.reshape(1, n * self.cin, *x.shape[2:])
            if self.up:
                wg = wmod.transpose(1, 2).reshape(n * self.cin, self.cout, self.kernel, self.kernel)
                y = F.conv_transpose2d(xg, wg.to(dtype), stride=2, groups=n)
            else:
                wg = wmod.reshape(n * self.cout, self.cin, self.kernel, self.kernel)
                y = F.conv2d(xg, wg.to(dtype), padding=self.kernel // 2, groups=n)
            y = y.reshape(n, self.cout, *y.shape[2:])
        else:
            y = x * styles.to(dtype).view(n, -1, 1, 1)
            if self.up:
                y = F.conv_transpose2d(y, weight.transpose(0, 1).to(dtype), stride=2)
            else:
                y = F.conv2d(y, weight.to(dtype), padding=self.kernel // 2)
            if dcoefs is not None:
                y = y * dcoefs.to(y.dtype).view(n, -1, 1, 1)
        if self.up:
            # the stride-2 transposed 3x3 conv gives 2H + 1; the [1,3,3,1] filter (gain 4) brings it to 2H
            y = self.fir.blur(y, pad=1, gain=4.0)
        return y


class SynthesisLayer(nn.Module):
    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int, up: bool = False,
                 conv_clamp: float | None = None):
        super().__init__()
        self.conv = ModulatedConv(cin, cout, 3, w_dim, demodulate=True, up=up)
        self.resolution = resolution
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused: bool = False, noise_generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.conv(x, w, fused=fused)
        if noise_mode == "random":
            shape = (x.shape[0], 1, self.resolution, self.resolution)
            if noise_generator is None:  # training: the global RNG (checkpointed by the trainer)
                noise = torch.randn(shape, device=x.device, dtype=x.dtype)
            else:  # seeded sampling: a private CPU generator, the same noise on every device
                noise = torch.randn(shape, generator=noise_generator).to(x.device, x.dtype)
            x = x + noise * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        x = x + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return _lrelu(x, SQRT2, self.conv_clamp)


class ToRGB(nn.Module):
    def __init__(self, cin: int, w_dim: int, channels: int = 3, conv_clamp: float | None = None):
        super().__init__()
        self.conv = ModulatedConv(cin, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = False) -> torch.Tensor:
        y = self.conv(x, w, fused=fused) + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return _clamp(y, self.conv_clamp)


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    return max(1, min(channel_base // res, channel_max))


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> images [N, 3, R, R] (about [-1, 1]); "skip" architecture."""

    def __init__(self, w_dim: int, image_size: int, channel_base: int, channel_max: int, channels: int = 3,
                 conv_clamp: float | None = 256, num_fp16_res: int = 4):
        super().__init__()
        k = n_upsamplings(image_size)
        self.resolutions = [4 * 2 ** i for i in range(k + 1)]
        self.fp16_resolution = fp16_resolution(image_size, num_fp16_res)
        ch = {r: channels_at(r, channel_base, channel_max) for r in self.resolutions}
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        self.convs0 = nn.ModuleList()  # the up-convs of resolutions 8..R
        self.convs1 = nn.ModuleList()
        self.torgbs = nn.ModuleList()
        self.fir = FIR()
        for r in self.resolutions:
            if r > 4:
                self.convs0.append(SynthesisLayer(ch[r // 2], ch[r], w_dim, r, up=True, conv_clamp=conv_clamp))
            self.convs1.append(SynthesisLayer(ch[r], ch[r], w_dim, r, conv_clamp=conv_clamp))
            self.torgbs.append(ToRGB(ch[r], w_dim, channels, conv_clamp=conv_clamp))
        # ws per block: 4x4 uses [conv1, torgb]; later blocks [conv0, conv1, torgb] with conv0 sharing the
        # previous torgb's index (as in the reference): 2 * log2(R) - 2 in all
        self.num_ws = 2 * (k + 1)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", fused: bool = False,
                noise_generator: torch.Generator | None = None) -> torch.Tensor:
        """Under autocast only the blocks from ``fp16_resolution`` up run in reduced precision (the reference's
        num_fp16_res); lower resolutions and the RGB skip path (upsampling and sums) stay in fp32."""
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', not {noise_mode!r}")
        if ws.dim() != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must be [N, {self.num_ws}, w_dim], got {list(ws.shape)}")
        n = ws.shape[0]
        x = self.const.unsqueeze(0).expand(n, -1, -1, -1)
        img = None
        for i, r in enumerate(self.resolutions):
            base = 2 * i - 1  # index of this block's first w (the 4x4 block has no conv0)
            reduced = r >= self.fp16_resolution
            with _precision(x, reduced):
                if not reduced:
                    x = _wide(x)
                if r > 4:
                    x = self.convs0[i - 1](x, ws[:, base], noise_mode, fused, noise_generator)
                x = self.convs1[i](x, ws[:, base + 1], noise_mode, fused, noise_generator)
                y = _wide(self.torgbs[i](x, ws[:, base + 2], fused))
            with _fp32(y):  # the image path stays in fp32
                img = y if img is None else self.fir.up(img) + y
        return img


class Generator(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, image_size: int, channel_base: int, channel_max: int,
                 mapping_layers: int = 8, mapping_lr_mul: float = 0.01, w_avg_beta: float = 0.995,
                 conv_clamp: float | None = 256, channels: int = 3, num_fp16_res: int = 4, c_dim: int = 0):
        super().__init__()
        self.synthesis = SynthesisNetwork(w_dim, image_size, channel_base, channel_max, channels, conv_clamp,
                                          num_fp16_res)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_mul, w_avg_beta,
                                      c_dim=c_dim)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: str = "const", fused: bool = False, c: torch.Tensor | None = None) -> torch.Tensor:
        ws = self.mapping(z, truncation_psi, truncation_cutoff, c=c)
        return self.synthesis(ws, noise_mode, fused)


# ---- the discriminator -----------------------------------------------------------------------------------
class MinibatchStd(nn.Module):
    """Appends the std of each feature over groups of ``group`` samples, averaged to ``channels`` maps."""

    def __init__(self, group: int = 4, channels: int = 1):
        super().__init__()
        self.group, self.channels = group, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # the largest group size <= self.group that divides the batch (the reference requires divisibility)
        g = next(k for k in range(min(self.group, n), 0, -1) if n % k == 0)
        f = self.channels
        with _fp32(x):
            y = _wide(x).reshape(g, -1, f, c // f, h, w)   # sample i is in group i % (n // g)
            y = (y - y.mean(0)).square().mean(0)
            y = (y + 1e-8).sqrt().mean([2, 3, 4])          # [n // g, f]
            y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], 1)


class DiscriminatorBlock(nn.Module):
    def __init__(self, cin: int, cout: int, conv_clamp: float | None):
        super().__init__()
        self.conv0 = EqualConv2d(cin, cin, 3, clamp=conv_clamp)
        self.conv1 = EqualConv2d(cin, cout, 3, down=True, gain=math.sqrt(0.5), clamp=conv_clamp)
        self.skip = EqualConv2d(cin, cout, 1, bias=False, activation=False, down=True, gain=math.sqrt(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.conv1(self.conv0(x))


class Discriminator(nn.Module):
    """Residual D. With ``c_dim`` > 0 (a conditional run) it projects the label, as the reference's
    Discriminator with ``cmap_dim``: a label mapping network (c -> FC embedding -> 2nd-moment normalisation ->
    ``mapping_layers`` FC layers, lr x 0.01, lrelu) gives cmap [N, cmap_dim]; the epilogue's last FC layer has
    ``cmap_dim`` outputs instead of one, and the logit is sum(out * cmap) / sqrt(cmap_dim)."""

    def __init__(self, image_size: int, channel_base: int, channel_max: int, channels: int = 3,
                 mbstd_group: int = 4, mbstd_channels: int = 1, conv_clamp: float | None = 256,
                 num_fp16_res: int = 4, c_dim: int = 0, cmap_dim: int | None = None, mapping_layers: int = 8,
                 mapping_lr_mul: float = 0.01):
        super().__init__()
        k = n_upsamplings(image_size)
        res = [image_size // 2 ** i for i in range(k + 1)]  # R ... 4
        self.image_size = image_size
        self.block_resolutions = res[:-1]
        self.fp16_resolution = fp16_resolution(image_size, num_fp16_res)
        ch = {r: channels_at(r, channel_base, channel_max) for r in res}
        self.from_rgb = EqualConv2d(channels, ch[image_size], 1, clamp=conv_clamp)
        self.blocks = nn.Sequential(*[DiscriminatorBlock(ch[r], ch[r // 2], conv_clamp) for r in res[:-1]])
        c4 = ch[4]
        if c4 % mbstd_channels:
            raise ValueError(f"mbstd_channels ({mbstd_channels}) must divide the 4x4 width ({c4})")
        self.mbstd = MinibatchStd(mbstd_group, mbstd_channels)
        self.conv = EqualConv2d(c4 + mbstd_channels, c4, 3, clamp=conv_clamp)
        self.fc = EqualLinear(c4 * 16, c4, activation=True)
        self.c_dim = int(c_dim)
        # cmap_dim null: the 4x4 width, the reference's default
        self.cmap_dim = (int(cmap_dim) if cmap_dim else c4) if self.c_dim > 0 else 0
        self.out = EqualLinear(c4, self.cmap_dim or 1)
        if self.c_dim > 0:  # built after the epilogue: an unconditional D keeps its layers (and their init) as before
            self.mapping = MappingNetwork(0, self.cmap_dim, None, mapping_layers, mapping_lr_mul, c_dim=self.c_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Logits in fp32. Under autocast the blocks from ``fp16_resolution`` up (and fromRGB) run in reduced
        precision; the lower blocks and the epilogue (minibatch std, 4x4 conv, FC layers) in fp32."""
        with _precision(x, self.image_size >= self.fp16_resolution):
            x = self.from_rgb(x if self.image_size >= self.fp16_resolution else _wide(x))
        for r, block in zip(self.block_resolutions, self.blocks):
            reduced = r >= self.fp16_resolution
            with _precision(x, reduced):
                x = block(x if reduced else _wide(x))
        with _fp32(x):
            x = self.conv(self.mbstd(_wide(x)))
            out = self.out(self.fc(x.flatten(1)))
            if self.cmap_dim:  # projection onto the label's cmap (DiscriminatorEpilogue with cmap_dim)
                cmap = self.mapping(None, c=c)
                out = (out * cmap).sum(1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
            return out.flatten()


# ---- the engine ------------------------------------------------------------------------------------------
@register
class StyleGAN2ADA(ConditionalEngine, Engine):
    name = "stylegan2_ada"
    cpu_channels_last = True  # its step 1.37x faster on this CPU (docs/decisions.md)
    default_augment = "ada"
    supports_batch_gpu = True
    # class-conditional with --labels (the label joins z in the mapping network, D projects it), else the
    # unconditional StyleGAN2 of before, parameter for parameter (engines.labels.ConditionalEngine)
    conditional = False
    labels_optional = True
    protocol_notes = (
        "StyleGAN2 (config-F-like, ADA 'auto' widths) with ADA: Adam lr 0.0025, betas (0, 0.99) from the paper, "
        "not the protocol's 2e-4 (with equalised learning rate the protocol's lr is ~12x slower per step; see "
        "docs/stylegan2_ada.md); lazy R1 every 16 D steps with gamma 0.0002*res^2/batch, path-length every 4 G "
        "steps, G EMA half-life batch*10/32 kimg with ramp-up 0.05 (the reference's auto config), style mixing "
        "0.9; reduced precision only in the top 4 resolutions; ADA target 0.6 with the 'bgc' pipe "
        "(engines.augment.ada)"
    )

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "lr": 0.0025, "betas": [0.0, 0.99], "eps": 1e-8,
            "z_dim": 512, "w_dim": 512, "mapping_layers": 8, "mapping_lr_mul": 0.01, "w_avg_beta": 0.995,
            "channel_base": 16384, "channel_max": 512, "conv_clamp": 256,
            "mbstd_group": 4, "mbstd_channels": 1,
            "style_mixing_prob": 0.9,
            "r1_gamma": "auto", "r1_interval": 16,
            "pl_weight": 2.0, "pl_interval": 4, "pl_decay": 0.01, "pl_batch_shrink": 2,
            # EMA half-life in thousands of images; null: batch * 10 / 32 (the reference's auto config), from the
            # batch of each step. ema_rampup: the half-life is at most ema_rampup x images seen (null: off)
            "ema_kimg": None, "ema_rampup": 0.05,
            "fused_modconv": False,
            # reduced precision (under the trainer's autocast) only for the top num_fp16_res resolutions of G
            # and D, as the reference; the rest, the mapping network and D's epilogue run in fp32
            "num_fp16_res": 4,
            # conditional runs: labels is filled in by the trainer from --labels (engines.labels.LabelSpec);
            # cmap_dim: width of D's label projection (null: D's 4x4 width, the reference's default)
            "labels": None, "cmap_dim": None,
        }

    def __init__(self, config=None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self._check_config(self.config)
        self.init_labels()  # sizes the label layers: K classes, or none (an unconditional run)
        gkw = dict(z_dim=int(c["z_dim"]), w_dim=int(c["w_dim"]), image_size=self.image_size,
                   channel_base=int(c["channel_base"]), channel_max=int(c["channel_max"]),
                   mapping_layers=int(c["mapping_layers"]), mapping_lr_mul=float(c["mapping_lr_mul"]),
                   w_avg_beta=float(c["w_avg_beta"]), conv_clamp=c["conv_clamp"],
                   num_fp16_res=int(c["num_fp16_res"]), c_dim=self.num_classes)
        G = Generator(**gkw)
        self.num_ws = G.num_ws
        if training:
            self.G = G
            self.G_ema = copy.deepcopy(G).requires_grad_(False)
            self.D = Discriminator(self.image_size, int(c["channel_base"]), int(c["channel_max"]),
                                   mbstd_group=int(c["mbstd_group"]), mbstd_channels=int(c["mbstd_channels"]),
                                   conv_clamp=c["conv_clamp"], num_fp16_res=int(c["num_fp16_res"]),
                                   c_dim=self.num_classes, cmap_dim=c["cmap_dim"])
            # lazy regularisation: the main and the regularisation steps share one Adam whose lr and betas
            # are corrected for the regularisation steps it also takes (c = interval / (interval + 1))
            self.optimizers = {
                "G": self._lazy_adam(self.G.parameters(), int(c["pl_interval"]) if c["pl_weight"] else 0),
                "D": self._lazy_adam(self.D.parameters(), int(c["r1_interval"]) if self._r1_on() else 0),
            }
            # everything a resumed run needs to continue exactly lives in buffers (saved with the modules)
            self.register_buffer("g_steps", torch.zeros((), dtype=torch.long))
            self.register_buffer("d_steps", torch.zeros((), dtype=torch.long))
            self.register_buffer("nimg", torch.zeros((), dtype=torch.long))
            self.register_buffer("pl_mean", torch.zeros(()))
            self.register_buffer("last_r1", torch.zeros(()))
            self.register_buffer("last_pl", torch.zeros(()))
            self.register_buffer("last_pl_length", torch.zeros(()))
            self._counters_from_buffers()
        else:
            self.G_ema = G.requires_grad_(False)

    def _counters_from_buffers(self) -> None:
        # Python mirrors of the step counters: the lazy-regularisation schedule and the EMA ramp-up read
        # these, so a step never waits on the GPU; the buffers (saved in checkpoints) stay the truth.
        self._g_steps, self._d_steps, self._nimg = int(self.g_steps), int(self.d_steps), int(self.nimg)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.training_mode:
            self._counters_from_buffers()
        return result

    # ---- configuration -----------------------------------------------------------------------------------
    @staticmethod
    def _check_config(c: dict[str, Any]) -> dict[str, Any]:
        for k in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "r1_interval",
                  "pl_interval", "pl_batch_shrink", "mbstd_group", "mbstd_channels"):
            if int(c[k]) < 1:
                raise ValueError(f"stylegan2_ada setting {k} must be >= 1, got {c[k]}")
        if int(c["channel_base"]) < 4:
            raise ValueError("channel_base must be >= 4 (width at resolution r is min(channel_base // r, "
                             "channel_max))")
        if c["r1_gamma"] != "auto" and (not isinstance(c["r1_gamma"], (int, float)) or c["r1_gamma"] < 0):
            raise ValueError(f"r1_gamma must be 'auto' or a number >= 0, got {c['r1_gamma']!r}")
        if not 0 <= float(c["style_mixing_prob"]) <= 1:
            raise ValueError("style_mixing_prob must be in [0, 1]")
        if (c["ema_kimg"] is not None and float(c["ema_kimg"]) < 0) or \
                (c["ema_rampup"] is not None and float(c["ema_rampup"]) <= 0):
            raise ValueError("ema_kimg must be null (batch * 10 / 32) or >= 0, and ema_rampup null or > 0")
        if int(c["num_fp16_res"]) < 0:
            raise ValueError("num_fp16_res must be >= 0 (0: every layer in fp32 even under mixed precision)")
        if c["conv_clamp"] is not None and float(c["conv_clamp"]) <= 0:
            raise ValueError("conv_clamp must be null or > 0")
        if len(c["betas"]) != 2:
            raise ValueError("betas must be a pair, e.g. [0.0, 0.99]")
        if c["cmap_dim"] is not None and (isinstance(c["cmap_dim"], bool) or not isinstance(c["cmap_dim"], int)
                                          or c["cmap_dim"] < 1):
            raise ValueError(f"cmap_dim must be null (D's 4x4 width) or a whole number >= 1, got {c['cmap_dim']!r}")
        return c

    def _r1_on(self) -> bool:
        return self.config["r1_gamma"] == "auto" or float(self.config["r1_gamma"]) > 0

    def _lazy_adam(self, params, interval: int) -> torch.optim.Optimizer:
        ratio = interval / (interval + 1) if interval else 1.0
        lr = float(self.config["lr"]) * ratio
        betas = [float(b) ** ratio for b in self.config["betas"]]
        opt = self.make_adam(params, lr=lr, betas=betas)
        for g in opt.param_groups:
            g["eps"] = float(self.config["eps"])
        return opt

    def ema_kimg(self, batch_size: int) -> float:
        """G EMA half-life in thousands of images: the setting, or batch * 10 / 32 when it is null (the
        reference's auto config: 10 kimg at its batch of 32)."""
        k = self.config["ema_kimg"]
        return batch_size * 10 / 32 if k is None else float(k)

    def ema_beta(self, batch_size: int) -> float:
        """This step's EMA decay, from the images seen before it (as the reference: the first step copies G)."""
        ema_nimg = self.ema_kimg(batch_size) * 1000
        if self.config["ema_rampup"] is not None:
            ema_nimg = min(ema_nimg, self._nimg * float(self.config["ema_rampup"]))
        return 0.5 ** (batch_size / max(ema_nimg, 1e-8)) if ema_nimg > 0 else 0.0

    def r1_gamma(self, batch_size: int) -> float:
        g = self.config["r1_gamma"]
        return 0.0002 * self.image_size ** 2 / batch_size if g == "auto" else float(g)

    # ---- sampling -------------------------------------------------------------------------------------
    #: FID/KID as the reference measures them: fresh per-sample noise (its metrics call G with the default
    #: noise_mode='random'); grids, the app and exports keep 'const', so an image depends on its seed alone
    metrics_sample_kwargs = {"noise_mode": "random"}

    def sample_kwargs(self, seed, gen_kwargs):
        """Seeded sampling with random noise draws the noise from a private generator seeded from ``seed``, so
        the trainer's evaluation and ``pokelab eval`` see the same images (not the training RNG's state)."""
        kw = super().sample_kwargs(seed, gen_kwargs)
        if kw.get("noise_mode") == "random" and seed is not None and kw.get("noise_generator") is None:
            kw["noise_generator"] = torch.Generator().manual_seed(noise_seed(seed))
        return kw

    def generate(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                 noise_mode: str = "const", noise_generator: torch.Generator | None = None,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        ws = self.mapping(z, truncation_psi, truncation_cutoff, labels=labels)
        return self.synthesis(ws, noise_mode, noise_generator)

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None, *,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """z [N, z_dim] (and, conditional runs, multi-hot labels [N, K]) -> ws [N, num_ws, w_dim] with G_ema
        (truncated towards w_avg by psi: the reference's one global average, also for labels)."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [N, {self.z_dim}], got {list(z.shape)}")
        if truncation_cutoff is not None and not 0 <= int(truncation_cutoff) <= self.num_ws:
            raise ValueError(f"truncation_cutoff must be in [0, {self.num_ws}], got {truncation_cutoff}")
        if labels is not None and not self.conditional:
            raise ValueError("this stylegan2_ada was trained without labels: it takes no labels")
        if self.conditional and (labels is None or labels.dim() != 2 or labels.shape != (z.shape[0], self.num_classes)):
            raise ValueError(f"a conditional stylegan2_ada needs labels [{z.shape[0]}, {self.num_classes}] with z, "
                             f"got {'none' if labels is None else list(labels.shape)}")
        c = labels.to(self.device, torch.float32) if labels is not None else None
        return self.G_ema.mapping(z.to(self.device), float(truncation_psi), truncation_cutoff, c=c)

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const",
                  noise_generator: torch.Generator | None = None) -> torch.Tensor:
        """ws [N, num_ws, w_dim] (or [N, w_dim], broadcast) -> images (about [-1, 1]) with G_ema."""
        w_dim = int(self.config["w_dim"])
        if ws.dim() == 2 and ws.shape[1] == w_dim:
            ws = ws.unsqueeze(1).repeat(1, self.num_ws, 1)
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {w_dim}] or [N, {w_dim}], got {list(ws.shape)}")
        # fp32 whatever the training precision: an export (no amp) must reproduce these samples exactly
        return self.G_ema.synthesis(ws.to(self.device), noise_mode, fused=bool(self.config["fused_modconv"]),
                                    noise_generator=noise_generator)

    def _seed_labels(self, labels, seeds) -> list[torch.Tensor | None]:
        """One label row [1, K] per seed (conditional runs): the chosen labels, or each seed's own draw from the
        training mix (as ``sample`` does); [None, ...] for an unconditional run (which refuses labels)."""
        if not self.conditional:
            if labels is not None:
                raise ValueError("this stylegan2_ada was trained without labels: it takes no labels")
            return [None] * len(seeds)
        return [self.label_rows(labels, 1, s) for s in seeds]

    @torch.inference_mode()
    def interpolate(self, seed_a: int, seed_b: int, frames: int = 24, mode: str = "lerp",
                    truncation_psi: float = 1.0, noise_mode: str = "const", labels=None) -> torch.Tensor:
        """A walk from seed_a to seed_b. ``lerp`` (the default, also ``w``): linear in W, the usual way for
        StyleGAN; ``slerp`` (also ``z``): spherical in Z, then mapped. Conditional runs hold one label along
        the walk (``labels``; None: the one drawn for ``seed_a``)."""
        if int(frames) < 1:
            raise ValueError("frames must be >= 1")
        if mode not in ("lerp", "w", "slerp", "z"):
            raise ValueError(f"interpolation mode must be 'lerp' (in W) or 'slerp' (in Z), not {mode!r}")
        y = self._seed_labels(labels, [seed_a])[0]
        za, zb = self.latent(1, seed_a), self.latent(1, seed_b)
        t = torch.linspace(0, 1, int(frames), device=za.device)
        if mode in ("lerp", "w"):
            wa, wb = self.mapping(za, truncation_psi, labels=y), self.mapping(zb, truncation_psi, labels=y)
            ws = lerp(wa, wb, t)  # [T, num_ws, w_dim]
        else:
            ws = self.mapping(slerp(za, zb, t), truncation_psi,
                              labels=y.expand(int(frames), -1) if y is not None else None)
        return torch.cat([self.synthesis(ws[i:i + 64], noise_mode).clamp(-1, 1)
                          for i in range(0, len(ws), 64)])

    @torch.inference_mode()
    def interpolate_labels(self, seed: int, label_a, label_b, frames: int = 24, truncation_psi: float = 1.0,
                           noise_mode: str = "const", mode: str = "lerp") -> torch.Tensor:
        """From ``label_a`` to ``label_b`` at ``seed``'s z: ``lerp`` (also ``w``, the default) walks straight in W
        between w(z, a) and w(z, b), as seed walks do; ``slerp`` (also ``z``, ``c``) mixes the label rows and maps
        each mix. Both ends are exactly ``sample(seed=seed, labels=a)`` and ``...labels=b``."""
        if mode not in ("lerp", "w", "slerp", "z", "c"):
            raise ValueError(f"interpolation mode must be 'lerp' (in W) or 'slerp' (label mixes), not {mode!r}")
        y = self.label_path(label_a, label_b, frames)
        z = self.latent(1, seed)
        if mode in ("lerp", "w"):
            wa = self.mapping(z, truncation_psi, labels=y[:1])
            wb = self.mapping(z, truncation_psi, labels=y[-1:])
            ws = lerp(wa, wb, torch.linspace(0, 1, len(y), device=z.device))
        else:
            ws = self.mapping(z.expand(len(y), -1), truncation_psi, labels=y)
        return torch.cat([self.synthesis(ws[i:i + 64], noise_mode).clamp(-1, 1) for i in range(0, len(ws), 64)])

    @torch.inference_mode()
    def style_mix(self, row_seeds, col_seeds, crossover: int, truncation_psi: float = 1.0,
                  noise_mode: str = "const", labels=None) -> torch.Tensor:
        """Images [len(rows) * len(cols), 3, R, R] in [-1, 1], row-major (nrow = len(col_seeds)): the styles
        ws[:crossover] (coarse) of each row seed with ws[crossover:] (fine) of each column seed.
        crossover = 0 gives the column images, crossover = num_ws the row images. Conditional runs: every seed
        with ``labels`` (None: each seed's own draw, as ``sample``)."""
        row_seeds, col_seeds = list(row_seeds), list(col_seeds)
        if not row_seeds or not col_seeds:
            raise ValueError("style_mix needs at least one row seed and one column seed")
        if not 0 <= int(crossover) <= self.num_ws:
            raise ValueError(f"crossover must be in [0, {self.num_ws}] (the number of style inputs), "
                             f"got {crossover}")
        def ws_of(seeds):
            ys = self._seed_labels(labels, seeds)
            return self.mapping(torch.cat([self.latent(1, s) for s in seeds]), truncation_psi,
                                labels=torch.cat(ys) if ys[0] is not None else None)
        wr, wc = ws_of(row_seeds), ws_of(col_seeds)
        r, c, k = len(row_seeds), len(col_seeds), int(crossover)
        ws = wc.unsqueeze(0).repeat(r, 1, 1, 1)                  # [R, C, num_ws, w_dim]
        ws[:, :, :k] = wr[:, None, :k]
        ws = ws.reshape(r * c, self.num_ws, -1)
        return torch.cat([self.synthesis(ws[i:i + 64], noise_mode).clamp(-1, 1) for i in range(0, len(ws), 64)])

    def export_modules(self) -> dict[str, nn.Module]:
        return {"G_ema": self.G_ema}

    def export_extra(self) -> dict[str, Any]:
        return self.label_extra({"supports": ["truncation", "style_mixing", "w_space"], "num_ws": self.num_ws,
                                 "w_dim": int(self.config["w_dim"]), "z_dim": self.z_dim,
                                 "noise_modes": ["const", "random", "none"]})

    # ---- training -------------------------------------------------------------------------------------
    def _run_G(self, z: torch.Tensor, update_w_avg: bool,
                c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """G(z, c) with style mixing regularisation (one crossover point per batch, like the reference; the
        second latent keeps the same label)."""
        ws = self.G.mapping(z, update_w_avg=update_w_avg, c=c)
        prob = float(self.config["style_mixing_prob"])
        if prob > 0:
            # scalars come from the CPU generator: no device sync, and the global RNG stays the only source
            cutoff = int(torch.randint(1, self.num_ws, ())) if self.num_ws > 1 else self.num_ws
            if float(torch.rand(())) >= prob:
                cutoff = self.num_ws
            ws2 = self.G.mapping(torch.randn_like(z), c=c)
            later = (torch.arange(self.num_ws, device=ws.device) >= cutoff).view(1, -1, 1)
            ws = torch.where(later, ws2, ws)
        img = self.G.synthesis(ws, "random", fused=bool(self.config["fused_modconv"]))
        return img, ws

    def r1_penalty(self, real: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample |grad_x D(aug(x), c)|^2 on reals (fp32; graph kept for the backward)."""
        x = _wide(real.detach()).requires_grad_(True)
        logits = self.D(self.augment_images(x), c)
        (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        return grad.square().sum([1, 2, 3])

    def pl_penalty(self, batch: int | torch.Tensor, update: bool = True,
                   c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Path-length penalty (|J_w^T y| - a)^2 per sample, y ~ N(0, I)/sqrt(H*W), for ``batch`` fresh latents
        (or these latents z; conditional runs: with labels ``c``, else labels drawn from the training mix);
        returns (penalty, lengths) and, with ``update``, moves the running mean a (pl_mean) with decay
        ``pl_decay``, towards the mean length over every rank's batch (one number all-reduced: the ranks keep one
        pl_mean, the one a single process would have)."""
        z = torch.randn(batch, self.z_dim, device=self.device) if isinstance(batch, int) else batch
        if self.conditional and c is None:
            c = self.label_spec.draw(len(z), None).to(z.device)
        img, ws = self._run_G(z, update_w_avg=False, c=c)
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(2).mean(1).sqrt()
        mean = self.pl_mean.lerp(all_reduce_mean(lengths.mean().detach()), float(self.config["pl_decay"]))
        if update:
            self.pl_mean.copy_(mean)
        return (lengths - mean).square(), lengths

    def _split_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """images, or (images, multi-hot labels) for a conditional run -> (images, labels or None)."""
        if isinstance(batch, (tuple, list)):
            if not self.conditional or len(batch) != 2:
                raise ValueError("this stylegan2_ada was built without labels: it trains on image batches (give "
                                 "the labels when the run starts: pokelab train stylegan2_ada --labels FILE)")
            return batch[0], batch[1].float()
        if self.conditional:
            raise ValueError("a conditional stylegan2_ada trains on (images, labels) batches (--labels)")
        return batch, None

    @staticmethod
    def _gen_labels(real_c: torch.Tensor | None, k: int) -> tuple[torch.Tensor, ...]:
        """The labels of ``k`` fakes for one phase, as extra ``accumulate`` inputs: () for an unconditional run;
        else drawn with replacement from the batch's labels, fresh for every phase (the reference draws each
        phase's gen_c from the training set's labels: the same distribution)."""
        if real_c is None:
            return ()
        return (real_c[torch.randint(len(real_c), (int(k),), device=real_c.device)],)

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        if not self.training_mode:
            raise RuntimeError("this engine was built with training=False (an export): it cannot train")
        real, real_c = self._split_batch(batch)
        c = self.config
        n = real.size(0)
        G, D = self.G, self.D

        # every phase computes its loss through accumulate(): in micro-batches of batch_gpu rows when the trainer
        # asks for them (gradients summed before the one step, as the reference's rounds), else all at once.
        # Batch-size-dependent settings (R1's auto gamma, the EMA, the image count) use the global batch.
        nb = self.global_batch(n)

        # -- Gmain: non-saturating logistic loss through the augmentation
        G.requires_grad_(True)
        D.requires_grad_(False)

        # conditional runs: each phase's labels ride along as an extra accumulate() input (split like z)
        def g_main(z, *gc):
            with self.autocast():
                fake, _ = self._run_G(z, True, *gc)
                return {"loss": F.softplus(-D(self.augment_images(fake), *gc).float()).mean()}
        z = torch.randn(n, self.z_dim, device=real.device)
        loss_g = self.accumulate("G", g_main, z, *self._gen_labels(real_c, n))["loss"]

        # -- Greg: lazy path-length regularisation (fp32, TF32 off: second-order gradients)
        pl_interval = int(c["pl_interval"])
        if float(c["pl_weight"]) > 0 and self._g_steps % pl_interval == 0:
            def g_reg(z, *gc):
                penalty, lengths = self.pl_penalty(z, True, *gc)
                return {"loss": penalty.mean() * float(c["pl_weight"]), "length": lengths.mean()}
            with no_tf32():
                z = torch.randn(max(1, n // int(c["pl_batch_shrink"])), self.z_dim, device=real.device)
                pl = self.accumulate("G", g_reg, z, *self._gen_labels(real_c, len(z)), gain=pl_interval)
            self.last_pl.copy_(pl["loss"])
            self.last_pl_length.copy_(pl["length"])
        self.g_steps += 1
        self._g_steps += 1

        # -- Dmain: logistic loss on augmented fakes and reals, then ADA's feedback
        G.requires_grad_(False)
        D.requires_grad_(True)

        def d_main(z, x, *cc):  # cc: (labels of the fakes, labels of the reals) in a conditional run
            gc, rc = cc if cc else (None, None)
            with torch.no_grad(), self.autocast():
                fake, _ = self._run_G(z, False, gc)
            with self.autocast():
                d_fake = D(self.augment_images(fake), gc).float()
                d_real = D(self.augment_images(x), rc).float()
                return {"loss": F.softplus(d_fake).mean() + F.softplus(-d_real).mean(),
                        "d_fake": d_fake, "d_real": d_real}
        z = torch.randn(n, self.z_dim, device=real.device)
        dm = self.accumulate("D", d_main, z, real, *self._gen_labels(real_c, n),
                             *((real_c,) if real_c is not None else ()))
        loss_d, d_fake, d_real = dm["loss"], dm["d_fake"], dm["d_real"]
        if self.augment is not None and hasattr(self.augment, "update"):
            self.augment.update(d_real)

        # -- Dreg: lazy R1 on reals (fp32, TF32 off)
        r1_interval = int(c["r1_interval"])
        gamma = self.r1_gamma(nb)
        if gamma > 0 and self._d_steps % r1_interval == 0:
            with no_tf32():
                loss_r1 = self.accumulate("D", lambda x, *rc: {"loss": self.r1_penalty(x, *rc).mean() * (gamma / 2)},
                                          real, *((real_c,) if real_c is not None else ()), gain=r1_interval)["loss"]
            self.last_r1.copy_(loss_r1)
        self.d_steps += 1
        self._d_steps += 1
        G.requires_grad_(True)

        # -- G_ema: half-life ema_kimg thousand images, ramped up over the first images
        beta = self.ema_beta(nb)
        ema_update(self.G_ema, self.G, beta)
        self.nimg += nb
        self._nimg += nb

        return {
            "loss/D": loss_d.detach(), "loss/G": loss_g.detach(),
            "acc/D_real": (d_real > 0).float().mean(), "acc/D_fake": (d_fake < 0).float().mean(),
            "loss/r1": self.last_r1.clone(), "loss/pl": self.last_pl.clone(),
            "pl_mean": self.pl_mean.clone(), "pl_length": self.last_pl_length.clone(),
            "ada/rt": d_real.detach().sign().mean(),
            "score/real": d_real.detach().mean(), "score/fake": d_fake.detach().mean(),
        }
