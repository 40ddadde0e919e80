"""DCGAN (Radford et al. 2016): the baseline.

G: z -> 4x4 by a transposed conv, then stride-2 transposed convs with BatchNorm + ReLU, tanh out.
D: stride-2 convs with LeakyReLU(0.2) (BatchNorm after the first), no pooling, no fully connected
layers; the last 4x4 conv gives one logit. Depth follows the image size, so 32..256 px all work.
Loss: the non-saturating GAN loss with BCE on logits.

The project plan's ablations are settings (docs/engines.md, "DCGAN"): ``norm`` (batch | none: batch norm in G
and D on or off), ``optimizer`` (adam | rmsprop), ``loss`` (bce | wasserstein | hinge), ``dropout`` (in D),
``weight_clip`` (WGAN's clipping of D's weights) and ``spectral_norm`` (on D's convs). The defaults are the
paper's DCGAN. cgan (engines/generate/cgan.py) builds on the same parts.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Engine, frozen, init_dcgan_weights, n_upsamplings
from ..registry import register

NORMS = ("batch", "none")
OPTIMIZERS = ("adam", "rmsprop")
LOSSES = ("bce", "wasserstein", "hinge")


def _widths(image_size: int, base: int, max_ch: int) -> list[int]:
    """Channel width at 4x4, 8x8, ..., image_size/2 (wide at low resolution, halving as size doubles)."""
    k = n_upsamplings(image_size)
    return [min(max_ch, base * 2 ** (k - 1 - i)) for i in range(k)]


class DCGANGenerator(nn.Module):
    """``norm``: 'batch' (DCGAN) or 'none' (no normalisation; the convs get a bias). ``norm_layer(channels)``
    replaces the batch norm (cgan's conditional batch norm); a layer with ``conditional = True`` is called as
    ``layer(h, y)``, so ``forward(z, y)`` carries labels to it."""

    def __init__(self, z_dim: int, image_size: int, width: int = 64, max_ch: int = 512, channels: int = 3,
                 norm: str = "batch", norm_layer: Callable[[int], nn.Module] | None = None):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {norm!r}")
        if norm_layer is None and norm == "batch":
            norm_layer = nn.BatchNorm2d
        ws = _widths(image_size, width, max_ch)

        def block(cin: int, cout: int, *conv: int) -> list[nn.Module]:
            # the default layout (ConvT, BN, ReLU) keeps the state-dict keys of DCGAN exports
            layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 4, *conv, bias=norm_layer is None)]
            if norm_layer is not None:
                layers.append(norm_layer(cout))
            return layers + [nn.ReLU(True)]

        layers = block(z_dim, ws[0], 1, 0)
        for cin, cout in zip(ws[:-1], ws[1:]):
            layers += block(cin, cout, 2, 1)
        layers += [nn.ConvTranspose2d(ws[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.conditional = any(getattr(m, "conditional", False) for m in self.net)
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = z.view(z.size(0), -1, 1, 1)
        if not self.conditional:
            return self.net(h)
        for layer in self.net:
            h = layer(h, y) if getattr(layer, "conditional", False) else layer(h)
        return h


class DCGANDiscriminator(nn.Module):
    """Strided convs down to 4x4, then a 4x4 conv to one logit. ``norm``: 'batch' (DCGAN), 'layer' or 'none'
    (WGAN-GP's critic must not use batch norm: the penalty is per sample). ``dropout``: after each hidden
    LeakyReLU. ``spectral_norm``: every conv's weight divided by its largest singular value (Miyato et al.
    2018). ``features(x)`` is everything before the last conv (``head``): what a projection discriminator
    pools."""

    def __init__(self, image_size: int, width: int = 64, max_ch: int = 512, channels: int = 3,
                 norm: str = "batch", dropout: float = 0.0, spectral_norm: bool = False):
        super().__init__()
        if norm not in ("batch", "layer", "none"):
            raise ValueError(f"unknown norm {norm!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout!r}")
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        ws = list(reversed(_widths(image_size, width, max_ch)))  # image_size/2 ... 4x4

        def act() -> list[nn.Module]:
            return [nn.LeakyReLU(0.2, True)] + ([nn.Dropout(float(dropout))] if dropout else [])

        layers: list[nn.Module] = [nn.Conv2d(channels, ws[0], 4, 2, 1), *act()]
        for cin, cout in zip(ws[:-1], ws[1:]):
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            elif norm == "layer":
                layers.append(nn.GroupNorm(1, cout))  # LayerNorm over C,H,W, per sample
            layers += act()
        layers.append(nn.Conv2d(ws[-1], 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)
        self.feature_channels = ws[-1]
        self.apply(init_dcgan_weights)
        if spectral_norm:  # after the N(0, 0.02) init: SN rescales whatever the weights are
            for i, m in enumerate(self.net):
                if isinstance(m, nn.Conv2d):
                    self.net[i] = sn(m)

    @property
    def head(self) -> nn.Module:
        return self.net[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net[:-1]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


# ---- losses: (D loss, G loss, D accuracy) for each ``loss`` setting -------------------------------------
def d_loss(kind: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    if kind == "bce":  # BCE(real=1) + BCE(fake=0) on logits
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    if kind == "hinge":  # Lim & Ye 2017; Miyato et al. 2018
        return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    if kind == "wasserstein":  # the critic's estimate E[D(real)] - E[D(fake)], maximised (Arjovsky et al. 2017)
        return d_fake.mean() - d_real.mean()
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {kind!r}")


def g_loss(kind: str, d_fake: torch.Tensor) -> torch.Tensor:
    if kind == "bce":  # non-saturating
        return F.softplus(-d_fake).mean()
    if kind in ("hinge", "wasserstein"):
        return -d_fake.mean()
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {kind!r}")


def d_accuracy(kind: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Share of real scored real and fake scored fake: logits against 0; a Wasserstein critic has no 0.5
    threshold, so against the midpoint of the batch's mean real and mean fake scores (as wgan_gp)."""
    t = 0.5 * (d_real.mean() + d_fake.mean()).detach() if kind == "wasserstein" else 0.0
    return (d_real > t).float().mean(), (d_fake < t).float().mean()


@register
class DCGAN(Engine):
    name = "dcgan"
    cpu_channels_last = True  # its step 1.09x faster on this CPU (docs/decisions.md)

    @classmethod
    def default_config(cls):
        # discriminator "projected": Projected GAN's D (frozen EfficientNet-Lite0 + random CCM/CSM + per-scale
        # discriminators, engines.projected) with its defaults, trained with DCGAN's own loss and optimiser.
        # norm/optimizer/loss/dropout/weight_clip/spectral_norm: the plan's ablations (module docstring)
        return {"lr": 2e-4, "betas": [0.5, 0.999], "z_dim": 100, "g_width": 64, "d_width": 64, "max_channels": 512,
                "discriminator": "dcgan", "norm": "batch", "optimizer": "adam", "loss": "bce", "dropout": 0.0,
                "weight_clip": 0.0, "spectral_norm": False}

    def __init__(self, config=None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        self.check_settings()
        self.G = self.build_generator()
        if training:
            self.D = self.build_discriminator()
            d_params = self.D.trainable_parameters() if hasattr(self.D, "trainable_parameters") else self.D.parameters()
            self.optimizers = {"D": self.make_optimizer(d_params), "G": self.make_optimizer(self.G.parameters())}

    def check_settings(self) -> None:
        c = self.config
        if c["norm"] is None:  # `--set norm=none` arrives as null
            c["norm"] = "none"
        for key, allowed in (("norm", NORMS), ("optimizer", OPTIMIZERS), ("loss", LOSSES)):
            if c[key] not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, not {c[key]!r}")
        for key in ("dropout", "weight_clip"):
            if isinstance(c[key], bool) or not isinstance(c[key], (int, float)):
                raise ValueError(f"{key} must be a number, not {c[key]!r}")
        if not 0.0 <= c["dropout"] < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {c['dropout']!r}")
        if not c["weight_clip"] >= 0:
            raise ValueError(f"weight_clip must be >= 0 (0: off), not {c['weight_clip']!r}")
        if not isinstance(c["spectral_norm"], bool):
            raise ValueError(f"spectral_norm must be true or false, not {c['spectral_norm']!r}")
        if c.get("discriminator", "dcgan") == "projected" and (c["dropout"] or c["spectral_norm"] or c["weight_clip"]):
            raise ValueError("dropout, spectral_norm and weight_clip apply to DCGAN's own discriminator, not to "
                             "discriminator=projected")

    def build_generator(self) -> nn.Module:
        c = self.config
        return DCGANGenerator(c["z_dim"], self.image_size, c["g_width"], c["max_channels"], norm=c["norm"])

    def build_discriminator(self) -> nn.Module:
        c = self.config
        if c["discriminator"] == "projected":
            from ..projected import ProjectedDiscriminator

            return ProjectedDiscriminator(self.image_size)
        if c["discriminator"] != "dcgan":
            raise ValueError(f"discriminator must be 'dcgan' or 'projected', not {c['discriminator']!r}")
        return DCGANDiscriminator(self.image_size, c["d_width"], c["max_channels"], norm=c["norm"],
                                  dropout=c["dropout"], spectral_norm=c["spectral_norm"])

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        """Adam with the config's betas, or RMSprop (what WGAN used; betas do not apply) at the config's lr."""
        if self.config["optimizer"] == "rmsprop":
            return torch.optim.RMSprop(params, lr=self.config["lr"])
        return self.make_adam(params)

    def frozen_state_keys(self) -> list[str]:
        d = getattr(self, "D", None)
        return d.frozen_state_keys("D.") if hasattr(d, "frozen_state_keys") else []

    def run_info(self) -> dict:
        d = getattr(self, "D", None)
        return {"feature_network": d.feature.backbone_info} if hasattr(d, "feature") else {}

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z)

    # conditional engines (cgan) override these three: labels ride along with the images
    def split_batch(self, batch):
        return batch, None

    def generator_forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.G(z)

    def discriminator_forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.D(x)

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        real, y = self.split_batch(batch)
        kind = self.config["loss"]
        z = torch.randn(real.size(0), self.z_dim, device=real.device)
        with self.autocast():
            fake = self.generator_forward(z, y)
            d_real = self.discriminator_forward(self.augment_images(real), y).float()
            d_fake = self.discriminator_forward(self.augment_images(fake.detach()), y).float()
            loss_d = d_loss(kind, d_real, d_fake)
        self.optimize("D", loss_d)
        if self.config["weight_clip"]:  # WGAN's Lipschitz constraint: clip every D weight after its step
            with torch.no_grad():
                c = float(self.config["weight_clip"])
                for p in self.D.parameters():
                    p.clamp_(-c, c)
        self.augment_feedback(d_real)
        with frozen(self.D):  # no weight gradients for D in G's step (frozen feature nets stay frozen)
            with self.autocast():
                loss_g = g_loss(kind, self.discriminator_forward(self.augment_images(fake), y).float())
            self.optimize("G", loss_g)
        acc_real, acc_fake = d_accuracy(kind, d_real, d_fake)
        return {"loss/D": loss_d.detach(), "loss/G": loss_g.detach(), "acc/D_real": acc_real, "acc/D_fake": acc_fake}

    def export_modules(self):
        return {"G": self.G}
