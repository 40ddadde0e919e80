"""SRGAN (Ledig et al., CVPR 2017): photo-realistic single-image super-resolution with a GAN.

Generator SRResNet: a 9x9 conv (64) + PReLU; B = 16 residual blocks (3x3 conv, BN, PReLU, 3x3 conv, BN,
skip); a 3x3 conv + BN added to the first conv's output (the global skip); one upsampling stage per x2
(3x3 conv to 256 channels, PixelShuffle x2, PReLU: two for x4); a 9x9 conv to RGB. Output: tanh in [-1, 1]
(``output: linear`` drops it; outputs are then clamped at inference only).
Discriminator: the paper's VGG-style net, eight 3x3 convs 64 -> 512 with strides 1, 2, 1, 2, ... (BN after
all but the first, LeakyReLU 0.2), then dense 1024, LeakyReLU, dense 1 — with an adaptive average pooling to
``d_pool`` x ``d_pool`` before the dense layers (6: exactly the paper's 6x6x512 at its 96 px crops), so it
takes any crop size.

Training (docs/srgan.md): first the MSE-based SRResNet (``pretrain_epochs``, by default half of the epochs),
then SRGAN initialised from it with a fresh Adam for G: the perceptual loss
``content_weight * MSE(VGG(SR), VGG(HR)) + adv_weight * BCE(D(SR), real) + pixel_weight * MSE(SR, HR)`` — VGG16 relu5_3 features (the
counterpart of the paper's VGG19 phi_5,4 "VGG54"; relu2_2 gives "VGG22"), scaled by (1/12.75)^2 ~= 0.006 as the
paper rescales the feature maps by 1/12.75, and adversarial weight 1e-3 — while D learns real HR vs SR with
BCE. Adam beta1 0.9, lr 1e-4 (the paper), x0.1 for the second half of the GAN phase (the paper's 10^5 steps
at 1e-4, then 10^5 at 1e-5).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import frozen
from ..losses import bce_loss
from ..registry import register
from ..vgg import LAYERS, get_vgg_features
from .base import UpscaleEngine, pixel_shuffle_stages

_VGG_PURPOSE = "SRGAN's perceptual (content) loss"


class ResidualBlock(nn.Module):
    """k3n64s1 conv, BN, PReLU, k3n64s1 conv, BN, elementwise sum with the input."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.PReLU(ch),
            nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """The SRGAN generator: LR [-1, 1] -> ``scale`` x larger picture ([-1, 1] with the tanh output)."""

    def __init__(self, scale: int = 4, n_blocks: int = 16, width: int = 64, output: str = "tanh"):
        super().__init__()
        self.scale, self.n_blocks = int(scale), int(n_blocks)
        self.stages = pixel_shuffle_stages(self.scale)
        self.head = nn.Sequential(nn.Conv2d(3, width, 9, padding=4), nn.PReLU(width))
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(self.n_blocks)])
        self.neck = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.upsample = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(width, width * 4, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(width))
            for _ in range(self.stages)])
        self.tail = nn.Conv2d(width, 3, 9, padding=4)
        self.tanh = output == "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        y = self.upsample(self.neck(self.blocks(h)) + h)  # the global skip around all residual blocks
        y = self.tail(y)
        return torch.tanh(y) if self.tanh else y

    @property
    def receptive_radius(self) -> int:
        """In LR pixels: head 9x9 (4), two 3x3 per block, the neck 3x3, one 3x3 per upsampling stage at
        2^k times the LR resolution, the tail 9x9 at the output resolution."""
        r = 4 + 2 * self.n_blocks + 1 + sum(1 / 2 ** k for k in range(self.stages)) + 4 / self.scale
        return math.ceil(r)


class SRDiscriminator(nn.Module):
    """k3n64s1 + LReLU, seven k3 conv-BN-LReLU blocks (n 64, 128, 128, 256, 256, 512, 512; strides 2, 1, ...),
    adaptive average pooling to ``pool`` x ``pool``, dense ``dense`` + LReLU, dense 1 (a logit)."""

    def __init__(self, width: int = 64, pool: int = 6, dense: int = 1024):
        super().__init__()
        chans = [width, width, 2 * width, 2 * width, 4 * width, 4 * width, 8 * width, 8 * width]
        layers: list[nn.Module] = [nn.Conv2d(3, chans[0], 3, padding=1), nn.LeakyReLU(0.2, True)]
        for i in range(1, len(chans)):
            stride = 2 if i % 2 == 1 else 1
            layers += [nn.Conv2d(chans[i - 1], chans[i], 3, stride, 1, bias=False), nn.BatchNorm2d(chans[i]),
                       nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(chans[-1] * pool * pool, dense),
                                        nn.LeakyReLU(0.2, True), nn.Linear(dense, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x))).view(-1)


