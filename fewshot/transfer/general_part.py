"""``general-part`` (GmDn, Zhao, Cong & Carin 2020): keep the low-level filters, retrain the rest.

The G highest-resolution synthesis blocks (each with its ToRGB) and the D discriminator blocks
nearest the input are taken from the base and frozen: the paper finds these low-level filters
transfer across domains. The generator's "specific part" (the lower-resolution synthesis blocks
and the mapping network) is fine-tuned (``specific="finetune"``) or rebuilt from a fresh, seeded
initialisation (``specific="reinit"``, the paper's setting). The rest of D is fine-tuned.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ..errors import FewshotError
from .base import Transfer
from .registry import register_transfer


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


@register_transfer
class GeneralPart(Transfer):
    name = "general-part"
    summary = "GmDn: freeze G's high-resolution blocks and D's input blocks; retrain G's specific part."
    accepted_options = ("general", "specific", "r1_fake", "seed")

    def __init__(
        self,
        *,
        general: str | Sequence[int] | None = None,
        specific: str = "finetune",
        r1_fake: bool = False,
        seed: int = 0,
        **adafm_options: object,
    ) -> None:
        parsed = parse_general(general)
        self._general_given = parsed
        g, d = parsed if parsed is not None else (None, None)
        super().__init__(general_g=g, general_d=d or 0, specific=specific, r1_fake=r1_fake, seed=seed,
                         **adafm_options)

    def resolve_defaults(self, resolution: int) -> None:
        """Fill in the per-resolution default when no ``general`` was given (done at apply/describe time)."""
        if self._general_given is None:
            self.general_g, self.general_d = default_general(resolution)

    def apply(self, G, D=None) -> None:  # type: ignore[no-untyped-def]
        self._resolve_from(G, D)
        super().apply(G, D)

    def apply_ema(self, G_ema) -> None:  # type: ignore[no-untyped-def]
        self._resolve_from(G_ema, None)
        super().apply_ema(G_ema)

    def describe(self, G, D=None) -> str:  # type: ignore[no-untyped-def]
        self._resolve_from(G, D)
        return super().describe(G, D)

    def _resolve_from(self, G, D) -> None:  # type: ignore[no-untyped-def]
        net = G if G is not None else D
        if net is not None and hasattr(net, "img_resolution"):
            self.resolve_defaults(int(net.img_resolution))

    @property
    def options(self) -> dict:
        general = list(self._general_given) if self._general_given is not None else None
        return {**super().options, "general": general, "specific": self.specific}

    def header(self) -> str:
        g = "default" if self.general_g is None else self.general_g
        specific = f"re-initialised (seed {self.seed})" if self.specific == "reinit" else "fine-tuned"
        return (
            f"transfer: {self.name}, general part G{g}D{self.general_d} frozen"
            f"{' (default for this resolution)' if self._general_given is None else ''}, "
            f"specific part {specific}, "
            f"R1 on fakes: {'yes' if self.r1_fake else 'no'}"
        )
