"""CartoonGAN (Chen, Lai & Liu, CVPR 2018): photo -> cartoon with one generator and an edge-promoting D.

G (A -> B): a flat 7x7 conv, two down-convolution blocks (stride-2 conv, conv, norm, ReLU), 8 residual
blocks, two up-convolution blocks (stride-1/2 transposed conv, conv, norm, ReLU) and a 7x7 conv with tanh.
D: a shallow patch discriminator (3x3 convs, two stride-2 stages, LeakyReLU 0.2, norm) with one output
per 4x4 input patch. Instance normalisation and reflection padding follow the authors' released model.

Losses (paper eqs. 1-3): L = L_adv + w * L_con with w = 10.
- Edge-promoting adversarial loss: D calls real cartoons real, and both generated pictures **and
  edge-smoothed cartoons** fake, so G must produce the clear edges that separate the two.
- Content loss: L1 between VGG features of the photo and of its cartoon (VGG19 conv4_4 in the paper;
  VGG16 conv4_3 here, the only ImageNet VGG available offline — see ``protocol_notes``).
- Initialisation: the first ``init_epochs`` epochs train G with the content loss alone (D untouched), so
  the adversarial phase starts from a generator that already reconstructs its input.

The edge smoothing (Canny edges, dilation, Gaussian blur inside the dilated band) is ``edge_smooth``, a
batched torch function that runs on the training device; docs/cartoongan.md explains every choice.
"""
from __future__ import annotations

import math
from pathlib import Path  # noqa: F401 - tests reach torch.hub's folder through it
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import bce_loss
from ..metrics.msssim import _gauss_window
from ..registry import register
from ..vgg import VGG16_FILE, VGGFeatures, VGGUnavailable, get_vgg_features, vgg16_state_dict  # noqa: F401
from .base import TranslationEngine, init_normal, lsgan_loss, patch_accuracy, set_requires_grad
from .cyclegan import ResnetBlock

# ---------------------------------------------------------------------------------------------------
# Edge smoothing (the paper's edge-promoted cartoon set, built on the fly)
# ---------------------------------------------------------------------------------------------------

_GRAY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, the RGB -> gray weights OpenCV's Canny users apply
_TAN_22_5 = math.tan(math.pi / 8)


def _check_edge_params(low: float, high: float, dilation: int, blur_kernel: int, blur_sigma: float,
                       hysteresis_iters: int) -> None:
    if not 0 <= float(low) <= float(high):
        raise ValueError(f"edge thresholds need 0 <= low <= high; got low={low}, high={high}")
    for name, k in (("dilation", dilation), ("blur kernel", blur_kernel)):
        if int(k) != k or int(k) < 1 or int(k) % 2 == 0:
            raise ValueError(f"the edge {name} size must be a positive odd integer (3, 5, 7, ...), not {k!r}")
    if not float(blur_sigma) > 0:
        raise ValueError(f"the edge blur sigma must be > 0, not {blur_sigma!r}")
    if int(hysteresis_iters) < 0:
        raise ValueError(f"hysteresis iterations must be >= 0, not {hysteresis_iters!r}")


def _gray255(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] RGB (or gray) NCHW -> gray levels 0..255, [N, 1, H, W] float32."""
    x = x.float()
    if x.shape[1] == 3:
        g = x[:, 0:1] * _GRAY[0] + x[:, 1:2] * _GRAY[1] + x[:, 2:3] * _GRAY[2]
    else:
        g = x
    return (g + 1) * 127.5


_sobel_cache: dict[torch.device, torch.Tensor] = {}


def _sobel_kernels(device: torch.device) -> torch.Tensor:
    """The 3x3 Sobel pair [2, 1, 3, 3] (d/dx right - left, d/dy down - up) in fp32, built once per device: a
    torch.tensor(..., device=cuda) per call would be a host-to-device copy that stalls every D step."""
    k = _sobel_cache.get(device)
    if k is None:
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        k = _sobel_cache[device] = torch.stack([kx, kx.t()])[:, None].to(device)
    return k


_gauss_cache: dict[tuple, torch.Tensor] = {}


def _gauss_kernel(kernel: int, sigma: float, device: torch.device) -> torch.Tensor:
    """The blur's 1-D Gaussian window in fp32, built once per (size, sigma, device)."""
    key = (int(kernel), float(sigma), device)
    g = _gauss_cache.get(key)
    if g is None:
        g = _gauss_cache[key] = _gauss_window(int(kernel), float(sigma), torch.float32, device)
    return g


