"""StyleGAN2 networks compatible with NVIDIA's stylegan2-ada-pytorch checkpoints."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from .discriminator import Discriminator
from .generator import Generator, MappingNetwork, SynthesisNetwork

NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    "Generator": Generator,
    "Discriminator": Discriminator,
}
from ..disp import nets as _disp_nets  # noqa: E402, F401 - adds ProjectionDiscriminator to NETWORK_CLASSES


def build_network(class_name: str, init_kwargs: dict[str, Any], init_args: Sequence[Any] = ()) -> nn.Module:
    """Construct a network from its class name and constructor kwargs (as stored in a bundle)."""
    from ..errors import FewshotError

    if class_name not in NETWORK_CLASSES:
        raise FewshotError(f"unknown network class {class_name!r}; known: {', '.join(NETWORK_CLASSES)}")
    try:
        return NETWORK_CLASSES[class_name](*init_args, **init_kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise FewshotError(f"cannot build {class_name} from the stored arguments: {exc}") from None


def named_init_kwargs(class_name: str, init_args: Sequence[Any], init_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Fold positional constructor arguments into keyword arguments, so a bundle stores only names."""
    from ..errors import FewshotError

    if not init_args:
        return dict(init_kwargs)
    if class_name not in NETWORK_CLASSES:
        raise FewshotError(f"unknown network class {class_name!r}; known: {', '.join(NETWORK_CLASSES)}")
    try:
        bound = inspect.signature(NETWORK_CLASSES[class_name]).bind(*init_args, **init_kwargs)
    except TypeError as exc:
        raise FewshotError(f"cannot build {class_name} from the stored arguments: {exc}") from None
    return dict(bound.arguments)


__all__ = ["Discriminator", "Generator", "MappingNetwork", "SynthesisNetwork", "build_network", "named_init_kwargs", "NETWORK_CLASSES"]
