"""StyleGAN2 networks compatible with NVIDIA's stylegan2-ada-pytorch checkpoints."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..registry import networks
from .discriminator import Discriminator
from .generator import Generator, MappingNetwork, SynthesisNetwork

# Class name -> class, for rebuilding a network from a bundle: read from the network registry, where each family
# (StyleGAN2 here; DISP's projection discriminator in fewshot.disp.nets) registers its classes.
NETWORK_CLASSES = networks.view()


def build_network(class_name: str, init_kwargs: dict[str, Any], init_args: Sequence[Any] = ()) -> nn.Module:
    """Construct a network from its class name and constructor kwargs (as stored in a bundle)."""
    from ..errors import FewshotError

    if class_name not in networks:
        raise FewshotError(f"unknown network class {class_name!r}; known: {', '.join(networks.names())}")
    try:
        return networks.get(class_name).target(*init_args, **init_kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise FewshotError(f"cannot build {class_name} from the stored arguments: {exc}") from None


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


__all__ = ["Discriminator", "Generator", "MappingNetwork", "SynthesisNetwork", "build_network", "named_init_kwargs", "NETWORK_CLASSES"]
