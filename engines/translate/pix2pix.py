"""pix2pix (Isola, Zhu, Zhou & Efros, CVPR 2017): paired image-to-image translation with a conditional GAN.

Follows the paper and the authors' reference implementation (pytorch-CycleGAN-and-pix2pix, ``pix2pix_model``,
``UnetGenerator``, ``NLayerDiscriminator``); docs/pix2pix.md explains every choice.

- **G**: a U-Net. ``n_down`` stride-2 4x4 conv stages down to a 1x1 bottleneck (``log2(size)``: 8 at 256 px
  as ``unet_256``, 7 at 128 px, 6 at 64 px; sizes that are not powers of two stop at an odd side), widths
  ngf, 2ngf, 4ngf, then 8ngf; the decoder mirrors it with stride-2 transposed convs, and each decoder stage
  takes its own output concatenated with the encoder stage of the same resolution (the skip connections).
  LeakyReLU 0.2 before each down conv, ReLU before each up conv, no norm on the first and the innermost down
  conv, tanh out. Dropout 0.5 after the 8ngf decoder stages above the innermost (3 at 256 px, 2 at 128, 1 at
  64, the block above the innermost on smaller images) is G's only noise source.
- **D**: the 70x70 PatchGAN (the CycleGAN one, ``n_layers`` 3) on the input and the output concatenated
  (6 channels): it judges whether an output is a plausible translation *of this input*.
- **Losses**: GAN (``gan_mode``: ``vanilla`` = the paper's cross-entropy on logits, or ``lsgan``) +
  ``lambda_l1`` (100) x L1(G(x), y). D's loss is halved (real pairs vs generated pairs); no image pool. Each
  step updates D, then G against the updated D, as the reference does. Adam 2e-4, (0.5, 0.999); the
  translation lr schedule (constant, then linear decay over the second half).
- **Norm**: instance norm with a learned scale and shift. The paper trains with batch norm at batch size 1
  and also normalises with the test picture's own statistics at inference: that is exactly this, and it
  keeps a picture's translation independent of the batch it is in at any batch size.
- **Noise at inference**: the paper keeps dropout on at test time. ``translate(x, seed=0)`` does too, with
  masks drawn from ``seed`` (the same mask for every picture of a call), so a translation is reproducible
  and does not depend on its batch; ``seed=None`` draws fresh masks per picture (the paper's exact
  behaviour); ``test_dropout: false`` turns dropout off at inference.

Paired training: ``paired = True`` makes the trainer match the source and target sets by file id, hold out
``val_fraction`` of the ids (seeded by ``split_seed``), train on the rest with one permutation for both sides
and evaluate on the held-out ids (engines/paired.py). One direction only: source -> target.
"""
from __future__ import annotations

import contextvars
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import frozen
from ..losses import bce_loss
from ..registry import register
from .base import TranslationEngine, init_normal, lsgan_loss, random_hflip, random_resized_crop
from .cyclegan import PatchDiscriminator

#: the deepest U-Net of the reference (unet_256); larger pictures keep 8 stages and a bottleneck above 1x1
MAX_DOWN = 8
#: the seed of translate()'s dropout masks inside the current call (per thread/context: the app translates
#: from several threads)
_NOISE_SEED: contextvars.ContextVar[int | None] = contextvars.ContextVar("pix2pix_noise_seed", default=0)
_RANDOM = "random"


def auto_n_down(size: int) -> int:
    """Stride-2 stages down to the smallest side: log2(size) for powers of two (a 1x1 bottleneck, as
    unet_256 / unet_128), at most MAX_DOWN; other sizes halve while the side stays even."""
    n, s = 0, int(size)
    while s % 2 == 0 and s > 1 and n < MAX_DOWN:
        s //= 2
        n += 1
    return n


def stage_widths(ngf: int, n_down: int) -> list[int]:
    """Encoder output widths: ngf, 2ngf, 4ngf, then 8ngf (the reference's unet_256 / unet_128 layout)."""
    return [int(ngf) * min(2 ** i, 8) for i in range(n_down)]


