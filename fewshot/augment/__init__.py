"""Augmentations applied before every discriminator call, chosen by name.

``build_augment("ada", pipeline="bgc", ada_kimg=100)`` returns an :class:`Augment`. Adding a method is adding a
file here (or in another package, through the ``fewshot.methods`` entry point) with an
``@augmentations.register("name", options=...)`` class: the registry finds it.
"""

from ..registry import augmentations
from .ada import PIPELINES, AdaAugment, AdaPipeline
from .apa import AdaApaAugment, ApaAugment
from .base import Augment, build_augment, make_augment
from .diffaug import DiffAugment
from .none import NoAugment
from .preview import preview_grid, save_grid

AUGMENTS = augmentations.view()  # name -> class, read from the registry

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
    "make_augment",
    "preview_grid",
    "save_grid",
]
