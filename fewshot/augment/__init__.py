"""Augmentations applied before every discriminator call, chosen by name.

``build_augment("ada", pipeline="bgc", ada_kimg=100)`` returns an :class:`Augment`; adding a
method is adding a file with a ``@register_augment("name")`` class and importing it below.
"""

from . import ada, apa, diffaug, none  # noqa: F401  (importing registers the methods)
from .ada import PIPELINES, AdaAugment, AdaPipeline
from .apa import AdaApaAugment, ApaAugment
from .base import AUGMENTS, Augment, build_augment, register_augment
from .diffaug import DiffAugment
from .none import NoAugment
from .preview import preview_grid, save_grid

__all__ = [
    "AUGMENTS",
    "PIPELINES",
    "AdaApaAugment",
    "AdaAugment",
    "AdaPipeline",
    "ApaAugment",
    "Augment",
    "DiffAugment",
    "NoAugment",
    "build_augment",
    "preview_grid",
    "register_augment",
    "save_grid",
]
