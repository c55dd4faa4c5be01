"""Torch-free facts Reg-DGM's option file and its torch term share (kept apart so neither imports the other)."""

from __future__ import annotations

NAME = "reg-dgm"
ESTIMATORS = ("mean", "paired")


def upsample_factor(resolution: int, min_input_size: int) -> int:
    """The smallest power of two that brings ``resolution`` to at least ``min_input_size`` (1 when already there)."""
    factor = 1
    while resolution * factor < min_input_size:
        factor *= 2
    return factor
