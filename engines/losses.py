"""GAN losses on raw discriminator outputs shared by several engines, computed in fp32 (stable under autocast)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_to(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy with logits against a constant target (the sigmoid folded in)."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def bce_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """The standard GAN loss (Goodfellow et al. 2014; non-saturating for G): BCE towards 1 for real, 0 for fake."""
    return bce_to(logits, 1.0 if real else 0.0)


def lsgan_loss(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017): MSE towards 1 for real, 0 for fake."""
    pred = pred.float()
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))
