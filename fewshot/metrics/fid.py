"""FID: the Fréchet distance between Gaussian fits of real and generated Inception pool features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..registry import metrics
from ._base import Measured, Metric

POOL = "inception-v3-fid/pool"


@metrics.register("fid", needs=(POOL,), lower_is_better=True, reports=("fid",),
                  help="Fréchet Inception distance (biased at small N: compare at equal N only)")
class FID(Metric):
    label = "FID"
    reads_real_features = False  # the Gaussian fit over all real images is exact

    def compute(self, real: Mapping[str, Any], fake: Mapping[str, Any], seed: int) -> Measured:
        from ._scores import fid_from_features, frechet_distance, gaussian_stats

        reals, fakes = real[POOL], fake[POOL]
        if reals.features.shape[0] == reals.num_images:  # all real features at hand: the cheaper exact route
            value = fid_from_features(reals.features, fakes)
        else:
            value = frechet_distance(reals.stats, gaussian_stats(fakes))
        note = (f"FID is biased at small N: compare only at the same N (here {reals.num_images} real / "
                f"{fakes.shape[0]} fake)")
        return Measured({"fid": value}, {"fid_note": note})

    @classmethod
    def summary(cls, result: Mapping[str, Any], protocol: Mapping[str, Any], reports: tuple[str, ...]) -> list[str]:
        return [f"  FID        {result['fid']:.4f}"]
