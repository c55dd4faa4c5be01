"""``logistic``: StyleGAN2's non-saturating logistic loss (the official ``StyleGAN2Loss``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...registry import losses
from . import AdversarialLoss


def _generator(gen_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-gen_logits).mean()


def _discriminator(gen_logits: torch.Tensor | None,
                   real_logits: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    fake = F.softplus(gen_logits).mean() if gen_logits is not None else None
    real = F.softplus(-real_logits).mean() if real_logits is not None else None
    return fake, real


LOGISTIC = losses.register("logistic", help="non-saturating logistic loss (StyleGAN2)")(
    AdversarialLoss(_generator, _discriminator))
