"""SWD: ProGAN's multi-level sliced Wasserstein distance on Laplacian-pyramid 7x7 patches (no weights at all).

The number the ProGAN paper reports (x 10^3) per pyramid level, from the full resolution down to 16 px, and their
average (the headline, ``swd``; per level ``swd_<px>``). Lower is better; it reads pixels only, so it works
offline with nothing downloaded and can keep ``best.safetensors``. The computation is ``_swd.py``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..registry import metrics, option
from ._base import IMAGES, Measured, Metric


@dataclass(frozen=True)
class SWDOptions:
    patches: int = option(128, "7x7 neighbourhoods per image and pyramid level (ProGAN: 128).",
                          check=lambda v: v >= 1, wanted=">= 1")
    directions: int = option(128, "Random projections per repeat (ProGAN: 128, x 4 repeats = its 512).",
                             check=lambda v: v >= 1, wanted=">= 1")
    repeats: int = option(4, "Draws of the projections, averaged (ProGAN: 4).", check=lambda v: v >= 1,
                          wanted=">= 1")


@metrics.register("swd", options=SWDOptions, needs=(IMAGES,), lower_is_better=True, reports=("swd",),
                  help="sliced Wasserstein distance on Laplacian-pyramid patches (ProGAN, x1e3; needs no weights)")
class SlicedWasserstein(Metric):
    label = "SWD"

    def compute(self, real: Mapping[str, Any], fake: Mapping[str, Any], seed: int) -> Measured:
        from ._swd import swd

        opts = self.options
        per_level = swd(real[IMAGES].features, fake[IMAGES], patches=opts.patches, directions=opts.directions,
                        repeats=opts.repeats, seed=seed)
        values: dict[str, Any] = {f"swd_{res}": value for res, value in per_level.items()}
        values["swd"] = sum(per_level.values()) / len(per_level)
        return Measured(values, {"swd_levels": list(per_level), "swd_patches": opts.patches,
                                 "swd_projections": f"{opts.directions} x {opts.repeats} repeats"})

    @classmethod
    def summary(cls, result: Mapping[str, Any], protocol: Mapping[str, Any], reports: tuple[str, ...]) -> list[str]:
        levels = "  ".join(f"{res}px {result[f'swd_{res}']:.2f}" for res in protocol["swd_levels"])
        return [f"  SWD        {result['swd']:.4f}  (x1e3; {levels})"]
