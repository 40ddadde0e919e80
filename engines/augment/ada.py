"""ADA: adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data").

Every transform is applied per sample with probability ``p`` (times its own strength) to everything the
discriminator sees, real and fake alike; all of them are differentiable in the image, so G gets gradients
through them. ``p`` is tuned from D's outputs on reals (the overfitting heuristic r_t = E[sign(D(real))]):
every ``interval`` D steps

    p += sign(r_t - target) * (images seen in the interval) / (kimg * 1000),   clamped to [0, 1]

so p can go from 0 to 1 in ``kimg`` thousand images. ``target=None`` keeps p fixed.

The default pipeline is the reference's default "bgc" (stylegan2-ada-pytorch ``--augpipe=bgc``), in its order:
  blit       x-flip, 90-degree rotations, integer translation: whole-pixel moves, done as one exact gather
             per sample (reflected at the borders, as the reference's reflect padding), so they never blur.
  geometric  isotropic scaling, arbitrary rotation (twice, before and after the anisotropic scaling, each with
             1 - sqrt(1 - p)), anisotropic scaling, fractional translation, folded into one matrix per
             sample and applied on a 2x supersampled image, as the reference: reflect-pad, upsample 2x with
             the sym6 wavelet low-pass, bilinear ``grid_sample``, low-pass and downsample 2x. Source positions
             outside the image are reflected about the border pixels (the reference's 'reflect').
  colour     brightness, contrast, luma flip, hue rotation (about the luma axis), saturation, folded into
             one 4x4 homogeneous colour matrix per sample.
  cutout     off by default (it belongs to the reference's "bgcfnc"); ``cutout=1`` sets a square of
             ``cutout_size`` x image size to 0 (mid-grey in [-1, 1]).
Gaussian draws are untruncated, as the reference's; ``max_sigma`` truncates them (then ``value_bound`` is
finite). The constants the pipeline needs are built once per device and dtype (no host-to-device copy per
call). Departures from the reference: docs/stylegan2_ada.md.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_, world_size

# options that belong to other pipelines and arrive through the shared run config (the trainer's default
# augment_options carries DiffAugment's policy): accepted and ignored.
_FOREIGN_OPTIONS = {"policy"}

_STRENGTHS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
              "brightness", "contrast", "lumaflip", "hue", "saturation", "cutout")
_GENERAL = ("scale", "rotate", "aniso", "xfrac")

# Daubechies' least-asymmetric wavelet with 6 vanishing moments ("sym6"): its decomposition low-pass filter,
# the reference's geometric anti-aliasing filter. Orthogonal, so 2x up then 2x down with it is the identity.
_SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
         0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
         -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)


class AdaptiveAugment:
    """``AdaptiveAugment(target=0.6, interval=4, kimg=500, p=0.0, **strengths)``; see the module docstring.

    Strength options (``xflip``, ``rotate90``, ``xint``, ``scale``, ``rotate``, ``aniso``, ``xfrac``,
    ``brightness``, ``contrast``, ``lumaflip``, ``hue``, ``saturation``, ``cutout``) multiply ``p`` for
    that transform; 0 disables it. The defaults are the reference's "bgc" (every one 1 but ``cutout``).
    Magnitudes follow the reference (``xint_max``, ``scale_std``, ...).
    """

    def __init__(self, target: float | None = 0.6, interval: int = 4, kimg: float = 500, p: float = 0.0, *,
                 xflip: float = 1, rotate90: float = 1, xint: float = 1, scale: float = 1, rotate: float = 1,
                 aniso: float = 1, xfrac: float = 1, brightness: float = 1, contrast: float = 1,
                 lumaflip: float = 1, hue: float = 1, saturation: float = 1, cutout: float = 0,
                 xint_max: float = 0.125, scale_std: float = 0.2, rotate_max: float = 1.0,
                 aniso_std: float = 0.2, xfrac_std: float = 0.125, brightness_std: float = 0.2,
                 contrast_std: float = 0.5, hue_max: float = 1.0, saturation_std: float = 1.0,
                 cutout_size: float = 0.5, max_sigma: float | None = None, **other: Any):
        unknown = sorted(set(other) - _FOREIGN_OPTIONS)
        if unknown:
            raise ValueError(f"unknown ADA option(s) {', '.join(unknown)}; known: target, interval, kimg, p, "
                             f"max_sigma, {', '.join(_STRENGTHS)} and their magnitudes (xint_max, scale_std, "
                             f"rotate_max, aniso_std, xfrac_std, brightness_std, contrast_std, hue_max, "
                             f"saturation_std, cutout_size)")
        if target is not None and not 0.0 <= float(target) <= 1.0:
            raise ValueError(f"ADA target must be in [0, 1] (or None for a fixed p), got {target}")
        if int(interval) < 1:
            raise ValueError(f"ADA interval must be >= 1 D steps, got {interval}")
        if float(kimg) <= 0:
            raise ValueError(f"ADA kimg must be > 0, got {kimg}")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"ADA p must be in [0, 1], got {p}")
        if max_sigma is not None and float(max_sigma) <= 0:
            raise ValueError("max_sigma must be > 0 (or None for untruncated draws)")
        self.target = None if target is None else float(target)
        self.interval = int(interval)
        self.kimg = float(kimg)
        self.p = float(p)
        self.strength = {k: float(v) for k, v in zip(_STRENGTHS, (
            xflip, rotate90, xint, scale, rotate, aniso, xfrac, brightness, contrast, lumaflip, hue,
            saturation, cutout))}
        for k, v in self.strength.items():
            if v < 0:
                raise ValueError(f"ADA strength {k} must be >= 0, got {v}")
        self.xint_max, self.scale_std, self.rotate_max = float(xint_max), float(scale_std), float(rotate_max)
        self.aniso_std, self.xfrac_std = float(aniso_std), float(xfrac_std)
        self.brightness_std, self.contrast_std = float(brightness_std), float(contrast_std)
        self.hue_max, self.saturation_std = float(hue_max), float(saturation_std)
        if not 0.0 < float(cutout_size) <= 1.0:
            raise ValueError(f"cutout_size is a fraction of the image side in (0, 1], got {cutout_size}")
        self.cutout_size = float(cutout_size)
        self.max_sigma = None if max_sigma is None else float(max_sigma)
        # feedback accumulated between adjustments (kept on D's device: no host sync per step)
        self._sign_sum: torch.Tensor | float = 0.0
        self._sign_n = 0
        self._updates = 0
        self.rt: float | None = None  # the last measured E[sign(D(real))]
        self._const_cache: dict[tuple, dict[str, torch.Tensor]] = {}

    # ---- feedback ---------------------------------------------------------------------------------
    def update(self, real_logits: torch.Tensor) -> None:
        """Call after each D step with D's logits on the (augmented) reals of that step."""
        if self.target is None:
            return
        logits = real_logits.detach().float()
        # torch.sign(nan) is 0: keep NaN as NaN so a diverging D cannot pass for a balanced one
        signs = torch.where(torch.isnan(logits), logits, logits.sign())
        self._sign_sum = self._sign_sum + signs.sum()
        self._sign_n += logits.numel()
        self._updates += 1
        if self._updates >= self.interval:
            sign_sum, sign_n = self._sign_sum, self._sign_n
            if world_size() > 1:  # r_t of the global batch: every rank moves p alike (stylegan2-ada's ada_stats)
                t = torch.stack([torch.as_tensor(sign_sum, dtype=torch.float64, device=logits.device),
                                 torch.tensor(float(sign_n), dtype=torch.float64, device=logits.device)])
                sign_sum, sign_n = all_reduce_(t).tolist()
            rt = float(sign_sum) / max(sign_n, 1)  # the one host sync per interval
            # no move on a non-finite r_t (a diverging D): the trainer's NaN guard deals with that
            adjust = math.copysign(1.0, rt - self.target) if math.isfinite(rt) and rt != self.target else 0.0
            self.p = min(max(self.p + adjust * sign_n / (self.kimg * 1000.0), 0.0), 1.0)
            self.rt = rt
            self._sign_sum, self._sign_n, self._updates = 0.0, 0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "rt": self.rt, "sign_sum": float(self._sign_sum), "sign_n": self._sign_n,
                "updates": self._updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p = float(state["p"])
        self.rt = state.get("rt")
        self._sign_sum = float(state.get("sign_sum", 0.0))
        self._sign_n = int(state.get("sign_n", 0))
        self._updates = int(state.get("updates", 0))

    # ---- the pipeline -----------------------------------------------------------------------------
    def value_bound(self) -> float:
        """Largest |value| the pipeline can output for inputs in [-1, 1] (infinite unless ``max_sigma`` truncates
        the Gaussian draws).

        The blit and cutout stay inside the input range; the supersampled warp's wavelet filters have negative
        taps, so it can overshoot, by at most g = (up-filter gain x down-filter gain)^2 (L1 norms: 3.69; about
        1.5 on noise in practice); brightness and contrast give |channel| <= a = (g + b_max) * c_max; luma flip
        negates the grey component and hue rotates the chroma about the grey axis (both keep the bounds);
        saturation scales the chroma (norm <= a * sqrt(8/3)) by at most s_max."""
        if self.max_sigma is None:
            return math.inf
        g = 1.0
        if any(self.strength[t] for t in _GENERAL):
            f = torch.tensor(_SYM6, dtype=torch.float64)
            f = f / f.sum()
            up = 2 * max(float(f[0::2].abs().sum()), float(f[1::2].abs().sum()))
            g = (up * float(f.abs().sum())) ** 2
        k = self.max_sigma
        b = k * self.brightness_std if self.strength["brightness"] else 0.0
        c = 2 ** (k * self.contrast_std) if self.strength["contrast"] else 1.0
        s = 2 ** (k * self.saturation_std) if self.strength["saturation"] else 1.0
        a = (g + b) * c
        if not (self.strength["hue"] or self.strength["saturation"] or self.strength["lumaflip"]):
            return a
        return a + max(s, 1.0) * a * math.sqrt(8 / 3)

    def _consts(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The pipeline's constant tensors on ``device`` in ``dtype``, built once (one copy to the GPU, not one
        per call: a host-to-device copy each call would stall the step on CUDA)."""
        key = (device, dtype)
        c = self._const_cache.get(key)
        if c is None:
            a = 1 / math.sqrt(3)
            v = torch.tensor([a, a, a, 0.0], dtype=torch.float64)  # the luma (grey) axis
            vv = torch.outer(v, v)
            chroma = torch.eye(4, dtype=torch.float64) - vv
            chroma[3, 3] = 0.0  # leave the homogeneous coordinate alone
            f = torch.tensor(_SYM6, dtype=torch.float64)
            corner = torch.zeros(4, 4, dtype=torch.float64)
            corner[3, 3] = 1.0                     # the homogeneous coordinate
            offset_rgb = torch.zeros(4, 4, dtype=torch.float64)
            offset_rgb[:3, 3] = 1.0                # the same offset on r, g and b
            cpu = {
                "eye3": torch.eye(3, dtype=torch.float64), "eye4": torch.eye(4, dtype=torch.float64),
                # exact cos/sin of multiples of 90 degrees (cos(pi/2) in floating point is not 0)
                "cos90": torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64),
                "sin90": torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64),
                "vv": vv, "grey": vv + corner,
                "chroma": chroma,
                # cross-product matrix of the grey axis and its outer product (Rodrigues' rotation)
                "k_grey": torch.tensor([[0.0, -a, a], [a, 0.0, -a], [-a, a, 0.0]], dtype=torch.float64),
                "aa_grey": torch.full((3, 3), a * a, dtype=torch.float64),
                "filter": f / f.sum(),  # normalised to sum 1 (gain 2 per axis when upsampling)
                "offset_rgb": offset_rgb, "diag_rgb": torch.eye(4, dtype=torch.float64) - corner,
                "corner": corner,
            }
            c = {k: t.to(device=device, dtype=dtype) for k, t in cpu.items()}
            self._const_cache[key] = c
        return c

    def _normal(self, n: int, x: torch.Tensor, cols: int = 1) -> torch.Tensor:
        z = torch.randn(n, cols, device=x.device)
        if self.max_sigma is not None:
            z = z.clamp(-self.max_sigma, self.max_sigma)
        return z.squeeze(1) if cols == 1 else z

    def _mask(self, n: int, x: torch.Tensor, name: str, prob: float | None = None) -> torch.Tensor:
        """Which samples get this transform. Drawn even for disabled transforms, so the random stream
        depends only on the batch shape (and on whether p > 0: p == 0 draws nothing)."""
        r = torch.rand(n, device=x.device)
        q = self.p * self.strength[name] if prob is None else prob
        return r < min(q, 1.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"ADA expects images [N, C, H, W], got shape {list(x.shape)}")
        if self.p <= 0.0:
            return x  # exactly the identity
        channels_last = x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous()
        dtype = x.dtype
        # in fp32 whatever the surrounding autocast: the colour matrices and the warp are cheap
        with torch.autocast(x.device.type, enabled=False):
            y = x if x.dtype == torch.float64 else x.float()
            y = self._geometric(y)
            y = self._colour(y)
            y = self._cutout(y)
        y = y.to(dtype)
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y.contiguous()

    def _geometric(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        k = self._consts(dev, torch.float32)
        eye = k["eye3"].expand(n, 3, 3)

        def where(mask, val, neutral):
            return torch.where(mask, val, torch.full_like(val, neutral))

        # ---- pixel blitting: whole-pixel moves (output pixel -> input pixel, centred pixel coordinates)
        b_inv = eye
        i = torch.randint(0, 2, (n,), device=dev).float()  # x-flip
        i = where(self._mask(n, x, "xflip"), i, 0.0)
        b_inv = b_inv @ _scale2d(1 - 2 * i, torch.ones_like(i))
        i = torch.randint(0, 4, (n,), device=dev)  # 90-degree rotations
        i = torch.where(self._mask(n, x, "rotate90"), i, torch.zeros_like(i))
        b_inv = b_inv @ _rotate2d_cs(k["cos90"][i], -k["sin90"][i])
        t = (torch.rand(n, 2, device=dev) * 2 - 1) * self.xint_max  # integer translation
        t = torch.where(self._mask(n, x, "xint").unsqueeze(1), t, torch.zeros_like(t))
        b_inv = b_inv @ _translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h))

        # ---- general geometric transforms
        g_inv = eye
        s = torch.exp2(self._normal(n, x) * self.scale_std)  # isotropic scaling (log-normal)
        on_scale = self._mask(n, x, "scale")
        g_inv = g_inv @ _scale2d(1 / where(on_scale, s, 1.0), 1 / where(on_scale, s, 1.0))
        # arbitrary rotation, before and after the anisotropic scaling: P(either) = p * strength
        p_rot = 1 - math.sqrt(max(1 - min(self.p * self.strength["rotate"], 1.0), 0.0))
        theta = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.rotate_max
        on_rot1 = self._mask(n, x, "rotate", p_rot)
        g_inv = g_inv @ _rotate2d(-where(on_rot1, theta, 0.0))
        s = torch.exp2(self._normal(n, x) * self.aniso_std)
        on_aniso = self._mask(n, x, "aniso")
        s = where(on_aniso, s, 1.0)
        g_inv = g_inv @ _scale2d(1 / s, s)
        theta = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.rotate_max
        on_rot2 = self._mask(n, x, "rotate", p_rot)
        g_inv = g_inv @ _rotate2d(-where(on_rot2, theta, 0.0))
        t = self._normal(n, x, cols=2) * self.xfrac_std  # fractional translation
        on_frac = self._mask(n, x, "xfrac")
        t = torch.where(on_frac.unsqueeze(1), t, torch.zeros_like(t))
        g_inv = g_inv @ _translate2d(-t[:, 0] * w, -t[:, 1] * h)

        if any(self.strength[k] for k in ("xflip", "rotate90", "xint")):
            x = _blit(x, b_inv)
        if not any(self.strength[k] for k in _GENERAL):
            return x
        moved = on_scale | on_rot1 | on_aniso | on_rot2 | on_frac
        # samples without a general transform keep their exact pixels (the supersampled identity is exact only
        # to rounding); the choice is made on the device, so no host sync
        warped = _warp(x, g_inv, self._consts(dev, x.dtype)["filter"], self._const_cache)
        return torch.where(moved.view(n, 1, 1, 1), warped, x)

    def _colour(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        dev = x.device
        k = self._consts(dev, torch.float32)
        eye, vv = k["eye4"], k["vv"]
        m = eye.expand(n, 4, 4)  # homogeneous [r, g, b, 1]

        def where(mask, val, neutral):
            return torch.where(mask, val, torch.full_like(val, neutral))

        b = self._normal(n, x) * self.brightness_std
        b = where(self._mask(n, x, "brightness"), b, 0.0)
        m = _translate3d(b, k) @ m
        s = torch.exp2(self._normal(n, x) * self.contrast_std)
        s = where(self._mask(n, x, "contrast"), s, 1.0)
        m = _scale3d(s, k) @ m
        i = torch.randint(0, 2, (n,), device=dev).float()
        i = where(self._mask(n, x, "lumaflip"), i, 0.0)
        m = (eye - 2 * vv * i.view(n, 1, 1)) @ m  # Householder reflection of the grey axis
        theta = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.hue_max
        theta = where(self._mask(n, x, "hue"), theta, 0.0)
        m = _rotate_grey(theta, k) @ m
        sat = torch.exp2(self._normal(n, x) * self.saturation_std)
        sat = where(self._mask(n, x, "saturation"), sat, 1.0)
        m = (k["grey"] + k["chroma"] * sat.view(n, 1, 1)) @ m

        m, s, b = m.to(x.dtype), s.to(x.dtype), b.to(x.dtype)
        if c == 3:
            y = torch.einsum("nij,njhw->nihw", m[:, :3, :3], x) + m[:, :3, 3].view(n, 3, 1, 1)
        else:
            # not RGB: only brightness and contrast make sense (per-sample scalar gain and offset)
            y = x * s.view(n, 1, 1, 1) + (b * s).view(n, 1, 1, 1)
        return y

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        centre = torch.rand(n, 2, device=dev)
        apply = self._mask(n, x, "cutout")
        if not self.strength["cutout"]:
            return x
        half = self.cutout_size / 2
        cx = (torch.arange(w, device=dev) + 0.5) / w
        cy = (torch.arange(h, device=dev) + 0.5) / h
        out_x = (cx.view(1, 1, w) - centre[:, 0].view(n, 1, 1)).abs() >= half
        out_y = (cy.view(1, h, 1) - centre[:, 1].view(n, 1, 1)).abs() >= half
        keep = (out_x | out_y) | ~apply.view(n, 1, 1)
        return x * keep.unsqueeze(1).to(x.dtype)


# ---- the blit and the supersampled warp -----------------------------------------------------------------
def _reflect_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """Positions (integer or not) folded into [0, n - 1] by reflection about the border pixels' centres
    (``F.pad(mode='reflect')``: index -1 reads 1, index n reads n - 2), for any distance outside."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i > n - 1, period - i, i)


