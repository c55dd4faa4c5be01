"""``freezed`` (FreezeD, Mo, Cho & Shin 2020): freeze the discriminator blocks nearest the image.

Counted in blocks (``b{res}``, ``b{res/2}``, ...). The official stylegan2-ada-pytorch ``--freezed``
counts layers instead: see :func:`official_freezed_count`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..registry import option, transfers
from ._base import Transfer

if TYPE_CHECKING:
    from torch import nn

    from ..nets import Discriminator


def official_freezed_count(n_blocks: int, architecture: str = "resnet") -> int:
    """The official ``--freezed`` layer count that freezes the ``n_blocks`` D blocks nearest the input.

    Official layer indices: the first block has fromrgb, conv0, conv1 (+ skip in resnet); later
    blocks conv0, conv1 (+ fromrgb in skip, + skip in resnet).
    """
    if n_blocks <= 0:
        return 0
    first, later = {"resnet": (4, 3), "skip": (3, 3), "orig": (3, 2)}[architecture]
    return first + later * (n_blocks - 1)


@dataclass(frozen=True)
class FreezeDOptions:
    freeze_d: int = option(
        2,
        "FreezeD: number of discriminator blocks nearest the input to freeze (b{res} downwards). "
        "Official --freezed counts layers: N blocks = 3N+1 layers for the default resnet D "
        "(4 in the first block: fromrgb, conv0, conv1, skip; 3 per later block), 3N for skip, 2N+1 for orig.",
        check=lambda v: v >= 0, wanted="a whole number of discriminator blocks >= 0",
        inert=(0,),  # no block frozen: what every other method does
    )


@transfers.register("freezed", options=FreezeDOptions, aliases=("freeze-d",))
class FreezeD(Transfer):
    """FreezeD: freeze the N discriminator blocks nearest the input; G and the rest of D train."""

    settings: FreezeDOptions

    def __init__(self, options: FreezeDOptions | None = None, *, r1_fake: bool = False, seed: int = 0) -> None:
        super().__init__(options, r1_fake=r1_fake, seed=seed)
        self.general_d = self.settings.freeze_d

    @property
    def freeze_d(self) -> int:
        return self.settings.freeze_d

    @staticmethod
    def official_layers(D: Discriminator, n_blocks: int) -> int:
        """The official ``--freezed`` value equal to freezing ``n_blocks`` blocks of this D."""
        return sum(getattr(D, f"b{r}").num_layers for r in D.block_resolutions[:n_blocks])

    def header(self) -> str:
        return (
            f"transfer: freezed, {self.freeze_d} D block(s) nearest the input frozen "
            f"(= official --freezed={official_freezed_count(self.freeze_d)} for the default resnet D), "
            f"R1 on fakes: {'yes' if self.r1_fake else 'no'}"
        )

    def describe(self, G: nn.Module, D: nn.Module | None = None) -> str:
        from ..nets import Discriminator

        text = super().describe(G, D)
        if isinstance(D, Discriminator):
            arch = D.init_kwargs.get("architecture", "resnet")
            text += (
                f"\nofficial equivalent for this {arch} D: --freezed={self.official_layers(D, self.freeze_d)}"
            )
        return text
