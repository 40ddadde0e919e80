"""AEGAN (Lazarou 2020, "Autoencoding Generative Adversarial Networks"), with a VAE + GAN option.

Four networks: generator G: z -> x, encoder E: x -> z, image discriminator Dx, latent discriminator Dz.
Each step trains the two discriminators on

    Dx: real x (weight 1/2)  vs  G(z) and G(E(x)) (1/4 each)
    Dz: prior z (weight 1/2) vs  E(x) and E(G(z)) (1/4 each)

and then G and E jointly on

    adv_x_weight  * mean(NS-GAN(Dx(G(z))), NS-GAN(Dx(G(E(x)))))     fool Dx with samples and reconstructions
  + adv_z_weight  * mean(NS-GAN(Dz(E(x))), NS-GAN(Dz(E(G(z)))))     fool Dz with encodings
  + recon_x_weight * L1 (or MSE)(G(E(x)), x)                          x -> z -> x
  + recon_z_weight * MSE(E(G(z)), z)                                  z -> x -> z
  + kl_weight     * KL(q(z|x) || N(0, I))                              only with ``variational: true``

The default weights (1, 0.5, 0.005, 0.1) are those of the author's reference implementation. G and Dx are
the DCGAN building blocks (depth follows the image size); E is the DCGAN discriminator trunk with a
z_dim-wide (2 x z_dim when variational) head; Dz is a small densely connected MLP. See docs/aegan.md.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from ..base import Engine, frozen, init_dcgan_weights
from ..registry import register
from .dcgan import DCGANDiscriminator, DCGANGenerator

# log-variance is clamped so exp() cannot overflow in fp16/bf16 early in training
_LOGVAR_RANGE = (-30.0, 20.0)


class AEGANEncoder(nn.Module):
    """x -> z. The DCGAN discriminator's strided-conv trunk, with its one-logit 4x4 head swapped for a
    z_dim-wide one. ``variational``: the head is 2 x z_dim wide and forward returns (mu, logvar)."""

    def __init__(self, z_dim: int, image_size: int, width: int = 64, max_ch: int = 512, channels: int = 3,
                 norm: str = "batch", variational: bool = False):
        super().__init__()
        self.z_dim = int(z_dim)
        self.variational = bool(variational)
        trunk = DCGANDiscriminator(image_size, width, max_ch, channels, norm=norm)
        head = trunk.net[-1]
        trunk.net[-1] = nn.Conv2d(head.in_channels, self.z_dim * (2 if self.variational else 1), 4, 1, 0)
        init_dcgan_weights(trunk.net[-1])
        self.net = trunk.net

    def forward(self, x: torch.Tensor):
        h = self.net(x).flatten(1)
        if not self.variational:
            return h
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(*_LOGVAR_RANGE)


class LatentDiscriminator(nn.Module):
    """z -> one logit. A densely connected MLP (each layer sees the input and every earlier layer's
    output, as in the AEGAN reference), without batch norm so prior and encoded codes can share a batch."""

    def __init__(self, z_dim: int, width: int = 64, layers: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList()
        fan_in = z_dim
        for _ in range(layers):
            self.blocks.append(nn.Sequential(nn.Linear(fan_in, width), nn.LeakyReLU(0.2)))
            fan_in += width
        self.out = nn.Linear(fan_in, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for block in self.blocks:
            h = torch.cat([h, block(h)], dim=1)
        return self.out(h).flatten()


def _kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1).mean()


@register
class AEGAN(Engine):
    name = "aegan"
    cpu_channels_last = True  # its step 1.07x faster on this CPU (docs/decisions.md)
    protocol_notes = (
        "Loss weights from the AEGAN reference (recon_x 1 L1, recon_z 0.5 MSE, adv_x 0.005, adv_z 0.1); "
        "Adam lr 2e-4 betas (0.5, 0.999) for all nets from the protocol (reference: 1e-4 for Dx/Dz, set "
        "d_lr=1e-4 to match; its 1e-8 weight decay is dropped); DCGAN-style G/E/Dx instead of the paper's "
        "nets; DiffAugment on Dx's inputs instead of the reference's input noise"
    )

    @classmethod
    def default_config(cls):
        return {
            "lr": 2e-4, "betas": [0.5, 0.999],
            "d_lr": None,              # learning rate of Dx and Dz; None: same as lr
            "z_dim": 16,               # the reference's Pokemon latent size
            "g_width": 64, "e_width": 64, "d_width": 64, "max_channels": 512,
            "e_norm": "batch",         # encoder normalisation: batch | layer | none
            "dz_width": 64, "dz_layers": 4,
            "recon_x_loss": "l1",      # l1 | mse
            "recon_x_weight": 1.0, "recon_z_weight": 0.5,
            "adv_x_weight": 0.005, "adv_z_weight": 0.1,
            "variational": False,      # E outputs (mu, logvar), z ~ q(z|x) by reparameterisation, + KL
            "kl_weight": 1e-3,         # KL is summed over latent dims; recon_x is a per-pixel mean
        }

    @classmethod
    def resolve_config(cls, overrides=None):
        cfg = super().resolve_config(overrides)
        _validate(cfg)
        return cfg

    def __init__(self, config=None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self.config
        self.G = DCGANGenerator(c["z_dim"], image_size, c["g_width"], c["max_channels"])
        # E is built in every mode: exports carry it so the app can encode and reconstruct images.
        self.E = AEGANEncoder(c["z_dim"], image_size, c["e_width"], c["max_channels"], norm=c["e_norm"],
                              variational=c["variational"])
        if training:
            self.Dx = DCGANDiscriminator(image_size, c["d_width"], c["max_channels"], norm="batch")
            self.Dz = LatentDiscriminator(c["z_dim"], c["dz_width"], c["dz_layers"])
            d_lr = c["lr"] if c["d_lr"] is None else c["d_lr"]
            # One Adam per side: Adam is per-parameter, so this equals separate optimisers per net.
            self.optimizers = {
                "D": self.make_adam(list(self.Dx.parameters()) + list(self.Dz.parameters()), lr=d_lr),
                "G": self.make_adam(list(self.G.parameters()) + list(self.E.parameters())),
            }

    @property
    def variational(self) -> bool:
        return bool(self.config["variational"])

    # ---- sampling / encoding ---------------------------------------------------------
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z)

    def _encode(self, x: torch.Tensor, sample: bool):
        """(code, mu, logvar) with gradients; deterministic engines give mu = code, logvar = None."""
        out = self.E(x)
        if not self.variational:
            return out, out, None
        mu, logvar = out
        if not sample:
            return mu, mu, logvar
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp(), mu, logvar

    def _check_images(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.size(1) != 3 \
                or x.size(2) != self.image_size or x.size(3) != self.image_size:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"aegan expects images shaped [N, 3, {self.image_size}, {self.image_size}] "
                             f"in [-1, 1]; got {shape}")

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, sample: bool = False, batch_size: int = 64) -> torch.Tensor:
        """Images in [-1, 1] -> latent codes [N, z_dim] (eval mode). Variational engines return the
        posterior mean unless ``sample`` (then a draw from q(z|x), using the global RNG)."""
        self._check_images(x)
        was_training = self.training
        self.eval()
        try:
            out = []
            for i in range(0, len(x), batch_size):
                xb = x[i:i + batch_size].to(self.device, torch.float32)
                with self.autocast():
                    code, _, _ = self._encode(xb, sample)
                out.append(code.float())
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.z_dim, device=self.device)

    @torch.inference_mode()
    def reconstruct(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """x -> E -> G: reconstructions in [-1, 1] (through the posterior mean when variational)."""
        z = self.encode(x, batch_size=batch_size)
        return self.sample(z, batch_size=batch_size)

    def extra_grids(self, real: torch.Tensor, max_pairs: int = 32) -> dict[str, torch.Tensor]:
        """{"recon": [real_0, recon_0, real_1, recon_1, ...]} in [-1, 1]: pairs sit side by side in any
        grid with an even row length (the trainer saves it with 8 per row). Uses no RNG."""
        self._check_images(real)
        x = real[: int(max_pairs)].to(self.device).float().clamp(-1, 1)
        rec = self.reconstruct(x)
        return {"recon": torch.stack([x, rec], dim=1).flatten(0, 1)}

    # ---- training ----------------------------------------------------------------------
    def train_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        n = real.size(0)
        z = torch.randn(n, self.z_dim, device=real.device)
        with self.autocast():
            fake = self.G(z)                                      # z -> x
            z_enc, mu, logvar = self._encode(real, sample=True)   # x -> z
            recon = self.G(z_enc)                                 # x -> z -> x
            z_fake, mu_fake, _ = self._encode(fake, sample=True)  # z -> x -> z

        # ---- discriminators: real/prior weighted 1/2, each kind of fake 1/4 (as the reference) ----
        with self.autocast():
            dx_real = self.Dx(self.augment_images(real)).float()
            dx_fake = self.Dx(self.augment_images(fake.detach())).float()
            dx_recon = self.Dx(self.augment_images(recon.detach())).float()
            dz = self.Dz(torch.cat([z, z_enc.detach(), z_fake.detach()])).float()
        dz_real, dz_enc, dz_fake = dz.split(n)
        loss_dx = 0.5 * F.softplus(-dx_real).mean() + 0.25 * F.softplus(dx_fake).mean() \
            + 0.25 * F.softplus(dx_recon).mean()
        loss_dz = 0.5 * F.softplus(-dz_real).mean() + 0.25 * F.softplus(dz_enc).mean() \
            + 0.25 * F.softplus(dz_fake).mean()
        self.optimize("D", loss_dx + loss_dz)
        self.augment_feedback(dx_real)  # ADA's feedback; DiffAugment ignores it

        # ---- generator + encoder, discriminators frozen ----
        with frozen(self.Dx, self.Dz):  # no weight gradients for them in the G/E step
            with self.autocast():
                gx_fake = self.Dx(self.augment_images(fake)).float()
                gx_recon = self.Dx(self.augment_images(recon)).float()
                gz = self.Dz(torch.cat([z_enc, z_fake])).float()
            adv_x = 0.5 * (F.softplus(-gx_fake).mean() + F.softplus(-gx_recon).mean())  # non-saturating
            adv_z = F.softplus(-gz).mean()  # both halves have n codes, so the mean is their average
            if c["recon_x_loss"] == "l1":
                recon_x = F.l1_loss(recon.float(), real.float())
            else:
                recon_x = F.mse_loss(recon.float(), real.float())
            recon_z = F.mse_loss(mu_fake.float(), z)
            loss_g = c["adv_x_weight"] * adv_x + c["adv_z_weight"] * adv_z \
                + c["recon_x_weight"] * recon_x + c["recon_z_weight"] * recon_z
            if self.variational:
                kl = _kl_to_standard_normal(mu.float(), logvar.float())
                loss_g = loss_g + c["kl_weight"] * kl
            self.optimize("G", loss_g)

        out = {
            "loss/D": loss_dx.detach(), "loss/D_latent": loss_dz.detach(), "loss/G": loss_g.detach(),
            "loss/G_adv_x": adv_x.detach(), "loss/G_adv_z": adv_z.detach(),
            "loss/recon_x": recon_x.detach(), "loss/recon_z": recon_z.detach(),
            "acc/D_real": (dx_real > 0).float().mean(), "acc/D_fake": (dx_fake < 0).float().mean(),
            "acc/D_recon": (dx_recon < 0).float().mean(),
            "acc/Dz_real": (dz_real > 0).float().mean(),
            "acc/Dz_fake": (torch.cat([dz_enc, dz_fake]) < 0).float().mean(),
        }
        if self.variational:
            out["loss/kl"] = kl.detach()
        return out

    # ---- export ----------------------------------------------------------------------
    def export_modules(self):
        return {"G": self.G, "E": self.E}

    def export_extra(self):
        return {"supports": ["encode", "reconstruct"], "variational": self.variational, "z_dim": self.z_dim}


def _validate(c: dict) -> None:
    """Clear messages for bad settings (they often arrive as strings from ``--set``)."""
    def positive_int(key):
        v = c[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"aegan setting {key!r} must be a positive integer, got {v!r}")

    def non_negative(key):
        v = c[key]
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v < 0:
            raise ValueError(f"aegan setting {key!r} must be a number >= 0, got {v!r}")
        c[key] = float(v)

    for key in ("z_dim", "g_width", "e_width", "d_width", "max_channels", "dz_width", "dz_layers"):
        positive_int(key)
    for key in ("recon_x_weight", "recon_z_weight", "adv_x_weight", "adv_z_weight", "kl_weight"):
        non_negative(key)
    for key in ("lr",) + (("d_lr",) if c["d_lr"] is not None else ()):
        non_negative(key)
        if c[key] == 0:
            raise ValueError(f"aegan setting {key!r} must be > 0")
    if not isinstance(c["variational"], bool):
        raise ValueError(f"aegan setting 'variational' must be true or false, got {c['variational']!r}")
    loss = str(c["recon_x_loss"]).lower()
    if loss not in ("l1", "mse"):
        raise ValueError(f"aegan setting 'recon_x_loss' must be 'l1' or 'mse', got {c['recon_x_loss']!r}")
    c["recon_x_loss"] = loss
    if c["e_norm"] not in ("batch", "layer", "none"):
        raise ValueError(f"aegan setting 'e_norm' must be 'batch', 'layer' or 'none', got {c['e_norm']!r}")