def _pixel_centres(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """[3, h * w] homogeneous centred coordinates (x, y, 1) of the pixel centres, in ``like``'s dtype/device."""
    cy = torch.arange(h, device=like.device, dtype=like.dtype) - (h - 1) / 2
    cx = torch.arange(w, device=like.device, dtype=like.dtype) - (w - 1) / 2
    return torch.stack([cx.repeat(h), cy.repeat_interleave(w), torch.ones(h * w, device=like.device,
                                                                           dtype=like.dtype)])


def _blit(x: torch.Tensor, b_inv: torch.Tensor) -> torch.Tensor:
    """Whole-pixel moves (flips, 90-degree turns, integer shifts) as one gather per sample: every output pixel
    copies exactly one input pixel; positions outside the image read its reflection."""
    n, c, h, w = x.shape
    src = (b_inv @ _pixel_centres(h, w, b_inv))[:, :2]                     # [n, 2, h*w], centred
    sx = _reflect_index(torch.round(src[:, 0] + (w - 1) / 2), w).long()
    sy = _reflect_index(torch.round(src[:, 1] + (h - 1) / 2), h).long()
    idx = (sy * w + sx).unsqueeze(1).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, idx).reshape(n, c, h, w)


def _band_up(n: int, f: torch.Tensor) -> torch.Tensor:
    """[n, 2n] matrix of 2x upsampling along one axis with the low-pass ``f`` (length L, sum 1): zero insertion
    then filtering, gain 2. Output pixel 2k sits on input pixel k (as the reference; sym6's group delay is 5.1
    upsampled pixels, the filter offset L/2 - 1 = 5 of the reference's upfirdn2d)."""
    taps = f.numel()
    rows = torch.arange(n, device=f.device).view(n, 1).expand(n, taps)
    cols = 2 * rows - (taps // 2 - 1) + torch.arange(taps, device=f.device).view(1, taps)
    keep = (cols >= 0) & (cols < 2 * n)
    m = torch.zeros(n, 2 * n, device=f.device, dtype=f.dtype)
    m[rows[keep], cols[keep]] = (2 * f).expand(n, taps)[keep]
    return m


def _band_down(n: int, f: torch.Tensor) -> torch.Tensor:
    """[2n + L - 2, n] matrix of the adjoint: filter with ``f`` and keep every other pixel. Its input carries
    L/2 - 1 extra pixels before and after the 2n upsampled ones, which the filter reads."""
    taps = f.numel()
    cols = torch.arange(n, device=f.device).view(1, n).expand(taps, n)
    rows = 2 * cols + torch.arange(taps, device=f.device).view(taps, 1)
    m = torch.zeros(2 * n + taps - 2, n, device=f.device, dtype=f.dtype)
    m[rows.flatten(), cols.flatten()] = f.view(taps, 1).expand(taps, n).flatten()
    return m


def _bands(cache: dict, kind: str, n: int, f: torch.Tensor) -> torch.Tensor:
    """The resampling matrices, built once per (kind, size, device, dtype). Banded matrices multiplied densely
    are ~20x faster than depthwise (transposed) convolutions on a CPU, and plain GEMMs on a GPU."""
    key = (kind, n, f.device, f.dtype)
    m = cache.get(key)
    if m is None:
        m = cache[key] = (_band_up if kind == "up" else _band_down)(n, f)
    return m


def _fold(s: torch.Tensor, n: int, reach: int) -> torch.Tensor:
    """Source positions within ``reach`` pixels of the image are kept (the reflect-padded, upsampled image holds
    them); positions further out are reflected into the image."""
    return torch.where((s >= -reach) & (s <= n - 1 + reach), s, _reflect_index(s, n))


def _warp(x: torch.Tensor, g_inv: torch.Tensor, f: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
    """The general geometric transform, supersampled as in the reference: reflect-pad, upsample 2x with the
    wavelet low-pass, sample bilinearly at the transformed positions (those beyond the padding reflected into
    the image), low-pass and downsample 2x. ``g_inv`` maps output to input pixels in centred coordinates."""
    n, c, h, w = x.shape
    taps = f.numel()
    edge = taps // 2 - 1                                  # extra upsampled pixels the downsampling filter reads
    # padding: the positions the identity reads (edge / 2 px beyond the image) plus the upsampling filter's
    # reach (taps / 4 px), so that near the borders the warp equals the reference's padded one
    pad_x, pad_y = min(taps // 2 + 2, w - 1), min(taps // 2 + 2, h - 1)
    reach_x, reach_y = max(pad_x - taps // 4, 0), max(pad_y - taps // 4, 0)
    if pad_x > 0 or pad_y > 0:
        x = F.pad(x, [pad_x, pad_x, pad_y, pad_y], mode="reflect")
    cache = {} if cache is None else cache
    hp, wp = x.shape[-2:]
    up = torch.matmul(_bands(cache, "up", hp, f).t(), x @ _bands(cache, "up", wp, f))  # [n, c, 2 hp, 2 wp]
    # output sample positions: upsampled pixels j in [-edge, 2w + edge) at input position j / 2
    jx = torch.arange(-edge, 2 * w + edge, device=x.device, dtype=g_inv.dtype) / 2 - (w - 1) / 2
    jy = torch.arange(-edge, 2 * h + edge, device=x.device, dtype=g_inv.dtype) / 2 - (h - 1) / 2
    ow, oh = jx.numel(), jy.numel()
    pts = torch.stack([jx.repeat(oh), jy.repeat_interleave(ow), torch.ones(oh * ow, device=x.device,
                                                                            dtype=g_inv.dtype)])
    src = (g_inv @ pts)[:, :2]                            # [n, 2, oh*ow], centred input coordinates
    sx = _fold(src[:, 0] + (w - 1) / 2, w, reach_x)
    sy = _fold(src[:, 1] + (h - 1) / 2, h, reach_y)
    # input position s -> upsampled padded pixel 2 (s + pad) -> grid_sample's [-1, 1] (align_corners=False)
    uw, uh = up.shape[-1], up.shape[-2]
    gx = (4 * (sx + pad_x) + 1) / uw - 1
    gy = (4 * (sy + pad_y) + 1) / uh - 1
    grid = torch.stack([gx, gy], dim=-1).view(n, oh, ow, 2).to(up.dtype)
    y = F.grid_sample(up, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.matmul(_bands(cache, "down", h, f).t(), y @ _bands(cache, "down", w, f))


# ---- 2-D (3x3) and colour (4x4) homogeneous matrices, batched over samples --------------------------
def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    z, o = torch.zeros_like(sx), torch.ones_like(sx)
    return torch.stack([sx, z, z, z, sy, z, z, z, o], dim=1).view(-1, 3, 3)


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    z, o = torch.zeros_like(tx), torch.ones_like(tx)
    return torch.stack([o, z, tx, z, o, ty, z, z, o], dim=1).view(-1, 3, 3)


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    return _rotate2d_cs(torch.cos(theta), torch.sin(theta))


def _rotate2d_cs(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    z, o = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, -s, z, s, c, z, z, z, o], dim=1).view(-1, 3, 3)


def _translate3d(t: torch.Tensor, k: dict[str, torch.Tensor]) -> torch.Tensor:
    """Brightness: the same offset t on r, g and b."""
    return k["eye4"] + k["offset_rgb"] * t.view(-1, 1, 1)


def _scale3d(s: torch.Tensor, k: dict[str, torch.Tensor]) -> torch.Tensor:
    """Contrast: r, g and b scaled by s, the homogeneous coordinate kept."""
    return k["eye4"] + k["diag_rgb"] * (s.view(-1, 1, 1) - 1)


def _rotate_grey(theta: torch.Tensor, k: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rodrigues' rotation by theta about the grey axis (1, 1, 1)/sqrt(3), as batched 4x4 matrices."""
    n = theta.shape[0]
    c, s = torch.cos(theta).view(n, 1, 1), torch.sin(theta).view(n, 1, 1)
    r = c * k["eye3"] + s * k["k_grey"] + (1 - c) * k["aa_grey"]            # [n, 3, 3]
    return F.pad(r, [0, 1, 0, 1]) + k["corner"]                             # [[r, 0], [0, 1]]
