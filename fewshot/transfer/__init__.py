"""Transfer methods: what to keep from the base checkpoint and what to let move.

Each method is one module here that registers itself in :data:`fewshot.registry.transfers` with its options
dataclass (defaults, help texts, checks): ``finetune``, ``freezed``, ``general-part``, ``adafm``. Usage by the
trainer, right after building G, G_ema, D from the base and before the optimizers::

    from fewshot.registry import transfers
    options = transfers.get("adafm").make_options({"general": "G4D2"})   # or the config's [transfer] section
    t = transfers.build("adafm", options, r1_fake=False, seed=0)
    t.apply(G, D)                 # freeze / re-initialise / wrap AdaFM, in place
    t.apply_ema(G_ema)            # same structure for the EMA copy
    opt_G = Adam(t.trainable_parameters(G)); opt_D = Adam(t.trainable_parameters(D))
    t.on_kimg(cur_kimg)           # every step (AdaFM start gate); t.r1_fake for the R1 phase
    G_plain = t.export_generator(G_ema)   # standard StyleGAN2 state_dict (AdaFM folded)
    record = t.options            # JSON-able; transfer_from_record(record) rebuilds it on resume

``build_transfer(name, freeze_d=..., general=..., ...)`` builds one from flat options (see its docstring).

Importing this package, or any method module, does not import torch (the command line reads the options when
it is built); torch is imported when a transfer meets a network.
"""

from __future__ import annotations

from typing import Any

from ._api import build_transfer, load_transfer_bundle, normalize_name, transfer_from_record
from ._base import Transfer
from .adafm import ADAFM_BETA, ADAFM_GAMMA, AdaFM, AdaFMOptions
from .finetune import Finetune
from .freezed import FreezeD, FreezeDOptions, official_freezed_count
from .general_part import GeneralPart, GeneralPartOptions, default_general, parse_general


def __getattr__(name: str) -> Any:
    if name in ("AdaFMSynthesisLayer", "AdaFMToRGBLayer"):  # defined on first use (they subclass torch modules)
        from . import adafm

        return getattr(adafm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ADAFM_BETA", "ADAFM_GAMMA", "AdaFM", "AdaFMOptions", "AdaFMSynthesisLayer", "AdaFMToRGBLayer", "Finetune",
    "FreezeD", "FreezeDOptions", "GeneralPart", "GeneralPartOptions", "Transfer", "build_transfer",
    "default_general", "load_transfer_bundle", "normalize_name", "official_freezed_count", "parse_general",
    "transfer_from_record",
]