def dropout_stages(n_down: int, blocks: int | None = None) -> list[int]:
    """Decoder stages (by level, 0 = outermost) that end in dropout. Auto: the 8ngf stages between level 4 and
    the innermost, as the reference (``num_downs - 5`` of them: 3 at 256 px, 2 at 128, 1 at 64); on smaller
    U-Nets the one stage above the innermost, so G keeps a noise source. ``blocks``: that many stages counted
    from just above the innermost outwards (0: none)."""
    inner = n_down - 1
    if blocks is None:
        levels = list(range(4, inner))
        return levels if levels else ([inner - 1] if inner >= 2 else [])
    blocks = int(blocks)
    if not 0 <= blocks <= max(inner - 1, 0):
        raise ValueError(f"dropout_blocks must be between 0 and {max(inner - 1, 0)} for a {n_down}-stage U-Net, "
                         f"not {blocks}")
    return sorted(range(inner - blocks, inner))


def init_pix2pix(m: nn.Module, std: float = 0.02) -> None:
    """The reference's 'normal' init: convs N(0, 0.02); norm scales N(1, 0.02), shifts 0 (as its batch norms)."""
    init_normal(m, std)
    if isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d)) and m.weight is not None:
        nn.init.normal_(m.weight, 1.0, std)
        nn.init.zeros_(m.bias)


class NoiseDropout(nn.Module):
    """Dropout that can stay on at inference (the paper's noise). Training: ordinary dropout. Inference: off
    (``noise`` None), masks drawn from a seed (an int: one mask for every picture of the batch, so an output
    depends on its picture and the seed only), or fresh masks per picture (``"random"``)."""

    def __init__(self, p: float, index: int):
        super().__init__()
        self.p, self.index = float(p), int(index)

    def forward(self, x: torch.Tensor, noise: int | str | None = None) -> torch.Tensor:
        if self.training or noise == _RANDOM:
            return F.dropout(x, self.p, training=True)
        if noise is None or self.p == 0:
            return x
        g = torch.Generator().manual_seed((int(noise) * 1_000_003 + self.index) % 2**63)
        keep = torch.rand(x.shape[1:], generator=g) >= self.p
        return x * (keep.to(device=x.device, dtype=x.dtype) / (1.0 - self.p))


class UnetGenerator(nn.Module):
    """The pix2pix U-Net, built as explicit encoder and decoder stages (the reference nests them recursively;
    the layers, widths and skips are the same): ``down[i]`` halves the resolution, ``up[i]`` doubles it and
    takes ``cat(down[i] output, up[i + 1] output)`` (the innermost ``up`` takes the bottleneck alone)."""

    def __init__(self, image_size: int, ngf: int = 64, n_down: int | None = None, dropout: float = 0.5,
                 dropout_blocks: int | None = None, channels: int = 3):
        super().__init__()
        n = auto_n_down(image_size) if n_down is None else int(n_down)
        if n < 2 or image_size % (2 ** n):
            raise ValueError(f"a {n}-stage U-Net needs an image size divisible by {2 ** n} (at least 2 stages); "
                             f"got {image_size} px")
        w = stage_widths(ngf, n)
        self.n_down, self.widths = n, w
        self.dropout_levels = dropout_stages(n, dropout_blocks)
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in range(n):
            c_in = channels if i == 0 else w[i - 1]
            if i == 0:  # outermost: the picture straight into the first conv, no norm (the paper's C64)
                self.down.append(nn.Sequential(nn.Conv2d(c_in, w[0], 4, 2, 1)))
            elif i == n - 1:  # innermost: no norm (per-picture statistics of a 1x1 map would be zero)
                self.down.append(nn.Sequential(nn.LeakyReLU(0.2, True), nn.Conv2d(c_in, w[i], 4, 2, 1)))
            else:
                self.down.append(nn.Sequential(nn.LeakyReLU(0.2, True), nn.Conv2d(c_in, w[i], 4, 2, 1, bias=False),
                                               nn.InstanceNorm2d(w[i], affine=True)))
        self.drop = nn.ModuleDict()
        for i in range(n):
            c_in = w[i] if i == n - 1 else 2 * w[i]  # the skip doubles the width, except at the bottleneck
            if i == 0:
                self.up.append(nn.Sequential(nn.ReLU(True), nn.ConvTranspose2d(c_in, channels, 4, 2, 1), nn.Tanh()))
            else:
                self.up.append(nn.Sequential(nn.ReLU(True), nn.ConvTranspose2d(c_in, w[i - 1], 4, 2, 1, bias=False),
                                             nn.InstanceNorm2d(w[i - 1], affine=True)))
            if i in self.dropout_levels:
                self.drop[str(i)] = NoiseDropout(dropout, i)
        self.apply(init_pix2pix)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's outputs, outermost first (what the skips carry). As in the reference, the next stage's
        in-place LeakyReLU also rewrites the tensor a skip holds; the decoder's ReLU after the concatenation
        makes that immaterial (ReLU(LeakyReLU(h)) = ReLU(h)) and it saves one copy per stage."""
        skips = []
        for d in self.down:
            x = d(x)
            skips.append(x)
        return skips

    def forward(self, x: torch.Tensor, noise: int | str | None = None) -> torch.Tensor:
        skips = self.encode(x)
        h = None
        for i in range(self.n_down - 1, -1, -1):
            h = self.up[i](skips[i] if h is None else torch.cat([skips[i], h], 1))
            if str(i) in self.drop:
                h = self.drop[str(i)](h, noise)
        return h


def receptive_field(net: nn.Module) -> int:
    """Input pixels (per side) one output of a plain conv stack sees: 1 + sum (k_l - 1) * prod of earlier strides."""
    rf, jump = 1, 1
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            rf += (m.kernel_size[0] - 1) * jump
            jump *= m.stride[0]
    return rf


def patch_map_side(size: int, n_layers: int = 3) -> int:
    """The side of the PatchGAN's verdict map on ``size`` px pictures (4x4 convs, padding 1)."""
    s = int(size)
    for i in range(n_layers + 2):
        stride = 2 if i < n_layers else 1
        s = (s + 2 - 4) // stride + 1
    return s


