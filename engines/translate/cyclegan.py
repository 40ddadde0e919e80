"""CycleGAN (Zhu et al. 2017): unpaired translation with two generators and two discriminators.

G_AB: A -> B and G_BA: B -> A are ResNet generators (c7s1-64, two stride-2 downsamplings, residual blocks
— 6 at 128 px, 9 from 256 px —, two transposed-conv upsamplings, c7s1-3, tanh; instance norm and reflection
padding). D_A and D_B are 70x70 PatchGANs (three stride-2 4x4 convs, then two stride-1 ones) judging
domain A and domain B pictures. Losses as in the paper and its reference code: least-squares GAN,
cycle consistency L1 with lambda = 10 in both directions, identity L1 with weight 0.5 * lambda, D on
a 50-image history of fakes with its loss halved; lr constant for the first half, linear decay after.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register
from .base import ImagePool, TranslationEngine, init_normal, lsgan_loss, patch_accuracy, set_requires_grad


class ResnetBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    def __init__(self, ngf: int = 64, n_blocks: int = 6, n_down: int = 2, channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, ngf, 7), nn.InstanceNorm2d(ngf),
                                   nn.ReLU(True)]
        ch = ngf
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, ch * 2, 3, 2, 1), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(n_blocks)]
        for _ in range(n_down):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(ch // 2),
                       nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """With n_layers = 3 each output sees a 70x70 patch of the input. ``channels`` 6 judges (input, output)
    pairs (pix2pix's conditional D); ``affine`` gives the norms a learned scale and shift."""

    def __init__(self, ndf: int = 64, n_layers: int = 3, channels: int = 3, affine: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1), nn.InstanceNorm2d(out, affine=affine),
                       nn.LeakyReLU(0.2, True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.apply(init_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register
class CycleGAN(TranslationEngine):
    """CycleGAN: ResNet generators, 70x70 PatchGANs, LSGAN + cycle + identity losses (the translation baseline)."""

    name = "cyclegan"

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {**super().default_config(),
                "ngf": 64, "ndf": 64,
                "n_blocks": None,        # None: 6 residual blocks up to 128 px, 9 above (the paper's choice)
                "d_layers": 3,           # 3: the 70x70 PatchGAN
                "lambda_cycle": 10.0,
                "lambda_identity": 0.5,  # identity loss weight as a fraction of lambda_cycle (0 disables it)
                "pool_size": 50}

    def __init__(self, config=None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self.config
        if image_size < 16 or image_size % 4:
            raise ValueError(f"cyclegan needs an image size that is a multiple of 4 and at least 16, not {image_size}")
        blocks = c["n_blocks"] if c["n_blocks"] is not None else (6 if image_size <= 128 else 9)
        self.G_AB = ResnetGenerator(c["ngf"], int(blocks))
        self.G_BA = ResnetGenerator(c["ngf"], int(blocks))
        if training:
            self.D_A = PatchDiscriminator(c["ndf"], c["d_layers"])
            self.D_B = PatchDiscriminator(c["ndf"], c["d_layers"])
            self.pool_A, self.pool_B = ImagePool(c["pool_size"]), ImagePool(c["pool_size"])
            self.optimizers["G"] = self.make_adam(list(self.G_AB.parameters()) + list(self.G_BA.parameters()))
            self.optimizers["D"] = self.make_adam(list(self.D_A.parameters()) + list(self.D_B.parameters()))

    def pools(self):
        return {"A": self.pool_A, "B": self.pool_B} if hasattr(self, "pool_A") else {}

    def _translate(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        return (self.G_AB if direction == "AB" else self.G_BA)(x)

    def export_modules(self) -> dict[str, nn.Module]:
        return {"G_AB": self.G_AB, "G_BA": self.G_BA}

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        real_a, real_b = self.prepare_batch(batch)
        c = self.config
        lam, lam_idt = float(c["lambda_cycle"]), float(c["lambda_cycle"]) * float(c["lambda_identity"])

        # ---- generators: fool both Ds, close both cycles, leave in-domain pictures alone ----
        set_requires_grad((self.D_A, self.D_B), False)
        with self.autocast():
            fake_b = self.G_AB(real_a)
            fake_a = self.G_BA(real_b)
            rec_a = self.G_BA(fake_b)
            rec_b = self.G_AB(fake_a)
            adv_ab = lsgan_loss(self.D_B(fake_b), True)
            adv_ba = lsgan_loss(self.D_A(fake_a), True)
        cyc_a = F.l1_loss(rec_a.float(), real_a)
        cyc_b = F.l1_loss(rec_b.float(), real_b)
        loss_g = adv_ab + adv_ba + lam * (cyc_a + cyc_b)
        out = {}
        if lam_idt > 0:
            with self.autocast():
                idt_b = self.G_AB(real_b)  # G_AB fed a B picture should return it unchanged
                idt_a = self.G_BA(real_a)
            out["loss/idt_A"] = F.l1_loss(idt_a.float(), real_a)
            out["loss/idt_B"] = F.l1_loss(idt_b.float(), real_b)
            loss_g = loss_g + lam_idt * (out["loss/idt_A"] + out["loss/idt_B"])
        self.optimize("G", loss_g)
        set_requires_grad((self.D_A, self.D_B), True)

        # ---- discriminators: real vs a history of fakes, loss halved (slows D relative to G) ----
        past_b = self.pool_B.query(fake_b.detach().float())
        past_a = self.pool_A.query(fake_a.detach().float())
        with self.autocast():
            pr_b, pf_b = self.D_B(real_b), self.D_B(past_b)
            pr_a, pf_a = self.D_A(real_a), self.D_A(past_a)
        loss_d_b = 0.5 * (lsgan_loss(pr_b, True) + lsgan_loss(pf_b, False))
        loss_d_a = 0.5 * (lsgan_loss(pr_a, True) + lsgan_loss(pf_a, False))
        self.optimize("D", loss_d_a + loss_d_b)

        out.update({
            "loss/G": loss_g.detach(), "loss/D": (0.5 * (loss_d_a + loss_d_b)).detach(),
            "loss/D_A": loss_d_a.detach(), "loss/D_B": loss_d_b.detach(),
            "loss/G_AB": adv_ab.detach(), "loss/G_BA": adv_ba.detach(),
            "loss/cycle_A": cyc_a.detach(), "loss/cycle_B": cyc_b.detach(),
            "acc/D_real": 0.5 * (patch_accuracy(pr_a, True) + patch_accuracy(pr_b, True)),
            "acc/D_fake": 0.5 * (patch_accuracy(pf_a, False) + patch_accuracy(pf_b, False)),
        })
        return {k: v.detach() for k, v in out.items()}
