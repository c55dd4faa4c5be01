"""Intra-cluster LPIPS: CDC's diversity metric (Ojha et al., CVPR 2021) for sets too small for FID.

Each generated image joins the cluster of its nearest training image by LPIPS-VGG; within each cluster (at most
``cluster_size`` members drawn at random, the paper's 50) the mean LPIPS over all pairs; the metric is the mean
over the clusters that have a pair (``intra-lpips``, with their std ``intra-lpips_std``). Higher is more diverse:
a generator that collapses onto its training images scores near 0. The paper generates 1000 images. The trunk is
the weights registry's ``vgg16`` (offline without it: one line with the remedies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..registry import metrics, option
from ._base import IMAGES, Measured, Metric
from ._networks import LPIPS, load_lpips_vgg


@dataclass(frozen=True)
class IntraLPIPSOptions:
    cluster_size: int = option(50, "Members per cluster compared pairwise, drawn at random (the paper: 50).",
                               check=lambda v: v >= 2, wanted=">= 2")


@metrics.register("intra-lpips", options=IntraLPIPSOptions, needs=(IMAGES,), lower_is_better=False,
                  reports=("intra-lpips", "intra-lpips_std"),
                  help="CDC's diversity: mean pairwise LPIPS within clusters around the training images")
class IntraClusterLPIPS(Metric):
    label = "intra-LPIPS"
    loads = {LPIPS: load_lpips_vgg}

    def compute(self, real: Mapping[str, Any], fake: Mapping[str, Any], seed: int) -> Measured:
        from ._lpips_sets import intra_cluster_lpips

        result = intra_cluster_lpips(self.networks[LPIPS], fake[IMAGES], real[IMAGES].features,
                                     self.options.cluster_size, seed)
        protocol: dict[str, Any] = {"intra_lpips_cluster_sizes": result["sizes"],
                                    "intra_lpips_cluster_size": self.options.cluster_size,
                                    "intra_lpips_clusters_used": result["used"]}
        if result["used"] == 0:
            protocol["intra_lpips_note"] = "no cluster has two members: generate more images"
        return Measured({"intra-lpips": result["mean"], "intra-lpips_std": result["std"]}, protocol)

    @classmethod
    def summary(cls, result: Mapping[str, Any], protocol: Mapping[str, Any], reports: tuple[str, ...]) -> list[str]:
        sizes = protocol["intra_lpips_cluster_sizes"]
        return [f"  intra-LPIPS {result['intra-lpips']:.4f} ± {result['intra-lpips_std']:.4f}  "
                f"({protocol['intra_lpips_clusters_used']} of {len(sizes)} clusters with a pair; "
                f"members {min(sizes)}..{max(sizes)}, at most {protocol['intra_lpips_cluster_size']} compared)"]
