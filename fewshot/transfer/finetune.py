"""``finetune`` (TransferGAN, Wang et al. 2018): every weight starts from the base and every weight trains."""

from __future__ import annotations

from .base import Transfer
from .registry import register_transfer


@register_transfer
class Finetune(Transfer):
    name = "finetune"
    summary = "TransferGAN: all weights from the base checkpoint, all trained."
    accepted_options = ("r1_fake", "seed")

    def __init__(self, *, r1_fake: bool = False, seed: int = 0) -> None:
        super().__init__(r1_fake=r1_fake, seed=seed)

    def header(self) -> str:
        return f"transfer: finetune (everything trains), R1 on fakes: {'yes' if self.r1_fake else 'no'}"
