"""Training state <-> (JSON skeleton, named tensors), so a snapshot is a plain safetensors bundle.

Nested dicts/lists (optimizer state dicts, augmentation state, RNG states) are walked; every
tensor is stored under a dotted name and replaced in the JSON by ``{"__tensor__": name}``.
No pickle is involved anywhere, so a snapshot can be opened without running code.
"""

from __future__ import annotations

from typing import Any

import torch

TENSOR_TAG = "__tensor__"


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Return a JSON-able copy of ``obj`` with tensors moved into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu").contiguous().clone()
        return {TENSOR_TAG: prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_key(k), flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a training snapshot ({prefix})")


def _key(k: Any) -> Any:
    # Optimizer state dicts key parameters by int; keep the type so load_state_dict matches.
    if isinstance(k, (int, str)):
        return k
    raise TypeError(f"unsupported key type {type(k).__name__}")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(obj, dict):
        if TENSOR_TAG in obj:
            return tensors[obj[TENSOR_TAG]]
        if "__dict__" in obj:
            return {k: unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def capture_rng(data_generator: torch.Generator) -> dict[str, Any]:
    """Every random stream the loop draws from."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "data": data_generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    data_generator.set_state(state["data"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])
