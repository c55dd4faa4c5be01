"""TEMPORARY (lead's branch only, replaced by the transfer family's own registrations): the transfer methods in
the one registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..registry import NoOptions, option, options_dict, transfers
from .api import TRANSFERS


@dataclass(frozen=True)
class FreezeDOptions:
    freeze_d: int = option(1, "FreezeD blocks.", check=lambda v: v >= 0, wanted=">= 0")


@dataclass(frozen=True)
class GeneralOptions:
    general: tuple[int, int] | None = option(None, "General part G,D.")
    specific: str = option("finetune", "Specific part.", choices=("finetune", "reinit"))


@dataclass(frozen=True)
class AdaFMOptions:
    general: tuple[int, int] | None = option(None, "General part G,D.")
    specific: str = option("finetune", "Specific part.", choices=("finetune", "reinit"))
    adafm_start_kimg: float = option(0.0, "AdaFM start.", check=lambda v: v >= 0, wanted=">= 0")


def _factory(name: str) -> Any:
    def build(options: Any, *, r1_fake: bool = False, seed: int = 0) -> Any:
        return TRANSFERS[name](**options_dict(options), r1_fake=r1_fake, seed=seed)
    return build


for _name, _options in (("finetune", NoOptions), ("freezed", FreezeDOptions), ("general-part", GeneralOptions),
                        ("adafm", AdaFMOptions)):
    transfers.register(_name, options=_options, help=TRANSFERS[_name].summary)(_factory(_name))
