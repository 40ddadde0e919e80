"""ADA: adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data").

Every transform is applied per sample with probability ``p`` (times its own strength) to everything the
discriminator sees, real and fake alike; all of them are differentiable in the image, so G gets gradients
through them. ``p`` is tuned from D's outputs on reals (the overfitting heuristic r_t = E[sign(D(real))]):
every ``interval`` D steps

    p += sign(r_t - target) * (images seen in the interval) / (kimg * 1000),   clamped to [0, 1]

so p can go from 0 to 1 in ``kimg`` thousand images. ``target=None`` keeps p fixed.

The pipeline is the paper's "bgc" set plus cutout, in its order:
  geometric  x-flip, 90-degree rotations, integer translation, isotropic scaling, arbitrary rotation
             (twice, before and after the anisotropic scaling, each with 1 - sqrt(1 - p)), anisotropic
             scaling, fractional translation. All of them are folded into one affine matrix per sample
             and applied with a single bilinear ``grid_sample`` with reflection padding; integer-only
             transforms land exactly on pixel centres and so are lossless.
  colour     brightness, contrast, luma flip, hue rotation (about the luma axis), saturation, folded
             into one 4x4 homogeneous colour matrix per sample.
  cutout     a square of ``cutout_size`` x image size set to 0 (mid-grey in [-1, 1]).

Departures from the reference pipeline (docs/stylegan2_ada.md): no 2x wavelet supersampling around the
geometric warp (plain bilinear, so strong down-scaling aliases a little); normal draws are truncated at
``max_sigma`` standard deviations (2 by default) so the output stays in a bounded range (see
``value_bound``); cutout is on by default (``cutout=0`` gives the paper's "bgc" exactly, apart from that).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

# options that belong to other pipelines and arrive through the shared run config (the trainer's default
# augment_options carries DiffAugment's policy): accepted and ignored.
_FOREIGN_OPTIONS = {"policy"}

_STRENGTHS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
              "brightness", "contrast", "lumaflip", "hue", "saturation", "cutout")


class AdaptiveAugment:
    """``AdaptiveAugment(target=0.6, interval=4, kimg=500, p=0.0, **strengths)``; see the module docstring.

    Strength options (``xflip``, ``rotate90``, ``xint``, ``scale``, ``rotate``, ``aniso``, ``xfrac``,
    ``brightness``, ``contrast``, ``lumaflip``, ``hue``, ``saturation``, ``cutout``) multiply ``p`` for
    that transform; 0 disables it. Magnitudes follow the reference (``xint_max``, ``scale_std``, ...).
    """

    def __init__(self, target: float | None = 0.6, interval: int = 4, kimg: float = 500, p: float = 0.0, *,
                 xflip: float = 1, rotate90: float = 1, xint: float = 1, scale: float = 1, rotate: float = 1,
                 aniso: float = 1, xfrac: float = 1, brightness: float = 1, contrast: float = 1,
                 lumaflip: float = 1, hue: float = 1, saturation: float = 1, cutout: float = 1,
                 xint_max: float = 0.125, scale_std: float = 0.2, rotate_max: float = 1.0,
                 aniso_std: float = 0.2, xfrac_std: float = 0.125, brightness_std: float = 0.2,
                 contrast_std: float = 0.5, hue_max: float = 1.0, saturation_std: float = 1.0,
                 cutout_size: float = 0.5, max_sigma: float | None = 2.0, **other: Any):
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
            rt = float(self._sign_sum) / max(self._sign_n, 1)  # the one host sync per interval
            # no move on a non-finite r_t (a diverging D): the trainer's NaN guard deals with that
            adjust = math.copysign(1.0, rt - self.target) if math.isfinite(rt) and rt != self.target else 0.0
            self.p = min(max(self.p + adjust * self._sign_n / (self.kimg * 1000.0), 0.0), 1.0)
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
        """Largest |value| the pipeline can output for inputs in [-1, 1] (needs ``max_sigma``).

        Geometry (bilinear, reflection padding) and cutout stay inside the input range; brightness and
        contrast give |channel| <= a = (1 + b_max) * c_max; luma flip negates the grey component and hue
        rotates the chroma about the grey axis (both keep the bounds); saturation scales the chroma
        (norm <= a * sqrt(8/3)) by at most s_max."""
        if self.max_sigma is None:
            return math.inf
        k = self.max_sigma
        b = k * self.brightness_std if self.strength["brightness"] else 0.0
        c = 2 ** (k * self.contrast_std) if self.strength["contrast"] else 1.0
        s = 2 ** (k * self.saturation_std) if self.strength["saturation"] else 1.0
        a = (1 + b) * c
        if not (self.strength["hue"] or self.strength["saturation"] or self.strength["lumaflip"]):
            return a
        return a + max(s, 1.0) * a * math.sqrt(8 / 3)

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
        eye = torch.eye(3, device=dev).repeat(n, 1, 1)
        g_inv = eye.clone()  # output pixel -> input pixel, in centred pixel coordinates

        def where(mask, val, neutral):
            return torch.where(mask, val, torch.full_like(val, neutral))

        # x-flip
        i = torch.randint(0, 2, (n,), device=dev).float()
        i = where(self._mask(n, x, "xflip"), i, 0.0)
        g_inv = g_inv @ _scale2d(1 - 2 * i, torch.ones_like(i))
        # 90-degree rotations
        i = torch.randint(0, 4, (n,), device=dev).float()
        i = where(self._mask(n, x, "rotate90"), i, 0.0)
        # exact cos/sin of multiples of 90 degrees (cos(pi/2) in floating point is not 0)
        cos_t, sin_t = torch.tensor([1.0, 0.0, -1.0, 0.0], device=dev), torch.tensor([0.0, 1.0, 0.0, -1.0], device=dev)
        g_inv = g_inv @ _rotate2d_cs(cos_t[i.long()], -sin_t[i.long()])
        # integer translation (whole pixels, so lossless)
        t = (torch.rand(n, 2, device=dev) * 2 - 1) * self.xint_max
        t = torch.where(self._mask(n, x, "xint").unsqueeze(1), t, torch.zeros_like(t))
        g_inv = g_inv @ _translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h))
        # isotropic scaling (log-normal)
        s = torch.exp2(self._normal(n, x) * self.scale_std)
        s = where(self._mask(n, x, "scale"), s, 1.0)
        g_inv = g_inv @ _scale2d(1 / s, 1 / s)
        # arbitrary rotation, before and after the anisotropic scaling: P(either) = p * strength
        p_rot = 1 - math.sqrt(max(1 - min(self.p * self.strength["rotate"], 1.0), 0.0))
        theta = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.rotate_max
        theta = where(self._mask(n, x, "rotate", p_rot), theta, 0.0)
        g_inv = g_inv @ _rotate2d(-theta)
        s = torch.exp2(self._normal(n, x) * self.aniso_std)
        s = where(self._mask(n, x, "aniso"), s, 1.0)
        g_inv = g_inv @ _scale2d(1 / s, s)
        theta = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.rotate_max
        theta = where(self._mask(n, x, "rotate", p_rot), theta, 0.0)
        g_inv = g_inv @ _rotate2d(-theta)
        # fractional translation
        t = self._normal(n, x, cols=2) * self.xfrac_std
        t = torch.where(self._mask(n, x, "xfrac").unsqueeze(1), t, torch.zeros_like(t))
        g_inv = g_inv @ _translate2d(-t[:, 0] * w, -t[:, 1] * h)

        if not any(self.strength[k] for k in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")):
            return x
        # sampling grid: every output pixel centre mapped through g_inv to the input, in pixel units
        cy = torch.arange(h, device=dev, dtype=torch.float32) + (0.5 - h / 2)
        cx = torch.arange(w, device=dev, dtype=torch.float32) + (0.5 - w / 2)
        pts = torch.stack([cx.view(1, w).expand(h, w), cy.view(h, 1).expand(h, w), torch.ones(h, w, device=dev)])
        src = (g_inv @ pts.view(1, 3, h * w))[:, :2]                   # [n, 2, h*w], centred pixel coords
        idx = src + torch.tensor([w / 2 - 0.5, h / 2 - 0.5], device=dev).view(1, 2, 1)  # pixel indices
        # snap indices within 1e-4 of a pixel centre (flips, 90-degree turns, integer shifts): those warps
        # then copy pixels exactly instead of blending them with weights like 0.99999
        near = torch.round(idx)
        idx = torch.where((idx - near).abs() < 1e-4, near, idx)
        size = torch.tensor([w, h], device=dev, dtype=torch.float32).view(1, 2, 1)
        grid = ((2 * idx + 1) / size - 1).transpose(1, 2).reshape(n, h, w, 2).to(x.dtype)  # align_corners=False
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _colour(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        dev = x.device
        eye = torch.eye(4, device=dev)
        m = eye.repeat(n, 1, 1)  # homogeneous [r, g, b, 1]
        v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev) / math.sqrt(3)  # the luma (grey) axis
        vv = torch.outer(v, v)

        def where(mask, val, neutral):
            return torch.where(mask, val, torch.full_like(val, neutral))

        b = self._normal(n, x) * self.brightness_std
        b = where(self._mask(n, x, "brightness"), b, 0.0)
        m = _translate3d(b) @ m
        k = torch.exp2(self._normal(n, x) * self.contrast_std)
        k = where(self._mask(n, x, "contrast"), k, 1.0)
        m = _scale3d(k) @ m
        i = torch.randint(0, 2, (n,), device=dev).float()
        i = where(self._mask(n, x, "lumaflip"), i, 0.0)
        m = (eye - 2 * vv * i.view(n, 1, 1)) @ m  # Householder reflection of the grey axis
        theta = (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.hue_max
        theta = where(self._mask(n, x, "hue"), theta, 0.0)
        m = _rotate_grey(theta) @ m
        s = torch.exp2(self._normal(n, x) * self.saturation_std)
        s = where(self._mask(n, x, "saturation"), s, 1.0)
        chroma = (eye - vv).clone()
        chroma[3, 3] = 0.0  # leave the homogeneous coordinate alone
        m = (vv + torch.diag(torch.tensor([0.0, 0.0, 0.0, 1.0], device=dev)) + chroma * s.view(n, 1, 1)) @ m

        m, k, b = m.to(x.dtype), k.to(x.dtype), b.to(x.dtype)
        if c == 3:
            y = torch.einsum("nij,njhw->nihw", m[:, :3, :3], x) + m[:, :3, 3].view(n, 3, 1, 1)
        else:
            # not RGB: only brightness and contrast make sense (per-sample scalar gain and offset)
            y = x * k.view(n, 1, 1, 1) + (b * k).view(n, 1, 1, 1)
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


# ---- 2-D (3x3) and colour (4x4) homogeneous matrices, batched over samples --------------------------
def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(sx.shape[0], 3, 3, device=sx.device)
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = sx, sy, 1.0
    return m


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, device=tx.device).repeat(tx.shape[0], 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    return _rotate2d_cs(torch.cos(theta), torch.sin(theta))


def _rotate2d_cs(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(c.shape[0], 3, 3, device=c.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1], m[:, 2, 2] = c, -s, s, c, 1.0
    return m


def _translate3d(t: torch.Tensor) -> torch.Tensor:
    m = torch.eye(4, device=t.device).repeat(t.shape[0], 1, 1)
    m[:, :3, 3] = t.view(-1, 1)
    return m


def _scale3d(k: torch.Tensor) -> torch.Tensor:
    m = torch.eye(4, device=k.device).repeat(k.shape[0], 1, 1)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = k
    return m


def _rotate_grey(theta: torch.Tensor) -> torch.Tensor:
    """Rodrigues' rotation by theta about the grey axis (1, 1, 1)/sqrt(3), as batched 4x4 matrices."""
    n = theta.shape[0]
    a = 1 / math.sqrt(3)
    k = torch.tensor([[0.0, -a, a], [a, 0.0, -a], [-a, a, 0.0]], device=theta.device)  # cross-product matrix
    aa = torch.full((3, 3), a * a, device=theta.device)  # outer(axis, axis)
    c, s = torch.cos(theta).view(n, 1, 1), torch.sin(theta).view(n, 1, 1)
    r = c * torch.eye(3, device=theta.device) + s * k + (1 - c) * aa
    m = torch.eye(4, device=theta.device).repeat(n, 1, 1)
    m[:, :3, :3] = r
    return m
