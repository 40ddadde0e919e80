"""U-GAT-IT (Kim et al., ICLR 2020): unpaired translation with CAM attention and AdaLIN (docs/ugatit.md).

Two generators (G_AB: A -> B, G_BA: B -> A) and, per domain, a global and a local discriminator (D_GA,
D_LA judge domain A pictures; D_GB, D_LB domain B). Every network carries a CAM attention module: an
auxiliary classifier on the globally average- and max-pooled features whose FC weights re-weight the
feature channels (Zhou et al. 2016's class activation map), so the nets attend to the regions that tell
the domains apart. The generator's decoder is steered by AdaLIN, whose learned rho chooses between instance
and layer normalisation per channel and whose gamma / beta come from an MLP on the attended features (light
variant: on their global average; full variant: on the whole flattened map).

Losses as in the paper and its official code: least-squares GAN on D's patch outputs and on its CAM logits,
L1 cycle and identity, BCE on the generators' CAM logits; weights 1 / 10 / 10 / 1000. One D step, then one
G step; every rho is clipped to [0, 1] after the G step.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from ..losses import bce_to
from ..registry import register
from .base import TranslationEngine, lsgan_loss, patch_accuracy, set_requires_grad
from .cyclegan import ResnetBlock  # conv-IN-ReLU-conv-IN residual block: the encoder's, identical in U-GAT-IT

N_DOWN = 2  # the generator's stride-2 downsamplings (features at 1/4 of the input)


# ---- normalisation --------------------------------------------------------------------------------------
def layer_instance_norm(x: torch.Tensor, rho: torch.Tensor, eps: float) -> torch.Tensor:
    """rho * IN(x) + (1 - rho) * LN(x), in fp32 (statistics of bf16 activations are too coarse)."""
    xf = x.float()
    in_var, in_mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, correction=0)
    ln_var, ln_mean = torch.var_mean(xf, dim=(1, 2, 3), keepdim=True, correction=0)
    x_in = (xf - in_mean) * torch.rsqrt(in_var + eps)
    x_ln = (xf - ln_mean) * torch.rsqrt(ln_var + eps)
    rho = rho.float()
    return rho * x_in + (1 - rho) * x_ln


class AdaLIN(nn.Module):
    """Adaptive layer-instance norm of the bottleneck: own rho, gamma / beta given per picture by the MLP.
    rho starts at 1 (pure instance norm), as the paper initialises it in the residual blocks."""

    def __init__(self, ch: int, eps: float = 1e-5, rho_init: float = 1.0):
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, ch, 1, 1), float(rho_init)))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = layer_instance_norm(x, self.rho, self.eps) * gamma[:, :, None, None] + beta[:, :, None, None]
        return out.to(x.dtype)


class LIN(nn.Module):
    """Layer-instance norm of the decoder: rho, gamma, beta all learned; rho starts at 0 (pure layer norm)
    as in the paper's up-sampling blocks, gamma at 1, beta at 0."""

    def __init__(self, ch: int, eps: float = 1e-5, rho_init: float = 0.0):
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, ch, 1, 1), float(rho_init)))
        self.gamma = nn.Parameter(torch.ones(1, ch, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, ch, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (layer_instance_norm(x, self.rho, self.eps) * self.gamma + self.beta).to(x.dtype)


class AdaLINResBlock(nn.Module):
    """The decoder's residual block: pad-conv-AdaLIN-ReLU-pad-conv-AdaLIN plus the skip."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=False))
        self.norm1 = AdaLIN(ch)
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=False))
        self.norm2 = AdaLIN(ch)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x), gamma, beta))
        return x + self.norm2(self.conv2(h), gamma, beta)


# ---- attention ------------------------------------------------------------------------------------------
class CAM(nn.Module):
    """Class-activation-map attention. Two one-logit classifiers (on GAP and on GMP features) learn which
    domain a picture belongs to; each one's FC weights say how much each channel matters for that decision,
    so the feature maps are scaled by them, concatenated and fused back to ``ch`` channels by a 1x1 conv.
    Returns the attended features, the two logits [N, 2] and the heat map [N, h, w] (channel sum)."""

    def __init__(self, ch: int, act: nn.Module, sn: bool = False):
        super().__init__()
        wrap = spectral_norm if sn else (lambda m: m)
        self.gap_fc = wrap(nn.Linear(ch, 1, bias=False))
        self.gmp_fc = wrap(nn.Linear(ch, 1, bias=False))
        self.fuse = nn.Conv2d(2 * ch, ch, 1)
        self.act = act

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gap_logit = self.gap_fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        gmp_logit = self.gmp_fc(F.adaptive_max_pool2d(x, 1).flatten(1))
        # read .weight after the call: with spectral norm it is the normalised weight that produced the logit
        w_gap = self.gap_fc.weight.view(1, -1, 1, 1)
        w_gmp = self.gmp_fc.weight.view(1, -1, 1, 1)
        x = self.act(self.fuse(torch.cat([x * w_gap.to(x.dtype), x * w_gmp.to(x.dtype)], 1)))
        return x, torch.cat([gap_logit, gmp_logit], 1), x.sum(1)


# ---- networks -------------------------------------------------------------------------------------------
class UGATITGenerator(nn.Module):
    """Encoder (c7s1-ngf, two stride-2 downsamplings, n_res residual blocks; IN, reflection padding), CAM,
    the gamma/beta MLP, n_res AdaLIN residual blocks, a decoder of nearest-neighbour x2 + conv + LIN + ReLU,
    c7s1-3 + tanh. forward(x) -> (image, cam_logit [N, 2], heatmap [N, H/4, W/4])."""

    def __init__(self, ngf: int = 64, n_res: int = 4, image_size: int = 256, light: bool = True,
                 channels: int = 3):
        super().__init__()
        self.light = bool(light)
        self.image_size = int(image_size)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, ngf, 7, bias=False),
                                   nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(N_DOWN):
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(ch, ch * 2, 3, 2, bias=False), nn.InstanceNorm2d(ch * 2),
                       nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(n_res)]
        self.encoder = nn.Sequential(*layers)
        self.cam = CAM(ch, nn.ReLU(True))
        # light: the MLP reads the attended features' global average (size-free, few parameters);
        # full: the whole flattened map (h*w*ch inputs, so the net is tied to its training size)
        feat = self.image_size // 2 ** N_DOWN
        self.mlp = nn.Sequential(nn.Linear(ch if self.light else feat * feat * ch, ch, bias=False), nn.ReLU(True),
                                 nn.Linear(ch, ch, bias=False), nn.ReLU(True))
        self.gamma = nn.Linear(ch, ch, bias=False)
        self.beta = nn.Linear(ch, ch, bias=False)
        self.bottleneck = nn.ModuleList([AdaLINResBlock(ch) for _ in range(n_res)])
        up: list[nn.Module] = []
        for _ in range(N_DOWN):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                   nn.Conv2d(ch, ch // 2, 3, bias=False), LIN(ch // 2), nn.ReLU(True)]
            ch //= 2
        up += [nn.ReflectionPad2d(3), nn.Conv2d(ch, channels, 7, bias=False), nn.Tanh()]
        self.decoder = nn.Sequential(*up)

    def rhos(self) -> list[nn.Parameter]:
        return [m.rho for m in self.modules() if isinstance(m, (AdaLIN, LIN))]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        if h % 2 ** N_DOWN or w % 2 ** N_DOWN:
            raise ValueError(f"U-GAT-IT needs picture sides that are multiples of {2 ** N_DOWN}; got {h}x{w}")
        if not self.light and (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"the full U-GAT-IT generator reads its whole feature map, so it only takes "
                             f"{self.image_size}x{self.image_size} pictures (got {h}x{w}); the light variant "
                             f"takes any size")
        f, cam_logit, heatmap = self.cam(self.encoder(x))
        pooled = F.adaptive_avg_pool2d(f, 1).flatten(1) if self.light else f.flatten(1)
        style = self.mlp(pooled)
        gamma, beta = self.gamma(style), self.beta(style)
        for block in self.bottleneck:
            f = block(f, gamma, beta)
        return self.decoder(f), cam_logit, heatmap


class UGATITDiscriminator(nn.Module):
    """``n_down`` stride-2 4x4 convs (reflection padding, spectral norm, LeakyReLU 0.2, width doubling from
    ndf), one stride-1 4x4 conv doubling again, CAM (spectral-normed classifiers, LeakyReLU fusion) and a
    4x4 conv to one channel of patch scores. n_down = 5 is the paper's global D (n_layers = 7 in the
    official code), 3 its local D (n_layers = 5). forward(x) -> (patches, cam_logit [N, 2], heatmap)."""

    def __init__(self, ndf: int = 64, n_down: int = 5, channels: int = 3):
        super().__init__()
        if n_down < 1:
            raise ValueError(f"a discriminator needs at least one stride-2 conv, not {n_down}")
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(channels, ndf, 4, 2)),
                                   nn.LeakyReLU(0.2, True)]
        ch = ndf
        for _ in range(n_down - 1):
            layers += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(ch, ch * 2, 4, 2)), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(ch, ch * 2, 4, 1)), nn.LeakyReLU(0.2, True)]
        ch *= 2
        self.body = nn.Sequential(*layers)
        self.cam = CAM(ch, nn.LeakyReLU(0.2, True), sn=True)
        self.head = nn.Sequential(nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(ch, 1, 4, bias=False)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f, cam_logit, heatmap = self.cam(self.body(x))
        return self.head(f), cam_logit, heatmap


def discriminator_depths(image_size: int) -> tuple[int, int]:
    """Stride-2 convs of the (global, local) discriminators: the paper's (5, 3) from 128 px up. Smaller
    pictures drop global layers so that a map of at least 4x4 reaches the two stride-1 convs (which need 2x2
    patch outputs at the least), and the local D stays at least one stage shallower than the global one:
    64 px -> (4, 3), 32 px -> (3, 2), 16 px -> (2, 1)."""
    if image_size < 16:
        raise ValueError(f"U-GAT-IT needs pictures of at least 16 px, not {image_size}")
    g = min(5, int(math.log2(image_size)) - 2)
    return g, min(3, g - 1)


# ---- the engine -----------------------------------------------------------------------------------------
@register
class UGATIT(TranslationEngine):
    """U-GAT-IT: CAM attention + AdaLIN generators, global and local CAM discriminators per domain."""

    name = "ugatit"
    cpu_channels_last = True  # its step 1.22x faster on this CPU (docs/decisions.md)
    has_attention = True
    protocol_notes = ("U-GAT-IT paper / official code: Adam lr 1e-4, betas (0.5, 0.999), weight decay 1e-4, "
                      "batch 1, 256 px, 1M iterations with linear lr decay over the second half. Here: the shared "
                      "translation protocol's lr 2e-4 and batch/epochs; weight decay 1e-4 kept (weight_decay).")

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {**super().default_config(),
                "ngf": 64, "ndf": 64,
                "n_res": 4,               # residual blocks in the encoder and AdaLIN blocks in the decoder
                "light": True,            # gamma/beta MLP on pooled features (False: on the whole feature map)
                "adv_weight": 1.0, "cycle_weight": 10.0, "identity_weight": 10.0, "cam_weight": 1000.0,
                "weight_decay": 1e-4}     # Adam's (L2) weight decay, the paper's setting

    def __init__(self, config=None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self.config
        if image_size % 2 ** N_DOWN:
            raise ValueError(f"ugatit needs an image size that is a multiple of {2 ** N_DOWN}, not {image_size}")
        d_global, d_local = discriminator_depths(image_size)
        if int(c["n_res"]) < 1:
            raise ValueError(f"ugatit needs n_res >= 1, not {c['n_res']}")
        if float(c["weight_decay"]) < 0:
            raise ValueError(f"weight_decay must be >= 0, not {c['weight_decay']}")
        g_args = dict(ngf=int(c["ngf"]), n_res=int(c["n_res"]), image_size=image_size, light=bool(c["light"]))
        self.G_AB = UGATITGenerator(**g_args)
        self.G_BA = UGATITGenerator(**g_args)
        if training:
            ndf = int(c["ndf"])
            self.D_GA, self.D_LA = UGATITDiscriminator(ndf, d_global), UGATITDiscriminator(ndf, d_local)
            self.D_GB, self.D_LB = UGATITDiscriminator(ndf, d_global), UGATITDiscriminator(ndf, d_local)
            wd = float(self.config["weight_decay"])
            self.optimizers["G"] = self.make_adam(list(self.G_AB.parameters()) + list(self.G_BA.parameters()),
                                                  weight_decay=wd)
            self.optimizers["D"] = self.make_adam([p for d in self.discriminators() for p in d.parameters()],
                                                  weight_decay=wd)

    def discriminators(self) -> tuple[nn.Module, ...]:
        return self.D_GA, self.D_LA, self.D_GB, self.D_LB

    @torch.no_grad()
    def clip_rho(self) -> None:
        """Keep every AdaLIN/LIN rho a convex mix of IN and LN (the official code's RhoClipper(0, 1))."""
        for rho in self.G_AB.rhos() + self.G_BA.rhos():  # looked up each time: .to() may swap parameters
            rho.clamp_(0.0, 1.0)

    def _translate(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        return (self.G_AB if direction == "AB" else self.G_BA)(x)[0]

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        return self.G_AB(x)[2]

    def export_modules(self) -> dict[str, nn.Module]:
        return {"G_AB": self.G_AB, "G_BA": self.G_BA}

    def _d_terms(self, disc: nn.Module, real: torch.Tensor, fake: torch.Tensor):
        """One D on real and (detached) fake pictures in one batch (D has no batch statistics): LSGAN losses
        of its patch scores and of its CAM logits, and its patch accuracies."""
        n = real.shape[0]
        with self.autocast():
            patches, cam_logit, _ = disc(torch.cat([real, fake.detach()]))
        adv = lsgan_loss(patches[:n], True) + lsgan_loss(patches[n:], False)
        cam = lsgan_loss(cam_logit[:n], True) + lsgan_loss(cam_logit[n:], False)
        return adv, cam, patch_accuracy(patches[:n], True), patch_accuracy(patches[n:], False)

    def _g_adv(self, discs, fake: torch.Tensor) -> torch.Tensor:
        """G's LSGAN loss against the global and local D of the target domain, on patches and CAM logits."""
        total = 0.0
        for disc in discs:
            patches, cam_logit, _ = disc(fake)
            total = total + lsgan_loss(patches, True) + lsgan_loss(cam_logit, True)
        return total

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        real_a, real_b = self.prepare_batch(batch)
        c = self.config
        w_adv, w_cyc = float(c["adv_weight"]), float(c["cycle_weight"])
        w_idt, w_cam = float(c["identity_weight"]), float(c["cam_weight"])
        n = real_a.shape[0]

        # Translations and identity mappings once, kept with their graph for the G step: G does not change
        # during the D step and has no batch statistics (IN / LN are per picture), so these are the values the
        # official code recomputes; batching the two inputs of each G halves the number of calls.
        with self.autocast():
            out_ab, cam_ab, _ = self.G_AB(torch.cat([real_a, real_b]))
            out_ba, cam_ba, _ = self.G_BA(torch.cat([real_b, real_a]))
        fake_b, idt_b = out_ab[:n], out_ab[n:]
        fake_a, idt_a = out_ba[:n], out_ba[n:]

        # ---- discriminators: LSGAN on the patch scores and on the CAM logits, global and local ----
        terms = {k: self._d_terms(d, r, f) for k, d, r, f in (("GA", self.D_GA, real_a, fake_a),
                                                           ("LA", self.D_LA, real_a, fake_a),
                                                           ("GB", self.D_GB, real_b, fake_b),
                                                           ("LB", self.D_LB, real_b, fake_b))}
        loss_d_a = w_adv * sum(terms[k][0] + terms[k][1] for k in ("GA", "LA"))
        loss_d_b = w_adv * sum(terms[k][0] + terms[k][1] for k in ("GB", "LB"))
        self.optimize("D", loss_d_a + loss_d_b)

        # ---- generators: fool both Ds (patches and CAM logits), close the cycles, keep in-domain pictures,
        # and let each G's CAM classifier tell its source domain (1) from its target domain (0) ----
        set_requires_grad(self.discriminators(), False)
        with self.autocast():
            rec_a = self.G_BA(fake_b)[0]
            rec_b = self.G_AB(fake_a)[0]
            adv_ab = self._g_adv((self.D_GB, self.D_LB), fake_b)
            adv_ba = self._g_adv((self.D_GA, self.D_LA), fake_a)
        cyc_a, cyc_b = F.l1_loss(rec_a.float(), real_a), F.l1_loss(rec_b.float(), real_b)
        l_idt_a, l_idt_b = F.l1_loss(idt_a.float(), real_a), F.l1_loss(idt_b.float(), real_b)
        cam_g_b = bce_to(cam_ab[:n], 1.0) + bce_to(cam_ab[n:], 0.0)  # G_AB: A (its source) 1, B 0
        cam_g_a = bce_to(cam_ba[:n], 1.0) + bce_to(cam_ba[n:], 0.0)  # G_BA: B (its source) 1, A 0
        loss_g = (w_adv * (adv_ab + adv_ba) + w_cyc * (cyc_a + cyc_b) + w_idt * (l_idt_a + l_idt_b)
                  + w_cam * (cam_g_a + cam_g_b))
        self.optimize("G", loss_g)
        set_requires_grad(self.discriminators(), True)
        self.clip_rho()

        return {k: v.detach() for k, v in {
            "loss/G": loss_g, "loss/D": 0.5 * (loss_d_a + loss_d_b),
            "loss/D_A": loss_d_a, "loss/D_B": loss_d_b,
            "loss/G_AB": adv_ab, "loss/G_BA": adv_ba,
            "loss/cycle_A": cyc_a, "loss/cycle_B": cyc_b,
            "loss/idt_A": l_idt_a, "loss/idt_B": l_idt_b,
            "loss/cam_G": cam_g_a + cam_g_b,
            "loss/cam_D": sum(t[1] for t in terms.values()),
            "acc/D_real": sum(t[2] for t in terms.values()) / 4,
            "acc/D_fake": sum(t[3] for t in terms.values()) / 4,
        }.items()}
