"""Torch-free facts about the transfer options: help texts, defaults, parsing.

The CLI imports this module at definition time (``fewshot --help`` must stay instant), so it must
not import torch or the networks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from ..errors import FewshotError

TRANSFER_NAMES = ("finetune", "freezed", "general-part", "adafm")


def official_freezed_count(n_blocks: int, architecture: str = "resnet") -> int:
    """The official ``--freezed`` layer count that freezes the ``n_blocks`` D blocks nearest the input.

    Official layer indices: the first block has fromrgb, conv0, conv1 (+ skip in resnet); later
    blocks conv0, conv1 (+ fromrgb in skip, + skip in resnet).
    """
    if n_blocks <= 0:
        return 0
    first, later = {"resnet": (4, 3), "skip": (3, 3), "orig": (3, 2)}[architecture]
    return first + later * (n_blocks - 1)


def default_general(resolution: int) -> tuple[int, int]:
    """Default (G blocks, D blocks) for a resolution.

    Our rule, derived from the paper's finding that the filters nearest the image transfer and the
    semantic (low-resolution) ones are target specific: every synthesis block above 16x16 is general
    (at least one), so b4, b8, b16 and the mapping network adapt; in D the two blocks nearest the input
    are general (one at 32 px, where D has only three blocks).
    32: G1D1, 64: G2D2, 128: G3D2, 256: G4D2, 512: G5D2, 1024: G6D2.
    """
    n_g_blocks = int(math.log2(resolution)) - 1
    n_d_blocks = int(math.log2(resolution)) - 2
    g = min(max(n_g_blocks - 3, 1), n_g_blocks)
    d = min(2 if resolution >= 64 else 1, n_d_blocks)
    return g, d


def parse_general(value: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``(g, d)``, ``[g, d]``, ``"g,d"`` or ``"GgDd"`` (e.g. ``"G4D2"``) -> ``(g, d)``; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        match = re.fullmatch(r"[Gg](\d+)[Dd](\d+)", text) or re.fullmatch(r"(\d+)\s*,\s*(\d+)", text)
        if not match:
            raise FewshotError(f"general must look like 'G,D' (e.g. '4,2') or 'G4D2', got {value!r}")
        return int(match.group(1)), int(match.group(2))
    try:
        g, d = value
    except (TypeError, ValueError):
        raise FewshotError(f"general must be two block counts (G, D), got {value!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in (g, d)):
        raise FewshotError(f"general must be two whole numbers >= 0 (G blocks, D blocks), got {value!r}")
    return g, d


# Values that mean "not set" for an option a method does not use.
NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "freeze_d": (None, 0),
    "general": (None,),
    "specific": (None, "finetune"),
    "adafm_start_kimg": (None, 0, 0.0),
    "adafm_torgb": (None, True),
    "r1_fake": (None, False),
    "seed": (None,),
}

# Help texts for the CLI options (the train command owns the options; the facts live here).
HELP: dict[str, str] = {
    "transfer": "Transfer method: finetune, freezed, general-part or adafm.",
    "freeze_d": (
        "FreezeD: number of discriminator blocks nearest the input to freeze (b{res} downwards). "
        "Official --freezed counts layers: N blocks = 3N+1 layers for the default resnet D "
        "(4 in the first block: fromrgb, conv0, conv1, skip; 3 per later block), 3N for skip, 2N+1 for orig."
    ),
    "general": (
        "General part as 'G,D' (or 'G4D2'): the G highest-resolution synthesis blocks (with ToRGB) and the "
        "D discriminator blocks nearest the input are frozen. Default per resolution: "
        + ", ".join(f"{r}px G{default_general(r)[0]}D{default_general(r)[1]}" for r in (32, 64, 128, 256, 512, 1024))
        + "."
    ),
    "specific": "Specific part (mapping + low-resolution synthesis blocks): 'finetune' from the base or 'reinit' "
    "(fresh seeded initialisation, as in the AdaFM paper).",
    "adafm_start_kimg": "AdaFM: keep gamma=1, beta=0 until this many kimg (the specific part trains first).",
    "r1_fake": "Gradient penalty on generated images as well as reals (the AdaFM paper's setting for ~25 images).",
}
