"""IS, the Inception score: ``exp(E_x KL(p(y|x) || p(y)))`` over splits of the generated images' logits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import FewshotError
from ..registry import metrics, option
from ._base import Measured, Metric

LOGITS = "inception-v3-fid/logits"


@dataclass(frozen=True)
class ISOptions:
    splits: int = option(10, "Splits of the generated images; mean and std over them.",
                         check=lambda v: v >= 1, wanted=">= 1")


@metrics.register("is", options=ISOptions, needs=(LOGITS,), needs_real=False, lower_is_better=False,
                  reports=("is", "is_std"), help="Inception score of the generated images (no real set)")
class InceptionScore(Metric):
    label = "IS"

    def check(self, n_fake: int) -> None:
        splits = self.options.splits
        if n_fake < splits:
            raise FewshotError(f"IS uses {splits} splits: generate at least {splits} images (got {n_fake})")

    def compute(self, real: Mapping[str, Any], fake: Mapping[str, Any], seed: int) -> Measured:
        from ._scores import inception_score_from_logits

        score = inception_score_from_logits(fake[LOGITS], num_splits=self.options.splits)
        return Measured({"is": score["mean"], "is_std": score["std"]}, {"is_splits": self.options.splits})

    @classmethod
    def summary(cls, result: Mapping[str, Any], protocol: Mapping[str, Any], reports: tuple[str, ...]) -> list[str]:
        return [f"  IS         {result['is']:.4f} ± {result['is_std']:.4f}  ({protocol['is_splits']} splits)"]
