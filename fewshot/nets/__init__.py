"""StyleGAN2 networks compatible with NVIDIA's stylegan2-ada-pytorch checkpoints."""

from __future__ import annotations

from typing import Any

from torch import nn

from .discriminator import Discriminator
from .generator import Generator, MappingNetwork, SynthesisNetwork

NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    "Generator": Generator,
    "Discriminator": Discriminator,
}


def build_network(class_name: str, init_kwargs: dict[str, Any]) -> nn.Module:
    """Construct a network from its class name and constructor kwargs (as stored in a bundle)."""
    from ..errors import FewshotError

    if class_name not in NETWORK_CLASSES:
        raise FewshotError(f"unknown network class {class_name!r}; known: {', '.join(NETWORK_CLASSES)}")
    try:
        return NETWORK_CLASSES[class_name](**init_kwargs)
    except TypeError as exc:
        raise FewshotError(f"cannot build {class_name} from the stored arguments: {exc}") from None


__all__ = ["Discriminator", "Generator", "MappingNetwork", "SynthesisNetwork", "build_network", "NETWORK_CLASSES"]
