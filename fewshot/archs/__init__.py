"""Network families (StyleGAN2, StyleGAN3-T, StyleGAN3-R): one module each, registered in
:data:`fewshot.registry.architectures` (:mod:`fewshot.archs._base` says what a family provides).

A run's family follows its base checkpoint's generator; from scratch the config's ``arch`` picks it.
"""

from __future__ import annotations

from ._base import (
    DEFAULT_ARCH,
    Architecture,
    SynthesisUnit,
    TrainingDefaults,
    architecture,
    architecture_for_class,
    architecture_of,
)

__all__ = ["DEFAULT_ARCH", "Architecture", "SynthesisUnit", "TrainingDefaults", "architecture",
           "architecture_for_class", "architecture_of"]
