"""``finetune`` (TransferGAN, Wang et al. 2018): every weight starts from the base and every weight trains."""

from __future__ import annotations

from ..registry import NoOptions, transfers
from ._base import Transfer


@transfers.register("finetune", options=NoOptions, aliases=("transfergan",))
class Finetune(Transfer):
    """TransferGAN: all weights from the base checkpoint, all trained."""

    def header(self) -> str:
        return f"transfer: finetune (everything trains), R1 on fakes: {'yes' if self.r1_fake else 'no'}"
