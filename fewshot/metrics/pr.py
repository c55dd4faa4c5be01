"""Improved precision and recall (Kynkäänniemi et al. 2019) on VGG-16 fc2 features, k-NN manifolds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..registry import metrics, option
from ._base import Measured, Metric

FC2 = "vgg16/fc2"


@dataclass(frozen=True)
class PROptions:
    k: int = option(3, "Neighbours: each point's manifold ball reaches its k-th nearest neighbour.",
                    check=lambda v: v >= 1, wanted=">= 1")


@metrics.register("pr", options=PROptions, needs=(FC2,), lower_is_better=False, reports=("precision", "recall"),
                  help="precision (fakes on the real manifold) and recall (reals on the fake manifold)")
class PrecisionRecall(Metric):
    label = "precision-recall"

    def compute(self, real: Mapping[str, Any], fake: Mapping[str, Any], seed: int) -> Measured:
        from ._scores import precision_recall_from_features

        pr = precision_recall_from_features(real[FC2].features, fake[FC2], k=self.options.k)
        return Measured({"precision": pr["precision"], "recall": pr["recall"]}, {"pr_k": self.options.k})

    @classmethod
    def summary(cls, result: Mapping[str, Any], protocol: Mapping[str, Any], reports: tuple[str, ...]) -> list[str]:
        return [f"  precision  {result['precision']:.4f}",
                f"  recall     {result['recall']:.4f}  (k={protocol['pr_k']})"]
