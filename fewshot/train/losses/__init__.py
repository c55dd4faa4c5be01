"""Adversarial losses, one file each, registered in :data:`fewshot.registry.losses`.

A loss is a pair of functions of D's logits: ``generator(gen_logits)`` and ``discriminator(gen_logits,
real_logits)`` -> (loss on fakes, loss on reals), either may be None when its logits are. The training phases
(:mod:`fewshot.train.loss`) call them; which one a run uses is the config's ``loss``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Logits = torch.Tensor


@dataclass(frozen=True)
class AdversarialLoss:
    generator: Callable[[Logits], torch.Tensor]
    discriminator: Callable[[Logits | None, Logits | None], tuple[torch.Tensor | None, torch.Tensor | None]]
