"""cgan: a DCGAN conditioned on class labels (docs/cgan.md).

Two ways to give the nets the label y (float multi-hot [B, K]; engines.labels):

- ``conditioning=projection`` (default), Miyato & Koyama 2018 ("cGANs with Projection Discriminator",
  reference: pfnet-research/sngan_projection): D(x, y) = psi(phi(x)) + <embed(y), sum_hw phi(x)>, with phi
  DCGAN's strided-conv trunk, psi its 4x4 head and the projection on globally sum-pooled features as in the
  reference's SNResNetProjectionDiscriminator; G has conditional batch norm (per-class gamma/beta, initialised
  to 1/0 as in the reference's CategoricalConditionalBatchNormalization).
- ``conditioning=concat``, Mirza & Osindero 2014: y is concatenated to z at G's input and to x (as K constant
  feature maps) at D's input.

A multi-label row (``Grass|Poison``) mixes its labels' embeddings and gammas/betas: the mean by default
(``label_pool=mean``; the reference's weighted mix with equal weights) or the sum. Fake images in a step take
the labels of the real batch, i.e. labels come from the training distribution, not a uniform draw.
Everything else is DCGAN's (engines/generate/dcgan.py), including the ablation settings (norm, optimizer,
loss, dropout, weight_clip, spectral_norm); defaults follow the projection paper where it is about the
discriminator: hinge loss and spectral norm on D.
"""
from __future__ import annotations

import torch
from torch import nn

from ..labels import ConditionalEngine
from ..registry import register
from .dcgan import DCGAN, DCGANDiscriminator, DCGANGenerator

CONDITIONINGS = ("projection", "concat")
POOLS = ("mean", "sum")


def pool_labels(y: torch.Tensor, pool: str = "mean") -> torch.Tensor:
    """Multi-hot rows -> mixing weights: each row's labels averaged ('mean') or added ('sum')."""
    y = y.float()
    return y / y.sum(1, keepdim=True).clamp_min(1.0) if pool == "mean" else y


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm without its own affine, then gamma(y), beta(y) per class (de Vries et al. 2017; Miyato &
    Koyama 2018). ``normalize=False`` (cgan with norm=none) keeps the per-class affine but drops the batch
    statistics, so the label still reaches G."""
    conditional = True

    def __init__(self, channels: int, num_classes: int, pool: str = "mean", normalize: bool = True):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False) if normalize else None
        self.pool = pool
        self.gamma = nn.Parameter(torch.ones(num_classes, channels))
        self.beta = nn.Parameter(torch.zeros(num_classes, channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = pool_labels(y, self.pool).to(self.gamma.dtype)
        h = self.bn(x) if self.bn is not None else x
        g, b = w @ self.gamma, w @ self.beta
        return h * g[:, :, None, None].to(h.dtype) + b[:, :, None, None].to(h.dtype)


class ProjectionDiscriminator(nn.Module):
    """D(x, y) = psi(phi(x)) + <embed(y), sum_hw phi(x)>. phi: DCGAN D's trunk (down to 4x4 features after the
    last activation), psi: its 4x4 head. ``embed`` is a bias-free linear map of the pooled multi-hot y (an
    embedding table for one-hot y), Glorot-initialised and spectrally normalised with D, as in the reference."""

    def __init__(self, image_size: int, num_classes: int, width: int = 64, max_ch: int = 512, norm: str = "batch",
                 dropout: float = 0.0, spectral_norm: bool = True, pool: str = "mean"):
        super().__init__()
        self.trunk = DCGANDiscriminator(image_size, width, max_ch, norm=norm, dropout=dropout,
                                        spectral_norm=spectral_norm)
        self.pool = pool
        embed = nn.Linear(num_classes, self.trunk.feature_channels, bias=False)
        nn.init.xavier_uniform_(embed.weight)
        self.embed = nn.utils.parametrizations.spectral_norm(embed) if spectral_norm else embed

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.trunk.features(x)
        out = self.trunk.head(h).flatten()
        e = self.embed(pool_labels(y, self.pool).to(h.dtype))
        return out + (e * h.sum((2, 3))).sum(1)


class ConcatDiscriminator(nn.Module):
    """Mirza & Osindero's input concatenation: D sees x with the pooled y as K constant feature maps."""

    def __init__(self, image_size: int, num_classes: int, width: int = 64, max_ch: int = 512, norm: str = "batch",
                 dropout: float = 0.0, spectral_norm: bool = True, pool: str = "mean"):
        super().__init__()
        self.net = DCGANDiscriminator(image_size, width, max_ch, channels=3 + num_classes, norm=norm, dropout=dropout,
                                      spectral_norm=spectral_norm)
        self.pool = pool

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = pool_labels(y, self.pool).to(x.dtype)
        return self.net(torch.cat([x, w[:, :, None, None].expand(-1, -1, *x.shape[-2:])], 1))


