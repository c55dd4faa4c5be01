"""``general-part`` (GmDn, Zhao, Cong & Carin 2020): keep the low-level filters, retrain the rest.

The G highest-resolution synthesis blocks (each with its ToRGB) and the D discriminator blocks
nearest the input are taken from the base and frozen: the paper finds these low-level filters
transfer across domains. The generator's "specific part" (the lower-resolution synthesis blocks
and the mapping network) is fine-tuned (``specific="finetune"``) or rebuilt from a fresh, seeded
initialisation (``specific="reinit"``, the paper's setting). The rest of D is fine-tuned.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Transfer
from .options import default_general, parse_general  # noqa: F401  (re-export)
from .registry import register_transfer


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
