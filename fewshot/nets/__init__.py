"""StyleGAN2 networks compatible with NVIDIA's stylegan2-ada-pytorch checkpoints."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..registry import networks
from .discriminator import Discriminator
from .generator import Generator, MappingNetwork, SynthesisNetwork
from .stylegan3 import StyleGAN3Generator

# Class name -> class, for rebuilding a network from a bundle: read from the network registry, where each family
# (StyleGAN2 here; DISP's projection discriminator in fewshot.disp.nets) registers its classes.
NETWORK_CLASSES = networks.view()


class _OverBudget(Exception):
    pass


class _ElementBudget(TorchFunctionMode):
    """Refuses a tensor factory call (randn, zeros, ...) once the constructor has asked for more elements in
    all than the budget; every call counts at least one, so a loop over a claimed layer count ends too."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.left = budget

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _FACTORIES:
            size = kwargs.get("size", args[0] if args and isinstance(args[0], (list, tuple)) else args)
            numel = 1
            for dim in size if isinstance(size, (list, tuple)) else ():
                numel *= max(dim, 0) if isinstance(dim, int) else 1
            self.left -= max(numel, 1)
            if self.left < 0:
                raise _OverBudget
        return func(*args, **kwargs)


_FACTORIES = {torch.randn, torch.rand, torch.zeros, torch.ones, torch.empty, torch.full}  # what the nets call


def build_network(
    class_name: str, init_kwargs: dict[str, Any], init_args: Sequence[Any] = (), max_elements: int | None = None
) -> nn.Module:
    """Construct a network from its class name and constructor kwargs (as stored in a bundle).

    ``max_elements`` bounds the tensor elements the constructor may allocate: stored arguments can claim any
    size, and a network read from a file cannot hold more weights than the file has bytes.
    """
    from ..errors import FewshotError

    if class_name not in networks:
        raise FewshotError(f"unknown network class {class_name!r}; known: {', '.join(networks.names())}")
    try:
        with _ElementBudget(max_elements) if max_elements is not None else contextlib.nullcontext():
            return networks.get(class_name).target(*init_args, **init_kwargs)
    except _OverBudget:
        raise FewshotError(
            f"cannot build {class_name} from the stored arguments: they describe a network of more than "
            f"{max_elements:,} weights, more than its file can hold"
        ) from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError, RuntimeError) as exc:
        # Any of these from a constructor means arguments it cannot use (RuntimeError: torch refusing a size).
        detail = (str(exc).strip().splitlines() or [""])[0]  # torch lists every overload on a line of its own
        raise FewshotError(f"cannot build {class_name} from the stored arguments: {detail}") from None


def named_init_kwargs(class_name: str, init_args: Sequence[Any], init_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Fold positional constructor arguments into keyword arguments, so a bundle stores only names."""
    from ..errors import FewshotError

    if not init_args:
        return dict(init_kwargs)
    if class_name not in networks:
        raise FewshotError(f"unknown network class {class_name!r}; known: {', '.join(networks.names())}")
    try:
        bound = inspect.signature(networks.get(class_name).target).bind(*init_args, **init_kwargs)
    except TypeError as exc:
        raise FewshotError(f"cannot build {class_name} from the stored arguments: {exc}") from None
    return dict(bound.arguments)


__all__ = ["Discriminator", "Generator", "StyleGAN3Generator", "MappingNetwork", "SynthesisNetwork", "build_network", "named_init_kwargs", "NETWORK_CLASSES"]
