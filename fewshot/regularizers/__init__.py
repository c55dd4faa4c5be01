"""Generator regularizers, registered by name: one file per method.

    reg = build_regularizer("reg-dgm", model="resnet18", lam=1.0, estimator="mean", real_images=uint8_images)
    loss_G = loss_G + reg.generator_loss(fake_images, real_images=reals if reg.requires_real_batch else None)

Adding a method is adding a file with a builder and one entry in ``REGULARIZERS``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import FewshotError
from .base import GeneratorRegularizer, NullRegularizer
from .reg_dgm import RegDGM, build_reg_dgm


def _build_none(**_: Any) -> GeneratorRegularizer:
    return NullRegularizer()


REGULARIZERS: dict[str, Callable[..., GeneratorRegularizer]] = {
    "none": _build_none,
    "reg-dgm": build_reg_dgm,
}


def build_regularizer(name: str, **kwargs: Any) -> GeneratorRegularizer:
    """Build the regularizer registered as ``name`` (``"reg-dgm"``, ``"none"``) with its keyword arguments."""
    try:
        builder = REGULARIZERS[name]
    except KeyError:
        raise FewshotError(f"unknown regularizer {name!r}", hint=f"known: {', '.join(sorted(REGULARIZERS))}") from None
    try:
        inspect.signature(builder).bind(**kwargs)
    except TypeError as exc:  # a misspelt option from a preset
        raise FewshotError(f"bad options for regularizer {name!r}: {exc}") from None
    return builder(**kwargs)


__all__ = ["REGULARIZERS", "GeneratorRegularizer", "NullRegularizer", "RegDGM", "build_reg_dgm", "build_regularizer"]
