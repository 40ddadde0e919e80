"""DCGAN (Radford et al. 2016): the baseline.

G: z -> 4x4 by a transposed conv, then stride-2 transposed convs with BatchNorm + ReLU, tanh out.
D: stride-2 convs with LeakyReLU(0.2) (BatchNorm after the first), no pooling, no fully connected
layers; the last 4x4 conv gives one logit. Depth follows the image size, so 32..256 px all work.
Loss: the non-saturating GAN loss with BCE on logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Engine, frozen, init_dcgan_weights, n_upsamplings
from ..registry import register


def _widths(image_size: int, base: int, max_ch: int) -> list[int]:
    """Channel width at 4x4, 8x8, ..., image_size/2 (wide at low resolution, halving as size doubles)."""
    k = n_upsamplings(image_size)
    return [min(max_ch, base * 2 ** (k - 1 - i)) for i in range(k)]


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, image_size: int, width: int = 64, max_ch: int = 512, channels: int = 3):
        super().__init__()
        ws = _widths(image_size, width, max_ch)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, ws[0], 4, 1, 0, bias=False), nn.BatchNorm2d(ws[0]), nn.ReLU(True)]
        for cin, cout in zip(ws[:-1], ws[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ws[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.size(0), -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Strided convs down to 4x4, then a 4x4 conv to one logit. ``norm``: 'batch' (DCGAN), 'layer' or 'none'
    (WGAN-GP's critic must not use batch norm: the penalty is per sample)."""

    def __init__(self, image_size: int, width: int = 64, max_ch: int = 512, channels: int = 3,
                 norm: str = "batch"):
        super().__init__()
        ws = list(reversed(_widths(image_size, width, max_ch)))  # image_size/2 ... 4x4
        layers: list[nn.Module] = [nn.Conv2d(channels, ws[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        size = image_size // 2
        for cin, cout in zip(ws[:-1], ws[1:]):
            size //= 2
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            elif norm == "layer":
                layers.append(nn.GroupNorm(1, cout))  # LayerNorm over C,H,W, per sample
            elif norm != "none":
                raise ValueError(f"unknown norm {norm!r}")
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(nn.Conv2d(ws[-1], 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


@register
class DCGAN(Engine):
    name = "dcgan"

    @classmethod
    def default_config(cls):
        # discriminator "projected": Projected GAN's D (frozen EfficientNet-Lite0 + random CCM/CSM + per-scale
        # discriminators, engines.projected) with its defaults, trained with DCGAN's own loss and optimiser
        return {"lr": 2e-4, "betas": [0.5, 0.999], "z_dim": 100, "g_width": 64, "d_width": 64, "max_channels": 512,
                "discriminator": "dcgan"}

    def __init__(self, config=None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self.config
        self.G = DCGANGenerator(c["z_dim"], image_size, c["g_width"], c["max_channels"])
        if training:
            self.D = self.build_discriminator()
            d_params = self.D.trainable_parameters() if hasattr(self.D, "trainable_parameters") else self.D.parameters()
            self.optimizers = {"D": self.make_adam(d_params), "G": self.make_adam(self.G.parameters())}

    def build_discriminator(self) -> nn.Module:
        c = self.config
        if c["discriminator"] == "projected":
            from ..projected import ProjectedDiscriminator

            return ProjectedDiscriminator(self.image_size)
        if c["discriminator"] != "dcgan":
            raise ValueError(f"discriminator must be 'dcgan' or 'projected', not {c['discriminator']!r}")
        return DCGANDiscriminator(self.image_size, c["d_width"], c["max_channels"], norm="batch")

    def frozen_state_keys(self) -> list[str]:
        d = getattr(self, "D", None)
        return d.frozen_state_keys("D.") if hasattr(d, "frozen_state_keys") else []

    def run_info(self) -> dict:
        d = getattr(self, "D", None)
        return {"feature_network": d.feature.backbone_info} if hasattr(d, "feature") else {}

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z)

    def train_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        z = torch.randn(real.size(0), self.z_dim, device=real.device)
        with self.autocast():
            fake = self.G(z)
            d_real = self.D(self.augment_images(real)).float()
            d_fake = self.D(self.augment_images(fake.detach())).float()
            loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()  # BCE(real=1) + BCE(fake=0)
        self.optimize("D", loss_d)
        self.augment_feedback(d_real)
        with frozen(self.D):  # no weight gradients for D in G's step (frozen feature nets stay frozen)
            with self.autocast():
                loss_g = F.softplus(-self.D(self.augment_images(fake)).float()).mean()  # non-saturating
            self.optimize("G", loss_g)
        return {
            "loss/D": loss_d.detach(), "loss/G": loss_g.detach(),
            "acc/D_real": (d_real > 0).float().mean(), "acc/D_fake": (d_fake < 0).float().mean(),
        }

    def export_modules(self):
        return {"G": self.G}
