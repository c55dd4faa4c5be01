"""``none``: no augmentation. D sees the images as they are; rt is still measured for the log."""

from __future__ import annotations

from ..registry import augmentations
from .base import Augment


@augmentations.register("none", help="no augmentation: D sees the images as they are")
class NoAugment(Augment):
    """Identity everywhere; ``p`` is 0 and never tuned (a ``p`` argument is accepted and ignored)."""

    adaptive = False

    def __init__(self, p: float = 0.0, target: float = 0.6, ada_kimg: float = 500, interval: int = 4) -> None:
        super().__init__(p=0.0, target=target, ada_kimg=ada_kimg, interval=interval)
