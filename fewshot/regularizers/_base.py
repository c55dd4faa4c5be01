"""The interface every generator regularizer offers the training loop, and the no-op one."""

from __future__ import annotations

import torch
from torch import nn


class GeneratorRegularizer(nn.Module):
    """A term added to G's main loss (the Gmain phase).

    ``requires_real_batch`` tells the loop whether ``generator_loss`` needs the current real batch.
    ``stats()`` returns plain floats for the log.
    """

    requires_real_batch: bool = False
    active: bool = True

    def generator_loss(self, fake_images: torch.Tensor, real_images: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        return {}


class NullRegularizer(GeneratorRegularizer):
    """λ = 0: adds an exact zero, loads nothing, runs nothing."""

    requires_real_batch = False
    active = False

    def generator_loss(self, fake_images: torch.Tensor, real_images: torch.Tensor | None = None) -> torch.Tensor:
        return fake_images.new_zeros(())

    def extra_repr(self) -> str:
        return "inactive (lambda=0)"
