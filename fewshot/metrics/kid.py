"""KID: the unbiased MMD² between real and generated Inception pool features, cubic polynomial kernel."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..registry import metrics, option
from ._base import Measured, Metric

POOL = "inception-v3-fid/pool"


@dataclass(frozen=True)
class KIDOptions:
    subsets: int = option(100, "Random subsets the estimate averages.", check=lambda v: v >= 1, wanted=">= 1")
    subset_size: int = option(1000, "Largest subset (capped by the smaller of the two sets).",
                              check=lambda v: v >= 2, wanted=">= 2")


@metrics.register("kid", options=KIDOptions, needs=(POOL,), lower_is_better=True, reports=("kid", "kid_std"),
                  keywords={"kid_subset_size": "subset_size", "kid_subsets": "subsets"},
                  help="Kernel Inception distance, averaged over random subsets (unbiased at small N)")
class KID(Metric):
    label = "KID"

    def compute(self, real: Mapping[str, Any], fake: Mapping[str, Any], seed: int) -> Measured:
        from ._scores import kid_from_features

        kid = kid_from_features(real[POOL].features, fake[POOL], num_subsets=self.options.subsets,
                                max_subset_size=self.options.subset_size, seed=seed)
        return Measured({"kid": kid["mean"], "kid_std": kid["std"]},
                        {"kid_subset_size": kid["subset_size"], "kid_subsets": self.options.subsets})

    @classmethod
    def summary(cls, result: Mapping[str, Any], protocol: Mapping[str, Any], reports: tuple[str, ...]) -> list[str]:
        return [f"  KID        {result['kid']:.6f} ± {result['kid_std']:.6f}  "
                f"(subset {protocol['kid_subset_size']}, {protocol['kid_subsets']} subsets)"]
