"""``hinge``: the hinge loss of the DISP paper (Mangla et al.): G ``-D(G(z))``, D ``relu(1 - D(x)) + relu(1 + D(G(z)))``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...registry import losses
from . import AdversarialLoss


def _generator(gen_logits: torch.Tensor) -> torch.Tensor:
    return -gen_logits.mean()


def _discriminator(gen_logits: torch.Tensor | None,
                   real_logits: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    fake = F.relu(1 + gen_logits).mean() if gen_logits is not None else None
    real = F.relu(1 - real_logits).mean() if real_logits is not None else None
    return fake, real


HINGE = losses.register("hinge", help="hinge loss (the DISP paper)")(AdversarialLoss(_generator, _discriminator))
