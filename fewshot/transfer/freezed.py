"""``freezed`` (FreezeD, Mo, Cho & Shin 2020): freeze the discriminator blocks nearest the image.

Counted in blocks (``b{res}``, ``b{res/2}``, ...). The official stylegan2-ada-pytorch ``--freezed``
counts layers instead: see :func:`fewshot.transfer.base.official_freezed_count`.
"""

from __future__ import annotations

from torch import nn

from ..errors import FewshotError
from ..nets import Discriminator
from .base import Transfer, official_freezed_count
from .registry import register_transfer


@register_transfer
class FreezeD(Transfer):
    name = "freezed"
    summary = "FreezeD: freeze the N discriminator blocks nearest the input; G and the rest of D train."
    accepted_options = ("freeze_d", "r1_fake", "seed")

    def __init__(self, *, freeze_d: int = 1, r1_fake: bool = False, seed: int = 0) -> None:
        if isinstance(freeze_d, bool) or not isinstance(freeze_d, int) or freeze_d < 0:
            raise FewshotError(f"freeze_d must be a whole number of discriminator blocks >= 0, got {freeze_d!r}")
        super().__init__(general_g=0, general_d=freeze_d, r1_fake=r1_fake, seed=seed)
        self.freeze_d = freeze_d

    @property
    def options(self) -> dict:
        return {**super().options, "freeze_d": self.freeze_d}

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
        text = super().describe(G, D)
        if isinstance(D, Discriminator):
            arch = D.init_kwargs.get("architecture", "resnet")
            text += (
                f"\nofficial equivalent for this {arch} D: --freezed={self.official_layers(D, self.freeze_d)}"
            )
        return text
