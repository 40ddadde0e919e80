"""WGAN-GP (Gulrajani et al. 2017): Wasserstein critic with a gradient penalty.

The critic has no batch norm (the penalty is defined per sample); it is updated on every
trainer step (one batch each) and G once every ``n_critic`` steps, so an epoch still sees every
image once. Paper settings: lambda = 10, n_critic = 5, Adam betas (0, 0.9); the learning rate
follows the shared protocol (2e-4) unless overridden.
"""
from __future__ import annotations

import torch
from torch import nn

from ..base import Engine, frozen, no_tf32
from ..registry import register
from .dcgan import DCGANDiscriminator, DCGANGenerator


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates; computed in fp32 for stability (the caller
    turns TF32 off around it and its backward: engines.base.no_tf32)."""
    alpha = torch.rand(real.size(0), 1, 1, 1, device=real.device)
    x_hat = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


@register
class WGANGP(Engine):
    name = "wgan_gp"
    cpu_channels_last = True  # its step 1.04x faster on this CPU (docs/decisions.md)
    protocol_notes = "Adam betas (0.0, 0.9), lambda=10, n_critic=5 as in Gulrajani et al.; lr 2e-4 from the protocol"

    @classmethod
    def default_config(cls):
        return {"lr": 2e-4, "betas": [0.0, 0.9], "z_dim": 128, "g_width": 64, "d_width": 64,
                "max_channels": 512, "gp_lambda": 10.0, "n_critic": 5, "critic_norm": "none"}

    def __init__(self, config=None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self.config
        if c["critic_norm"] is None:  # `--set critic_norm=none` arrives as null
            c["critic_norm"] = "none"
        self.G = DCGANGenerator(c["z_dim"], image_size, c["g_width"], c["max_channels"])
        if training:
            self.D = DCGANDiscriminator(image_size, c["d_width"], c["max_channels"], norm=c["critic_norm"])
            self.optimizers = {"D": self.make_adam(self.D.parameters()), "G": self.make_adam(self.G.parameters())}
            # critic-step counter and last G loss live in buffers so they are saved with the checkpoint
            self.register_buffer("critic_steps", torch.zeros((), dtype=torch.long))
            self.register_buffer("last_loss_g", torch.zeros(()))
            self._counters_from_buffers()

    def _counters_from_buffers(self) -> None:
        # a Python mirror of critic_steps decides when G steps, so a step never waits on the GPU for the
        # counter; the buffer (saved in checkpoints) stays the truth and is read back on load
        self._critic_steps = int(self.critic_steps)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.training_mode:
            self._counters_from_buffers()
        return result

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z)

    def train_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        z = torch.randn(real.size(0), self.z_dim, device=real.device)
        with torch.no_grad(), self.autocast():
            fake = self.G(z)
        real_a, fake_a = self.augment_images(real), self.augment_images(fake)
        with self.autocast():
            s_real = self.D(real_a).float()
            s_fake = self.D(fake_a).float()
        wdist = s_real.mean() - s_fake.mean()
        with no_tf32():  # the penalty's second-order gradients (and this backward) in full fp32
            gp = gradient_penalty(self.D, real_a, fake_a)
            loss_d = -wdist + c["gp_lambda"] * gp
            self.optimize("D", loss_d)
        self.critic_steps += 1
        self._critic_steps += 1

        if self._critic_steps % int(c["n_critic"]) == 0:
            z = torch.randn(real.size(0), self.z_dim, device=real.device)
            with frozen(self.D):  # no weight gradients for the critic in G's step
                with self.autocast():
                    loss_g = -self.D(self.augment_images(self.G(z))).float().mean()
                self.optimize("G", loss_g)
            self.last_loss_g.copy_(loss_g.detach())

        # A critic has no 0.5 threshold: call a score "real" above the midpoint of the batch's mean
        # real and mean fake scores (docs/engines.md).
        mid = 0.5 * (s_real.mean() + s_fake.mean()).detach()
        return {
            "loss/D": loss_d.detach(), "loss/G": self.last_loss_g.clone(), "loss/gp": gp.detach(),
            "wasserstein": wdist.detach(),
            "acc/D_real": (s_real > mid).float().mean(), "acc/D_fake": (s_fake < mid).float().mean(),
        }

    def export_modules(self):
        return {"G": self.G}