@register
class CGAN(ConditionalEngine, DCGAN):
    """class-conditional DCGAN: projection discriminator + conditional batch norm (or concatenation)"""
    name = "cgan"
    cpu_channels_last = False  # not measured (DCGAN's is): benchmarks/train_throughput.py --memory-format needs labels
    protocol_notes = ("projection discriminator (Miyato & Koyama 2018) with spectral norm and the hinge loss as in "
                      "the paper; G and D otherwise DCGAN's, one D step per G step with the protocol's Adam "
                      "(2e-4, betas 0.5/0.999) where the reference uses n_dis=5 and betas (0, 0.9)")

    @classmethod
    def default_config(cls):
        c = {k: v for k, v in DCGAN.default_config().items() if k != "discriminator"}
        c.update({"loss": "hinge", "spectral_norm": True, "conditioning": "projection", "label_pool": "mean",
                  "labels": None})  # labels: filled in by the trainer from --labels (engines.labels.LabelSpec)
        return c

    def check_settings(self) -> None:
        """DCGAN's checks, the conditioning settings, and the label spec (it sizes the nets: read before
        DCGAN.__init__ builds them)."""
        super().check_settings()
        c = self.config
        if c["conditioning"] not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {', '.join(CONDITIONINGS)}, not {c['conditioning']!r}")
        if c["label_pool"] not in POOLS:
            raise ValueError(f"label_pool must be one of {', '.join(POOLS)}, not {c['label_pool']!r}")
        self.init_labels()

    @property
    def num_classes(self) -> int:
        return self.label_spec.num_classes

    def build_generator(self) -> nn.Module:
        c, k = self.config, self.num_classes
        if c["conditioning"] == "concat":
            return DCGANGenerator(c["z_dim"] + k, self.image_size, c["g_width"], c["max_channels"], norm=c["norm"])
        return DCGANGenerator(c["z_dim"], self.image_size, c["g_width"], c["max_channels"], norm=c["norm"],
                              norm_layer=lambda ch: ConditionalBatchNorm2d(ch, k, c["label_pool"],
                                                                           normalize=c["norm"] == "batch"))

    def build_discriminator(self) -> nn.Module:
        c = self.config
        cls = ProjectionDiscriminator if c["conditioning"] == "projection" else ConcatDiscriminator
        return cls(self.image_size, self.num_classes, c["d_width"], c["max_channels"], norm=c["norm"],
                   dropout=c["dropout"], spectral_norm=c["spectral_norm"], pool=c["label_pool"])

    def split_batch(self, batch):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError("cgan trains on (images, labels) batches; give the trainer a labelled set (--labels)")
        return batch

    def generator_forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.config["conditioning"] == "concat":
            return self.G(torch.cat([z, pool_labels(y, self.config["label_pool"]).to(z.dtype)], 1))
        return self.G(z, y)

    def discriminator_forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.D(x, y)

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.generator_forward(z, labels.to(z.device))
