"""The interface every generator regularizer offers the training loop, and the no-op one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TrainingContext:
    """What a regularizer that adapts a source network sees of the run (``GeneratorRegularizer.bind``).

    ``G`` and ``D`` are the networks being trained; ``g_parameters`` G's trainable tensors (the transfer method's
    choice). ``source()`` gives the network the run adapts from, frozen: ``{"G": ..., "D": ...}`` as the base
    held them before training (on a resumed run rebuilt from the config's base), on ``device``. ``seed`` is the
    run's seed, ``num_images`` the size of the training set, ``adversarial`` the name of the adversarial loss."""

    G: nn.Module
    D: nn.Module
    g_parameters: list[nn.Parameter]
    source: Callable[[], dict[str, nn.Module]]
    device: torch.device
    seed: int
    num_images: int
    adversarial: str = "logistic"


def require_unconditional(context: TrainingContext, method: str) -> None:
    """CDC and EWC render from z alone: a conditioned G (DISP, class labels) is refused with one line."""
    from ..errors import FewshotError

    if getattr(context.G, "c_dim", 0):
        raise FewshotError(f"{method} compares generators that render from z alone; this G is conditioned "
                           f"(c_dim {context.G.c_dim})", hint=f"drop the conditioning (DISP, labels) to use {method}")


class GeneratorRegularizer(nn.Module):
    """A term added to G's main loss (the Gmain phase).

    ``requires_real_batch`` tells the loop whether ``generator_loss`` needs the current real batch.
    ``stats()`` returns plain floats for the log.

    A regularizer that needs more of the run than the fakes (a source network, G's weights, D's features, a say
    in the latents) sets ``hooks_training = True`` and overrides what it needs of the optional hooks below; the
    defaults change nothing, so a plain regularizer trains exactly as before.
    """

    requires_real_batch: bool = False
    active: bool = True
    hooks_training: bool = False

    def generator_loss(self, fake_images: torch.Tensor, real_images: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        return {}

    # -- optional hooks (read only when hooks_training is set, except bind and the state) -----------------------
    def bind(self, context: TrainingContext) -> None:
        """Called once, after the networks and the transfer method and before the optimisers are built."""

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Tensors of the regularizer's own that D's optimiser trains with D (a D head)."""
        return []

    def phase_latents(self, phase: str, batch_idx: int, z: torch.Tensor) -> torch.Tensor:
        """The latents a phase's chunk generates from (``z``: the loop's draw); called first in every phase."""
        return z

    def discriminate(self, D: nn.Module, images: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor | None:
        """D's logits for (augmented) ``images`` in the current phase, or None for D's own output."""
        return None

    def training_state(self) -> dict[str, torch.Tensor]:
        """Tensors a snapshot must hold so that ``--resume`` continues exactly (anchors, a head's weights)."""
        return {}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        """Take back what :meth:`training_state` gave."""


class NullRegularizer(GeneratorRegularizer):
    """λ = 0: adds an exact zero, loads nothing, runs nothing."""

    requires_real_batch = False
    active = False

    def generator_loss(self, fake_images: torch.Tensor, real_images: torch.Tensor | None = None) -> torch.Tensor:
        return fake_images.new_zeros(())

    def extra_repr(self) -> str:
        return "inactive (lambda=0)"