def canny_edges(x: torch.Tensor, low: float = 100.0, high: float = 200.0, hysteresis_iters: int = 16) -> torch.Tensor:
    """Canny edges of a batch of [-1, 1] pictures: bool [N, 1, H, W], True on (1-px thin) edge pixels.

    The steps and units of ``cv2.Canny(gray, low, high)`` (no pre-blur, 3x3 Sobel, L1 magnitude |gx| + |gy|
    in gray levels, so the thresholds mean what they mean there): non-maximum suppression along the
    gradient direction quantised to 0/45/90/135 degrees; pixels above ``high`` are edges, pixels above
    ``low`` are edges when connected to one. Hysteresis grows edges one pixel (8-neighbourhood) per
    iteration through the weak pixels, ``hysteresis_iters`` times — a fixed count instead of "until
    nothing changes", so the function never waits on the device; weak chains longer than that from any
    strong pixel are cut there.
    """
    g = _gray255(x)
    h, w = g.shape[-2:]
    grad = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), _sobel_kernels(g.device))
    gx, gy = grad[:, 0:1], grad[:, 1:2]
    ax, ay = gx.abs(), gy.abs()
    mag = ax + ay

    # the two neighbours along the gradient, from a zero-padded copy of the magnitude
    mp = F.pad(mag, (1, 1, 1, 1))

    def nb(dy: int, dx: int) -> torch.Tensor:
        return mp[:, :, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    horizontal = ay <= _TAN_22_5 * ax  # gradient along x: compare left / right
    vertical = ax < _TAN_22_5 * ay     # gradient along y: compare up / down
    falling = (gx * gy) > 0            # diagonal down-right (y grows downwards) vs up-right
    before = torch.where(horizontal, nb(0, -1), torch.where(vertical, nb(-1, 0),
                         torch.where(falling, nb(-1, -1), nb(-1, 1))))
    after = torch.where(horizontal, nb(0, 1), torch.where(vertical, nb(1, 0),
                        torch.where(falling, nb(1, 1), nb(1, -1))))
    # strict on one side, not the other: of a two-pixel plateau (a step edge) exactly one pixel survives
    peak = (mag > before) & (mag >= after)

    weak = (peak & (mag > low)).float()
    edges = weak * (mag > high)
    for _ in range(int(hysteresis_iters)):
        edges = F.max_pool2d(edges, 3, 1, 1) * weak
    return edges > 0


def gaussian_blur(x: torch.Tensor, kernel: int = 5, sigma: float = 1.1) -> torch.Tensor:
    """Separable Gaussian blur of an NCHW batch with reflected borders (OpenCV's default border)."""
    n, c, h, w = x.shape
    r = int(kernel) // 2
    if r >= min(h, w):
        raise ValueError(f"a {kernel}-px blur needs pictures larger than {r} px; got {h}x{w}")
    g = _gauss_kernel(kernel, sigma, x.device)
    y = F.pad(x.float().reshape(n * c, 1, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(F.conv2d(y, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


@torch.no_grad()
def edge_smooth(x: torch.Tensor, low: float = 100.0, high: float = 200.0, dilation: int = 5,
                blur_kernel: int = 5, blur_sigma: float = 1.1,
                hysteresis_iters: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's edge-smoothed cartoons: ``(smoothed, band_mask)`` for a batch of [-1, 1] pictures.

    1. detect edges with Canny (``canny_edges``: thresholds ``low`` / ``high`` in gray levels 0-255,
       the paper gives no values; 100 / 200 are those of the common public reimplementation);
    2. dilate the edge mask with a ``dilation`` x ``dilation`` square (5 there too);
    3. inside that band, replace each pixel with a Gaussian-blurred copy (``blur_kernel`` taps, ``blur_sigma``;
       5 taps with sigma 1.1 is what OpenCV derives for a 5-tap kernel).

    ``x``: [N, 3, H, W] (or [N, 1, H, W]) in [-1, 1], any device and float dtype; the whole batch is
    processed at once. Pixels outside the band are returned bit-identical; ``band_mask`` is bool
    [N, 1, H, W]. A data transform: no gradients flow through it.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"edge_smooth expects [N, 3, H, W] (or [N, 1, H, W]) pictures; got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"edge_smooth expects float pictures in [-1, 1]; got {x.dtype}")
    _check_edge_params(low, high, dilation, blur_kernel, blur_sigma, hysteresis_iters)
    with torch.autocast(x.device.type, enabled=False):  # thresholds in gray levels want fp32 gradients
        edges = canny_edges(x, low, high, hysteresis_iters)
        r = int(dilation) // 2
        band = F.max_pool2d(edges.float(), int(dilation), 1, r) > 0 if r else edges
        blurred = gaussian_blur(x, blur_kernel, blur_sigma).to(x.dtype)
    return torch.where(band, blurred, x), band


# ---------------------------------------------------------------------------------------------------
# Content network: VGG16 conv1_1 ... conv4_3 (+ ReLU), frozen, one copy per process and device (engines.vgg,
# shared with SRGAN's perceptual loss)
# ---------------------------------------------------------------------------------------------------

_CONTENT_LAYER = "relu4_3"
_PURPOSE = "CartoonGAN's content loss"


def _vgg16_state_dict() -> dict[str, torch.Tensor]:
    return vgg16_state_dict(_PURPOSE)


def get_vgg_content(device: str | torch.device | None = None) -> VGGFeatures:
    """The frozen content network on ``device`` (default CPU), eval mode; loaded once per process and device."""
    return get_vgg_features(_CONTENT_LAYER, device, purpose=_PURPOSE)


# ---------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------

class CartoonGenerator(nn.Module):
    """Flat conv (k7), 2 down-convolutions, ``n_blocks`` residual blocks, 2 up-convolutions, k7 conv + tanh."""

    def __init__(self, ngf: int = 64, n_blocks: int = 8, channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, ngf, 7), nn.InstanceNorm2d(ngf),
                                   nn.ReLU(True)]
        ch = ngf
        for _ in range(2):  # down-convolution: k3 s2, k3 s1, norm, ReLU
            layers += [nn.Conv2d(ch, ch * 2, 3, 2, 1), nn.Conv2d(ch * 2, ch * 2, 3, 1, 1),
                       nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(n_blocks)]
        for _ in range(2):  # up-convolution: k3 s1/2, k3 s1, norm, ReLU
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1),
                       nn.Conv2d(ch // 2, ch // 2, 3, 1, 1), nn.InstanceNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CartoonDiscriminator(nn.Module):
    """The paper's shallow D: a flat k3 conv, two (k3 s2, k3 s1 + norm) stages, a k3 conv + norm, a k3 output;
    LeakyReLU 0.2 throughout. One raw score per position of a 1/4-resolution map, each judging a 37x37 patch."""

    def __init__(self, ndf: int = 32, channels: int = 3):
        super().__init__()
        n = ndf

        def conv(cin: int, cout: int, stride: int = 1, norm: bool = False) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1), *([nn.InstanceNorm2d(cout)] if norm else []),
                    nn.LeakyReLU(0.2, True)]

        self.net = nn.Sequential(
            *conv(channels, n),
            *conv(n, 2 * n, 2), *conv(2 * n, 4 * n, norm=True),
            *conv(4 * n, 4 * n, 2), *conv(4 * n, 8 * n, norm=True),
            *conv(8 * n, 8 * n, norm=True),
            nn.Conv2d(8 * n, 1, 3, 1, 1))
        self.apply(init_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def gan_loss(pred: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    """'bce': the paper's standard GAN loss on logits (non-saturating for G); 'lsgan': least squares."""
    if kind == "lsgan":
        return lsgan_loss(pred, real)
    return bce_loss(pred, real)


def d_accuracy(pred: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    """Share of D's patch outputs on the right side of the decision boundary (logit 0, or 0.5 for LSGAN)."""
    if kind == "lsgan":
        return patch_accuracy(pred, real)
    pred = pred.detach().float()
    return ((pred > 0) if real else (pred <= 0)).float().mean()


# ---------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------

@register
class CartoonGAN(TranslationEngine):
    """CartoonGAN: one generator (photo -> cartoon), edge-promoting adversarial loss, VGG content loss."""

    name = "cartoongan"
    directions = ("AB",)
    protocol_notes = (
        "content loss on VGG16 relu4_3 (torchvision ImageNet weights) instead of the paper's VGG19 conv4_4, "
        "the only ImageNet VGG available offline; edge-smoothed targets are computed on the fly per batch "
        "(Canny + dilation + Gaussian blur on the device) instead of once before training; the first "
        "init_epochs epochs (10, as in the paper) count towards the run's epochs and its lr schedule "
        "(constant, then linear decay: the shared translation protocol)")
    # no B -> A generator, so there is no cycle to measure
    protocol_defaults = {**TranslationEngine.protocol_defaults, "eval_metrics": "fid,kid,lpips,lpips_target"}

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {**super().default_config(),
                "ngf": 64, "ndf": 32,     # the paper's widths: G 64-128-256, D 32-64-128-256
                "n_blocks": 8,
                "content_weight": 10.0,   # w in L = L_adv + w * L_con (paper: 10)
                "init_epochs": 10,        # content-only generator initialisation (paper: 10 epochs)
                "gan_loss": "bce",        # "bce" (the paper's standard GAN loss) or "lsgan"
                # edge smoothing of the target (cartoon) pictures, see edge_smooth()
                "edge_low": 100.0, "edge_high": 200.0,  # Canny thresholds in gray levels (0-255)
                "edge_hysteresis_iters": 16,
                "edge_dilation": 5,                     # square dilation of the edge mask (px, odd)
                "edge_blur_kernel": 5, "edge_blur_sigma": 1.1}

    def __init__(self, config=None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self.config
        if image_size < 16 or image_size % 4:
            raise ValueError(f"cartoongan needs an image size that is a multiple of 4 and >= 16, not {image_size}")
        if c["gan_loss"] not in ("bce", "lsgan"):
            raise ValueError(f"cartoongan's gan_loss must be 'bce' or 'lsgan', not {c['gan_loss']!r}")
        if int(c["init_epochs"]) != c["init_epochs"] or int(c["init_epochs"]) < 0:
            raise ValueError(f"init_epochs must be a whole number >= 0, not {c['init_epochs']!r}")
        _check_edge_params(**self._edge_kwargs())
        self.G_AB = CartoonGenerator(int(c["ngf"]), int(c["n_blocks"]))
        self._init_phase = int(c["init_epochs"]) > 0  # until the trainer's start_epoch says otherwise
        if training:
            self.D = CartoonDiscriminator(int(c["ndf"]))
            self.optimizers["G"] = self.make_adam(self.G_AB.parameters())
            self.optimizers["D"] = self.make_adam(self.D.parameters())

    def _edge_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {"low": float(c["edge_low"]), "high": float(c["edge_high"]),
                "dilation": int(c["edge_dilation"]), "blur_kernel": int(c["edge_blur_kernel"]),
                "blur_sigma": float(c["edge_blur_sigma"]), "hysteresis_iters": int(c["edge_hysteresis_iters"])}

    def setup(self, device: torch.device, *args, **kwargs) -> "CartoonGAN":
        super().setup(device, *args, **kwargs)
        if self.training_mode:
            get_vgg_content(self.device)  # fail at start-up, not at the first step, when the weights are missing
        return self

    @property
    def init_phase(self) -> bool:
        return self._init_phase

    def start_epoch(self, epoch: int, epochs: int) -> None:
        super().start_epoch(epoch, epochs)
        init = int(self.config["init_epochs"])
        if init and epochs <= init:
            raise ValueError(f"cartoongan trains G with the content loss alone for init_epochs={init} epochs, so "
                             f"a {epochs}-epoch run would never train adversarially; raise the epochs or lower "
                             "init_epochs (--set init_epochs=N)")
        self._init_phase = epoch <= init

    def _translate(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        return self.G_AB(x)

    def export_modules(self) -> dict[str, nn.Module]:
        return {"G_AB": self.G_AB}

    def content_loss(self, photo: torch.Tensor, cartoon: torch.Tensor) -> torch.Tensor:
        """L1 between the VGG features of the photo (fixed target) and of its cartoon (fp32 result)."""
        vgg = get_vgg_content(self.device)
        with torch.no_grad():
            target = vgg(photo)
        return F.l1_loss(vgg(cartoon).float(), target.float())

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        real_a, real_b = self.prepare_batch(batch)
        c = self.config
        kind, w = c["gan_loss"], float(c["content_weight"])
        dev = real_a.device
        zero = torch.zeros((), device=dev)

        if self._init_phase:
            # ---- initialisation: G learns to reconstruct the photo's content; D is not trained ----
            with self.autocast():
                fake_b = self.G_AB(real_a)
                content = self.content_loss(real_a, fake_b)
            loss_g = w * content
            self.optimize("G", loss_g)
            with torch.no_grad(), self.autocast():  # D's (untrained) verdicts, for the log only
                pr, pf = self.D(torch.cat([real_b, fake_b.detach()])).chunk(2)
            return {"loss/G": loss_g.detach(), "loss/D": zero, "loss/G_adv": zero, "loss/content": content.detach(),
                    "loss/D_edge": zero, "acc/D_real": d_accuracy(pr, True, kind),
                    "acc/D_fake": d_accuracy(pf, False, kind), "init_phase": torch.ones((), device=dev)}

        edge_b, _ = edge_smooth(real_b, **self._edge_kwargs())
        with self.autocast():
            fake_b = self.G_AB(real_a)

        # ---- D: cartoons are real; generated pictures and edge-smoothed cartoons are fake (paper eq. 2) ----
        with self.autocast():  # one pass: instance norm keeps the three groups independent
            pr, pe, pf = self.D(torch.cat([real_b, edge_b, fake_b.detach()])).chunk(3)
        d_real, d_edge, d_fake = gan_loss(pr, True, kind), gan_loss(pe, False, kind), gan_loss(pf, False, kind)
        loss_d = d_real + d_edge + d_fake
        self.optimize("D", loss_d)

        # ---- G: fool the updated D, keep the photo's content ----
        set_requires_grad((self.D,), False)
        with self.autocast():
            adv = gan_loss(self.D(fake_b), True, kind)
            content = self.content_loss(real_a, fake_b)
        loss_g = adv + w * content
        self.optimize("G", loss_g)
        set_requires_grad((self.D,), True)

        return {"loss/G": loss_g.detach(), "loss/D": loss_d.detach(), "loss/G_adv": adv.detach(),
                "loss/content": content.detach(), "loss/D_edge": d_edge.detach(),
                "acc/D_real": d_accuracy(pr, True, kind), "acc/D_fake": d_accuracy(pf, False, kind),
                "acc/D_edge": d_accuracy(pe, False, kind), "init_phase": zero}
