"""Transfer methods: what to keep from the base checkpoint and what to let move.

Usage by the trainer, right after building G, G_ema, D from the base and before the optimizers::

    t = build_transfer(name, freeze_d=..., general=(g, d), specific="finetune", adafm_start_kimg=0, r1_fake=False)
    t.apply(G, D)                 # freeze / re-initialise / wrap AdaFM, in place
    t.apply_ema(G_ema)            # same structure for the EMA copy
    opt_G = Adam(t.trainable_parameters(G)); opt_D = Adam(t.trainable_parameters(D))
    t.on_kimg(cur_kimg)           # every step (AdaFM start gate); t.r1_fake for the R1 phase
    G_plain = t.export_generator(G_ema)   # standard StyleGAN2 state_dict (AdaFM folded)

Options a method does not use must be left unset (None) or at their neutral value (freeze_d=0,
specific="finetune", adafm_start_kimg=0); anything else is an error, not silently ignored.

This package imports lazily: ``from fewshot.transfer.options import HELP`` (or ``fewshot.transfer.HELP``)
does not import torch, so CLI modules can use the help texts at definition time.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .options import HELP, TRANSFER_NAMES, default_general, official_freezed_count, parse_general

_LAZY = {
    "TRANSFERS": "api", "build_transfer": "api", "transfer_from_record": "api", "load_transfer_bundle": "api",
    "normalize_name": "api", "Transfer": "base", "AdaFMSynthesisLayer": "base", "AdaFMToRGBLayer": "base",
    "ADAFM_GAMMA": "base", "ADAFM_BETA": "base",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ADAFM_BETA", "ADAFM_GAMMA", "AdaFMSynthesisLayer", "AdaFMToRGBLayer", "HELP", "TRANSFERS", "TRANSFER_NAMES",
    "Transfer", "build_transfer", "default_general", "load_transfer_bundle", "normalize_name",
    "official_freezed_count", "parse_general", "transfer_from_record",
]
