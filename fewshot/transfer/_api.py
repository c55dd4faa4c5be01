"""Building a transfer from flat options or a training record, and the transfer-aware resume loader.

The methods and their options live in :data:`fewshot.registry.transfers`; the trainer builds one with
``transfers.build(name, options, r1_fake=..., seed=...)``. The functions here serve the callers that hold the
options flat, one keyword per option for every method at once (an old config, a training record, scripts).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FewshotError
from ..registry import inert_values, transfers
from ._base import Transfer

if TYPE_CHECKING:
    import torch

# Options every method takes as keywords of its constructor (not fields of its options dataclass).
COMMON_OPTIONS = ("r1_fake", "seed")


def normalize_name(name: str) -> str:
    """A method name as a user may spell it (``AdaFM``, ``general_part``, ``Freeze_D``) -> its registered name."""
    return transfers.canonical(str(name).strip().lower().replace("_", "-"))


def build_transfer(name: str, **options: Any) -> Transfer:
    """Build a transfer method by name from flat options (``freeze_d=2``, ``general=(4, 2)``, ``r1_fake=True``,
    ``seed=0``, ...). An option left None is unset. An option the method does not have must be unset or at a value
    where it does nothing (``freeze_d=0``, ``specific="finetune"``, ``adafm_start_kimg=0``, ...); anything else is an
    error naming it, not silently ignored."""
    entry = transfers.get(normalize_name(name))
    own = {f.name for f in fields(entry.options)}
    declared: dict[str, list[Any]] = {}  # every method's option -> the values where it does nothing
    for other in transfers.entries():
        for f in fields(other.options):
            declared.setdefault(f.name, []).extend(inert_values(f))
    values: dict[str, Any] = {}
    for option, value in options.items():
        if option in COMMON_OPTIONS:
            continue
        if option in own:
            if value is not None:
                values[option] = value
        elif option not in declared:
            raise FewshotError(f"unknown transfer option {option!r}",
                               hint=f"known: {', '.join([*declared, *COMMON_OPTIONS])}")
        elif value is not None and value not in declared[option]:
            raise FewshotError(
                f"option {option}={value!r} has no effect with transfer {entry.name!r}",
                hint=f"{entry.name} uses: {', '.join([*own, *COMMON_OPTIONS])}; unset it or pick another transfer",
            )
    r1_fake, seed = options.get("r1_fake"), options.get("seed")
    return transfers.build(entry.name, entry.make_options(values), r1_fake=bool(r1_fake) if r1_fake is not None else False,
                           seed=int(seed) if seed is not None else 0)


def transfer_from_record(record: dict[str, Any]) -> Transfer:
    """Rebuild a transfer from ``t.options`` (as stored in a training record, old ones included)."""
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
