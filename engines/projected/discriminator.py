"""The projected discriminator of Projected GAN (Sauer et al., NeurIPS 2021), after the reference's
``pg_modules/projector.py`` and ``discriminator.py``:

1. a frozen pretrained feature network (EfficientNet-Lite0) tapped at four scales;
2. cross-channel mixing (CCM): a fixed random 1x1 conv per scale (64, 128, 256, 512 channels);
3. cross-scale mixing (CSM): fixed random fusion from the deepest scale up (add, bilinear x2, 1x1 conv),
   so every scale sees the coarser ones;
4. a small trainable discriminator per scale (spectral-normalised stride-2 conv + BatchNorm + LeakyReLU
   blocks down to 8x8, then a 4x4 conv to a map of logits); the logits of all scales are concatenated.

Only part 4 trains. The random projections are drawn once (from the run's seed) and are part of the
resume state, so a resumed run sees the same features.

``input_size``: the reference upsamples images smaller than 224 px to 224 before the feature network.
``0`` feeds the training size instead (much cheaper on a CPU; docs/decisions.md has the measurement).
The per-scale discriminators follow the real feature sizes either way.

Class-conditional (``c_dim`` > 0), as the reference's ``SingleDiscCond``: each per-scale discriminator ends in
a 4x4 conv to ``cmap_dim`` channels instead of one, a class embedding (``embedding_dim`` wide) goes through a
linear layer + LeakyReLU(0.2) to cmap, and each logit is sum(out * cmap) / sqrt(cmap_dim). The reference looks
up one class (argmax); a multi-hot row (``Grass|Poison``) takes the mean of its labels' embeddings, which is
that lookup for a single label.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from .efficientnet_lite import CHANNELS, STRIDES, efficientnet_lite0_features

# the reference's channel width of a mini discriminator's layer by feature-map size
_DISC_CHANNELS = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64, 256: 32, 512: 16, 1024: 8}


def sn_conv(*args, **kwargs) -> nn.Conv2d:
    return spectral_norm(nn.Conv2d(*args, **kwargs))


class FeatureFusion(nn.Module):
    """One CSM step: (deeper fused map + this scale's CCM map) -> bilinear x2 -> 1x1 conv."""

    def __init__(self, channels: int, expand: bool):
        super().__init__()
        self.out_conv = nn.Conv2d(channels, channels // 2 if expand else channels, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + skip
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class RandomProjection(nn.Module):
    """Frozen backbone + fixed random CCM and CSM (proj_type 2 in the reference; 1 = CCM only, 0 = raw)."""

    def __init__(self, cout: int = 64, expand: bool = True, proj_type: int = 2, weights=None):
        super().__init__()
        if proj_type not in (0, 1, 2):
            raise ValueError(f"proj_type must be 0 (none), 1 (CCM) or 2 (CCM + CSM), not {proj_type!r}")
        self.proj_type = proj_type
        self.backbone, self.backbone_info = efficientnet_lite0_features(weights)
        channels, self.scale_up = list(CHANNELS), 1
        if proj_type >= 1:
            outs = [cout, cout * 2, cout * 4, cout * 8] if expand else [cout] * 4
            self.ccm = nn.ModuleList(nn.Conv2d(c, o, 1) for c, o in zip(channels, outs))
            channels = outs
        if proj_type == 2:
            # deepest first; the last (finest) one does not halve its channels, as in the reference
            self.csm = nn.ModuleList([FeatureFusion(channels[0], False)] +
                                     [FeatureFusion(c, expand) for c in channels[1:]])
            channels = [cout, cout, cout * 2, cout * 4] if expand else [cout] * 4
            self.scale_up = 2
        self.channels = channels
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "RandomProjection":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone(x)
        if self.proj_type == 0:
            return feats
        feats = [m(f) for m, f in zip(self.ccm, feats)]
        if self.proj_type == 1:
            return feats
        out = [None] * 4
        out[3] = self.csm[3](feats[3])
        for i in (2, 1, 0):
            out[i] = self.csm[i](out[i + 1], feats[i])
        return out

    def feature_sizes(self, input_size: int) -> list[int]:
        return [math.ceil(input_size / s) * self.scale_up for s in STRIDES]


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, separable: bool = False):
        super().__init__()
        if separable:
            self.main = nn.Sequential(sn_conv(cin, cin, 3, 1, 1, groups=cin, bias=False), sn_conv(cin, cout, 1, bias=False),
                                      nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True), nn.AvgPool2d(2, 2))
        else:
            self.main = nn.Sequential(sn_conv(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def mean_embedding(y: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Multi-hot rows [N, K] -> the mean of their labels' rows of ``table`` [K, E] (a lookup for one-hot rows)."""
    y = y.to(table.dtype)
    return (y / y.sum(1, keepdim=True).clamp_min(1e-8)) @ table


class ScaleDiscriminator(nn.Module):
    """Stride-2 blocks from the feature map's size down to 8x8, then a 4x4 conv to a map of logits (conditional:
    to cmap_dim channels, projected onto the label's cmap)."""

    def __init__(self, cin: int, size: int, width: float = 1.0, separable: bool = False, end: int = 8,
                 c_dim: int = 0, cmap_dim: int = 64, embedding_dim: int = 128):
        super().__init__()

        def ch(s: int) -> int:
            nearest = min(_DISC_CHANNELS, key=lambda k: abs(k - s))
            return max(8, int(_DISC_CHANNELS[nearest] * width))

        layers: list[nn.Module] = []
        c = cin
        while size > end:
            layers.append(DownBlock(c, ch(size // 2), separable))
            c, size = ch(size // 2), size // 2
        self.cmap_dim = int(cmap_dim) if c_dim > 0 else 0
        layers.append(sn_conv(c, self.cmap_dim or 1, min(4, size), 1, 0, bias=False))
        self.main = nn.Sequential(*layers)
        if c_dim > 0:
            self.embed = nn.Embedding(c_dim, embedding_dim)
            self.embed_proj = nn.Sequential(nn.Linear(embedding_dim, self.cmap_dim), nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        out = self.main(x)
        if not self.cmap_dim:
            return out
        if c is None:
            raise ValueError("a conditional projected discriminator needs the labels")
        cmap = self.embed_proj(mean_embedding(c, self.embed.weight)).to(out.dtype)[:, :, None, None]
        return (out * cmap).sum(1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))


class ProjectedDiscriminator(nn.Module):
    """x in [-1, 1] -> logits [B, L] (all scales' logit maps, flattened and concatenated).

    Augmentation is not done here: the engine applies the run's pipeline (DiffAugment by default, as the
    reference) to real and fake before calling D."""

    def __init__(self, image_size: int, input_size: int = 0, cout: int = 64, expand: bool = True,
                 proj_type: int = 2, num_discs: int = 4, width: float = 1.0, separable: bool = False,
                 weights=None, c_dim: int = 0, cmap_dim: int = 64, embedding_dim: int = 128):
        super().__init__()
        if not 1 <= int(num_discs) <= 4:
            raise ValueError(f"num_discs must be 1..4, not {num_discs!r}")
        self.input_size = int(input_size) or int(image_size)
        self.feature = RandomProjection(cout, expand, proj_type, weights)
        sizes = self.feature.feature_sizes(self.input_size)
        self.discs = nn.ModuleList(ScaleDiscriminator(c, s, width, separable, c_dim=c_dim, cmap_dim=cmap_dim,
                                                      embedding_dim=embedding_dim)
                                   for c, s in list(zip(self.feature.channels, sizes))[:num_discs])

    def train(self, mode: bool = True) -> "ProjectedDiscriminator":
        super().train(mode)
        self.feature.train(False)  # the pretrained statistics and the random projections never change
        return self

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """``c``: multi-hot labels [B, K] for a conditional D (ignored otherwise)."""
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, self.input_size, mode="bilinear", align_corners=False)
        feats = self.feature(x)
        return torch.cat([(d(f, c) if d.cmap_dim else d(f)).flatten(1) for d, f in zip(self.discs, feats)], dim=1)

    def trainable_parameters(self):
        return self.discs.parameters()

    def frozen_state_keys(self, prefix: str = "") -> list[str]:
        """Keys of the pretrained backbone in a state dict: reloaded from the package, not checkpointed."""
        return [prefix + "feature.backbone." + k for k in self.feature.backbone.state_dict()]