@register
class SRGAN(UpscaleEngine):
    """SRGAN: SRResNet generator (MSE pre-training), VGG perceptual + adversarial loss (x4 super-resolution)."""

    name = "srgan"
    cpu_channels_last = True  # its step 1.20x faster on this CPU (docs/decisions.md)
    protocol_notes = (
        "content loss on VGG16 relu5_3 (torchvision ImageNet weights) instead of the paper's VGG19 phi_5,4, the "
        "only ImageNet VGG available offline; pictures in [-1, 1] on both sides (the paper feeds LR in [0, 1]); "
        "adaptive pooling before D's dense layers so D takes any crop size; the MSE pre-training is part of the "
        "same run (pretrain_epochs, half of the epochs by default) instead of a separate 10^6-step training; "
        "lr 1e-4 (the paper) instead of the protocol's 2e-4, x0.1 for the second half of the GAN phase; the pixel MSE "
        "stays in the GAN phase's G loss with pixel_weight (1 by default; 0 is the paper's SRGAN-VGG54).")

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {**super().default_config(),
                "lr": 1e-4, "betas": [0.9, 0.999],
                "n_blocks": 16, "g_width": 64,
                "output": "tanh",           # tanh | linear
                "d_width": 64, "d_pool": 6, "d_dense": 1024,
                "pretrain_epochs": None,    # MSE-only SRResNet epochs; None: pretrain_fraction of the run's epochs
                "pretrain_fraction": 0.5,
                "vgg_layer": "relu5_3",     # relu5_3 ("VGG54"-like) or relu2_2 ("VGG22"); any of engines.vgg.LAYERS
                "content_weight": 0.006,    # (1/12.75)^2: the paper's rescaling of the VGG feature maps
                "adv_weight": 1e-3,
                # pixel-wise MSE kept in the GAN phase's G loss (leftthomas/SRGAN's "image loss"; 0: the paper's
                # SRGAN-VGG54). At a CPU budget without it the adversarial term drifted G's colours within
                # 150 steps (PSNR 22.8 -> 14.1 dB, magenta; docs/srgan.md), the VGG relu5_3 loss not holding them.
                "pixel_weight": 1.0,
                "lr_decay_at": 0.5,         # fraction of the GAN phase after which the lr is multiplied by lr_decay
                "lr_decay": 0.1}

    def __init__(self, config: dict[str, Any] | None = None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self.config
        for key in ("n_blocks", "g_width", "d_width", "d_pool", "d_dense"):
            v = c[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "n_blocks" else 1):
                raise ValueError(f"{key} must be a whole number{' >= 0' if key == 'n_blocks' else ' >= 1'}, "
                                 f"not {v!r}")
        if c["output"] not in ("tanh", "linear"):
            raise ValueError(f"output must be 'tanh' or 'linear', not {c['output']!r}")
        if c["vgg_layer"] not in LAYERS:
            raise ValueError(f"vgg_layer must be one of {', '.join(LAYERS)}, not {c['vgg_layer']!r}")
        pe = c["pretrain_epochs"]
        if pe is not None and (isinstance(pe, bool) or not isinstance(pe, int) or pe < 0):
            raise ValueError(f"pretrain_epochs must be a whole number of epochs (or null), not {pe!r}")
        for key, lo, hi in (("pretrain_fraction", 0, 1), ("lr_decay_at", 0, 1), ("lr_decay", 0, 1),
                            ("content_weight", 0, math.inf), ("adv_weight", 0, math.inf),
                            ("pixel_weight", 0, math.inf)):
            v = c[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"{key} must be a number between {lo} and {hi}, not {v!r}")
        self.G = SRResNet(self.scale, c["n_blocks"], c["g_width"], c["output"])
        # set when the GAN phase first starts (G's Adam is then reset); a buffer, so a resumed run knows
        self.register_buffer("gan_started", torch.tensor(False))
        self.gan_phase = False  # set per epoch by start_epoch
        if training:
            self.D = SRDiscriminator(c["d_width"], c["d_pool"], c["d_dense"])
            self.optimizers["G"] = self.make_adam(self.G.parameters())
            self.optimizers["D"] = self.make_adam(self.D.parameters())
            for opt in self.optimizers.values():
                for g in opt.param_groups:  # the schedule's base; saved with the optimiser, so resume keeps it
                    g.setdefault("initial_lr", g["lr"])

    @property
    def receptive_radius(self) -> int:
        return self.G.receptive_radius

    def _upscale(self, lr: torch.Tensor) -> torch.Tensor:
        return self.G(lr)

    def export_modules(self) -> dict[str, nn.Module]:
        return {"G": self.G}

    def run_info(self) -> dict[str, Any]:
        from ..vgg import VGG16_FILE

        return {**super().run_info(), "content_network": f"VGG16 {self.config['vgg_layer']} ({VGG16_FILE})"}

    def vgg(self) -> nn.Module:
        """The frozen VGG16 of the content loss (engines.vgg: one copy per process, layer and device; not part
        of the engine's modules, so never in checkpoints or exports)."""
        return get_vgg_features(self.config["vgg_layer"], self.device, purpose=_VGG_PURPOSE)

    def setup(self, device, *args, **kwargs):
        out = super().setup(device, *args, **kwargs)
        if self.training_mode and float(self.config["content_weight"]) > 0:
            self.vgg()  # fail at start-up, not when the GAN phase begins, when the weights are missing
        return out

    # ---- schedule -----------------------------------------------------------------------------
    def pretrain_epochs(self, epochs: int) -> int:
        pe = self.config["pretrain_epochs"]
        return int(pe) if pe is not None else int(round(float(self.config["pretrain_fraction"]) * epochs))

    def lr_factor(self, epoch: int, epochs: int) -> float:
        """1 while pre-training and in the first ``lr_decay_at`` of the GAN phase, then ``lr_decay``."""
        p = self.pretrain_epochs(epochs)
        if epoch <= p:
            return 1.0
        decay_from = p + int(round(float(self.config["lr_decay_at"]) * (epochs - p)))
        return float(self.config["lr_decay"]) if epoch > decay_from else 1.0

    def start_epoch(self, epoch: int, epochs: int) -> None:
        self.gan_phase = epoch > self.pretrain_epochs(epochs)
        if self.gan_phase and not bool(self.gan_started) and "G" in self.optimizers:
            # SRGAN is a new training initialised with the SRResNet weights: G's Adam starts afresh
            self.optimizers["G"].state.clear()
            self.gan_started.fill_(True)
        self.set_lr_factor(self.lr_factor(epoch, epochs))

    # ---- losses ---------------------------------------------------------------------------------
    def content_loss(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """MSE between the VGG features of the output and of the HR picture (the fixed target), fp32."""
        vgg = self.vgg()
        with torch.no_grad(), self.autocast():
            target = vgg(hr)
        with self.autocast():
            feat = vgg(sr)
        return F.mse_loss(feat.float(), target.float())

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        if not hasattr(self, "D"):
            raise RuntimeError("this SRGAN was built with training=False (an export); it cannot train")
        hr = self.random_crop(batch)
        lr = self.downsample(hr)
        with self.autocast():
            sr = self.G(lr)
        mse = F.mse_loss(sr.float(), hr.float())
        if not self.gan_phase:  # SRResNet: the pixel-wise MSE alone, D untouched
            self.optimize("G", mse)
            return {"loss/G": mse.detach(), "loss/mse": mse.detach(), "phase": torch.zeros((), device=mse.device)}

        # ---- D: HR pictures real, the generator's pictures fake ----
        with self.autocast():
            d_real = self.D(hr)
            d_fake = self.D(sr.detach())
        loss_d = bce_loss(d_real, True) + bce_loss(d_fake, False)
        self.optimize("D", loss_d)

        # ---- G: perceptual loss = content (VGG) + adversarial (-log D(G(LR))) ----
        with frozen(self.D):
            with self.autocast():
                d_sr = self.D(sr)
            adv = bce_loss(d_sr, True)
            content = self.content_loss(sr, hr) if float(self.config["content_weight"]) > 0 \
                else torch.zeros((), device=sr.device)
            loss_g = float(self.config["content_weight"]) * content + float(self.config["adv_weight"]) * adv
            if float(self.config["pixel_weight"]) > 0:
                loss_g = loss_g + float(self.config["pixel_weight"]) * mse
            self.optimize("G", loss_g)
        return {
            "loss/G": loss_g.detach(), "loss/D": loss_d.detach(), "loss/content": content.detach(),
            "loss/adv": adv.detach(), "loss/mse": mse.detach(),
            "acc/D_real": (d_real.detach() > 0).float().mean(), "acc/D_fake": (d_fake.detach() < 0).float().mean(),
            "phase": torch.ones((), device=mse.device),
        }
