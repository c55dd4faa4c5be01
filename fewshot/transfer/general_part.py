"""``general-part`` (GmDn, Zhao, Cong & Carin 2020): keep the low-level filters, retrain the rest.

The G highest-resolution synthesis blocks (each with its ToRGB) and the D discriminator blocks
nearest the input are taken from the base and frozen: the paper finds these low-level filters
transfer across domains. The generator's "specific part" (the lower-resolution synthesis blocks
and the mapping network) is fine-tuned (``specific="finetune"``) or rebuilt from a fresh, seeded
initialisation (``specific="reinit"``, the paper's setting). The rest of D is fine-tuned.

``general`` is read by :func:`parse_general` (the one grammar of the option, wherever it is written) and, when
left unset, filled per resolution by :func:`default_general` when the transfer meets the networks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import FewshotError
from ..registry import option, transfers
from ._base import Transfer

if TYPE_CHECKING:
    from ..nets import Discriminator, Generator

_RESOLUTIONS = (32, 64, 128, 256, 512, 1024)


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


def parse_general(value: Any) -> tuple[int, int] | None:
    """The grammar of ``general``: ``"G,D"`` (``"4,2"``, ``"4x2"``), ``"GgDd"`` (``"G4D2"``), ``[g, d]`` or
    ``(g, d)`` -> ``(g, d)``; None, ``"none"`` and ``"null"`` -> None (the resolution's default)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "null"):
            return None
        match = re.fullmatch(r"[Gg](\d+)[Dd](\d+)", text) or re.fullmatch(r"(\d+)\s*[,xX]\s*(\d+)", text)
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


def default_general_units(sizes: list[int]) -> int:
    """The default G count for any network family, from its synthesis units' sizes (input to image): every unit
    working above 16 px is general, at least one. For StyleGAN2's blocks this is :func:`default_general`'s G; for
    StyleGAN3's layers (sized by twice their cutoff frequency) the same rule counts layers."""
    return min(max(sum(size > 16 for size in sizes), 1), len(sizes))


GENERAL_HELP = (
    "General part as 'G,D' (or 'G4D2'): the G highest-resolution synthesis blocks (with ToRGB) and the "
    "D discriminator blocks nearest the input are frozen. Default per resolution: "
    + ", ".join(f"{r}px G{default_general(r)[0]}D{default_general(r)[1]}" for r in _RESOLUTIONS)
    + ". On a StyleGAN3 generator G counts synthesis layers (the ToRGB layer goes with the last); by default "
    "those whose band needs more than 16 px (twice the cutoff: at 256 px L5..L13 of 14)."
)


@dataclass(frozen=True)
class GeneralPartOptions:
    general: tuple[int, int] | None = option(None, GENERAL_HELP, parse=parse_general)
    specific: str = option(
        "finetune",
        "Specific part (mapping + low-resolution synthesis blocks): 'finetune' from the base or 'reinit' "
        "(fresh seeded initialisation, as in the AdaFM paper).",
        choices=("finetune", "reinit"),
    )


@transfers.register("general-part", options=GeneralPartOptions, aliases=("gmdn", "generalpart"))
class GeneralPart(Transfer):
    """GmDn: freeze G's high-resolution blocks and D's input blocks; retrain G's specific part."""

    settings: GeneralPartOptions

    def __init__(self, options: GeneralPartOptions | None = None, *, r1_fake: bool = False, seed: int = 0) -> None:
        super().__init__(options, r1_fake=r1_fake, seed=seed)
        self.general_g, self.general_d = self.settings.general or (None, None)
        self.specific = self.settings.specific

    def g_general_count(self, G: Generator) -> int:
        if self.settings.general is None:
            from ._base import generator_units

            self.general_g = default_general_units([unit.size for unit in generator_units(G)])
        return super().g_general_count(G)

    def d_general_count(self, D: Discriminator) -> int:
        if self.settings.general is None:
            self.general_d = default_general(int(D.img_resolution))[1]
        return super().d_general_count(D)

    def header(self) -> str:
        specific = f"re-initialised (seed {self.seed})" if self.specific == "reinit" else "fine-tuned"
        if self.general_g is None:
            general = "general part frozen (the default for the resolution, not yet known)"
        else:
            default = " (default for this resolution)" if self.settings.general is None else ""
            general = f"general part G{self.general_g}D{self.general_d} frozen{default}"
        return f"transfer: {self.name}, {general}, specific part {specific}, R1 on fakes: {'yes' if self.r1_fake else 'no'}"
