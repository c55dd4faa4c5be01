"""The heavy half of :mod:`fewshot.transfer` (imports torch): the registry, build_transfer, the resume loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import FewshotError
from . import adafm, finetune, freezed, general_part  # noqa: F401  (registration)
from .base import (
    ADAFM_BETA,
    ADAFM_GAMMA,
    AdaFMSynthesisLayer,
    AdaFMToRGBLayer,
    Transfer,
    official_freezed_count,
)
from .options import HELP, NEUTRAL_VALUES, default_general, parse_general  # noqa: F401
from .registry import TRANSFERS


def normalize_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    aliases = {"transfergan": "finetune", "freeze-d": "freezed", "generalpart": "general-part", "gmdn": "general-part"}
    return aliases.get(key, key)


def build_transfer(name: str, **options: Any) -> Transfer:
    """Build a transfer method by name with its options (unknown or misplaced options are errors)."""
    key = normalize_name(name)
    if key not in TRANSFERS:
        raise FewshotError(f"unknown transfer method {name!r}", hint=f"choose one of: {', '.join(sorted(TRANSFERS))}")
    cls = TRANSFERS[key]
    accepted: dict[str, Any] = {}
    for option, value in options.items():
        if option not in NEUTRAL_VALUES:
            raise FewshotError(f"unknown transfer option {option!r}", hint=f"known: {', '.join(NEUTRAL_VALUES)}")
        if option in cls.accepted_options:
            if value is not None:
                accepted[option] = value
        elif value not in NEUTRAL_VALUES[option]:
            raise FewshotError(
                f"option {option}={value!r} has no effect with transfer {key!r}",
                hint=f"{key} uses: {', '.join(cls.accepted_options)}; unset it or pick another transfer",
            )
    return cls(**accepted)


def transfer_from_record(record: dict[str, Any]) -> Transfer:
    """Rebuild a transfer from ``t.options`` (as stored in a training record)."""
    record = dict(record)
    if "name" not in record:
        raise FewshotError("transfer record has no 'name'")
    return build_transfer(record.pop("name"), **record)


def load_transfer_bundle(
    path: str | Path,
    transfer: Transfer,
    names: tuple[str, ...] | None = None,
    device: str | torch.device = "cpu",
    with_state: bool = False,
):  # -> fewshot.checkpoint.Bundle
    """Load a training bundle whose networks were adapted by ``transfer`` (resume path).

    Builds each network from its stored ``init_kwargs``, applies the transfer (G / G_ema: generator
    side, D: discriminator side) and only then loads the weights strictly, so AdaFM keys match.
    The networks come back in train mode with their trainable parameters requiring grad.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..checkpoint import STATE_PREFIX, Bundle, load_state_strict, read_header
    from ..nets import build_network

    header = read_header(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise FewshotError(f"{path}: cannot read tensor data ({exc})") from None
    wanted = names or tuple(header.specs)
    networks = {}
    for name in wanted:
        if name not in header.specs:
            raise FewshotError(f"{path}: no network {name!r} in this bundle (has: {', '.join(header.specs)})")
        spec = header.specs[name]
        net = build_network(spec.class_name, spec.init_kwargs, max_elements=Path(path).stat().st_size)
        if name == "D":
            transfer.apply(None, net)
        elif name == "G":
            transfer.apply(net, None)
        else:
            transfer.apply_ema(net)
        prefix = name + "."
        load_state_strict(net, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                          f"{path}:{name}")
        networks[name] = net.to(device)
    state_tensors = (
        {k[len(STATE_PREFIX):]: v.to(device) for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
        if with_state else {}
    )
    return Bundle(networks, {n: header.specs[n] for n in wanted}, header.provenance, header.training, state_tensors)


__all__ = [
    "ADAFM_BETA",
    "ADAFM_GAMMA",
    "AdaFMSynthesisLayer",
    "AdaFMToRGBLayer",
    "HELP",
    "TRANSFERS",
    "Transfer",
    "build_transfer",
    "default_general",
    "load_transfer_bundle",
    "normalize_name",
    "official_freezed_count",
    "parse_general",
    "transfer_from_record",
]