@register
class Pix2Pix(TranslationEngine):
    """pix2pix: U-Net G with skips, conditional 70x70 PatchGAN, GAN + 100 x L1 on paired pictures (one way)."""

    name = "pix2pix"
    paired = True
    directions = ("AB",)
    protocol_defaults = {**TranslationEngine.protocol_defaults,
                         "eval_metrics": "fid,kid,lpips,lpips_target,l1_target,ssim_target"}
    protocol_notes = ("pix2pix: instance norm with learned scale/shift in G and D (the paper's batch norm at batch "
                      "size 1, test-time statistics included, at any batch size); batch 4 from the translation "
                      "protocol (the paper: 1); dropout on at inference with masks from a seed (translate(seed=0)); "
                      "trained on the paired ids minus a held-out val_fraction, evaluated on the held-out ids.")

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {**super().default_config(),
                "ngf": 64, "ndf": 64,
                "n_down": None,          # None: down to a 1x1 bottleneck (log2 of the size, at most 8)
                "d_layers": 3,           # 3: the 70x70 PatchGAN
                "dropout": 0.5,
                "dropout_blocks": None,  # None: the reference's stages (3 at 256 px, 2 at 128, 1 at 64)
                "test_dropout": True,    # the paper keeps dropout on at inference (masks from translate's seed)
                "gan_mode": "vanilla",   # vanilla (the paper's cross-entropy) | lsgan
                "lambda_l1": 100.0,
                "val_fraction": 0.1,     # share of the paired ids held out for evaluation (0: none)
                "split_seed": 0}         # seeds the held-out ids; independent of the training seed

    def __init__(self, config=None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self.config
        if c["gan_mode"] not in ("vanilla", "lsgan"):
            raise ValueError(f"gan_mode must be 'vanilla' or 'lsgan', not {c['gan_mode']!r}")
        if not 0 <= float(c["dropout"]) < 1:
            raise ValueError(f"dropout must be in [0, 1), not {c['dropout']!r}")
        if not float(c["lambda_l1"]) >= 0:
            raise ValueError(f"lambda_l1 must be >= 0, not {c['lambda_l1']!r}")
        if not 0 <= float(c["val_fraction"]) < 1:
            raise ValueError(f"val_fraction must be in [0, 1), not {c['val_fraction']!r}")
        for k in ("ngf", "ndf", "d_layers"):
            if int(c[k]) < 1:
                raise ValueError(f"{k} must be >= 1, not {c[k]!r}")
        self.G = UnetGenerator(image_size, int(c["ngf"]), c["n_down"], float(c["dropout"]), c["dropout_blocks"])
        if training:
            if patch_map_side(image_size, int(c["d_layers"])) < 1:
                raise ValueError(f"a {c['d_layers']}-layer PatchGAN has no output on {image_size} px pictures; "
                                 "use larger pictures (at least 24 px for 3 layers) or fewer d_layers")
            self.D = PatchDiscriminator(int(c["ndf"]), int(c["d_layers"]), channels=6, affine=True)
            self.D.apply(init_pix2pix)
            self.optimizers["G"] = self.make_adam(self.G.parameters())
            self.optimizers["D"] = self.make_adam(self.D.parameters())

    # ---- losses ---------------------------------------------------------------------------
    def gan_loss(self, pred: torch.Tensor, real: bool) -> torch.Tensor:
        return (bce_loss if self.config["gan_mode"] == "vanilla" else lsgan_loss)(pred, real)

    def d_accuracy(self, pred: torch.Tensor, real: bool) -> torch.Tensor:
        """Share of patch verdicts on the right side: logits against 0 (vanilla), scores against 0.5 (lsgan)."""
        t = 0.0 if self.config["gan_mode"] == "vanilla" else 0.5
        pred = pred.detach().float()
        return ((pred > t) if real else (pred <= t)).float().mean()

    def generator_loss(self, pred_fake: torch.Tensor, fake_b: torch.Tensor,
                       real_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """GAN(D(x, G(x)) called real) + lambda_l1 * mean |G(x) - y|; the parts unweighted."""
        adv = self.gan_loss(pred_fake, True)
        l1 = F.l1_loss(fake_b.float(), real_b.float())
        return adv + float(self.config["lambda_l1"]) * l1, {"loss/G_GAN": adv, "loss/G_L1": l1}

    # ---- training -------------------------------------------------------------------------
    def prepare_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's aligned augmentation: one resize + crop and one flip per *pair*, so input and target
        stay aligned (the unpaired engines draw them per picture)."""
        real_a, real_b = batch
        both = torch.cat([real_a, real_b], 1)
        if self.config["resize_crop"]:
            both = random_resized_crop(both)
        if self.config["flip"]:
            both = random_hflip(both)
        return both[:, :3], both[:, 3:]

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        real_a, real_b = self.prepare_batch(batch)
        with self.autocast():
            fake_b = self.G(real_a)
            # D: (input, target) pairs are real, (input, output) pairs fake; G's output detached
            pred_fake = self.D(torch.cat([real_a, fake_b.detach()], 1))
            pred_real = self.D(torch.cat([real_a, real_b], 1))
        loss_d_fake, loss_d_real = self.gan_loss(pred_fake, False), self.gan_loss(pred_real, True)
        loss_d = 0.5 * (loss_d_fake + loss_d_real)  # halved: slows D relative to G (the paper, sec. 3.3)
        self.optimize("D", loss_d)

        with frozen(self.D):  # G against the D just updated, as the reference; no gradients for D's weights
            with self.autocast():
                pred_g = self.D(torch.cat([real_a, fake_b], 1))
            loss_g, parts = self.generator_loss(pred_g, fake_b, real_b)
            self.optimize("G", loss_g)
        return {"loss/G": loss_g.detach(), "loss/D": loss_d.detach(),
                "loss/D_real": loss_d_real.detach(), "loss/D_fake": loss_d_fake.detach(),
                **{k: v.detach() for k, v in parts.items()},
                "acc/D_real": self.d_accuracy(pred_real, True), "acc/D_fake": self.d_accuracy(pred_fake, False)}

    # ---- inference ------------------------------------------------------------------------
    def translate(self, x: torch.Tensor, direction: str = "AB", batch_size: int = 16,
                  seed: int | None = 0) -> torch.Tensor:
        """Source pictures -> target pictures, with the paper's dropout at inference drawn from ``seed`` (the
        same seed gives the same translation whatever the batch; None: fresh random masks per picture)."""
        token = _NOISE_SEED.set(seed)
        try:
            return super().translate(x, direction, batch_size)
        finally:
            _NOISE_SEED.reset(token)

    def _translate(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        if not self.config["test_dropout"]:
            return self.G(x)
        seed = _NOISE_SEED.get()
        return self.G(x, _RANDOM if seed is None else int(seed))

    def reconstruct(self, x: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        raise ValueError("pix2pix translates one way (source -> target): it has no target -> source generator, "
                         "so there is no reconstruction")

    def export_modules(self) -> dict[str, nn.Module]:
        return {"G": self.G}

    def export_extra(self) -> dict[str, Any]:
        return {**super().export_extra(), "paired": True}

