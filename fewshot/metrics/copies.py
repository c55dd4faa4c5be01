"""Copies: the share of generated images that are near-copies of a training image, and a sheet of the closest.

For each generated image, its nearest training image by LPIPS-VGG and by pixels (the root-mean-square difference
at the measured resolution, in 0..1 units). The yardstick is the training set itself: for each training image
the distance to its nearest *other* training image; the median of those is how far apart two distinct pictures of
this set typically are. A sample closer to a training image than ``fraction`` (default 0.5) of that median, by
either measure, is counted as a copy: it is at least twice as close to one training image as the typical
training image is to its closest neighbour, which a new picture of the domain is not and a memorised one (distance
~0, up to the generator's noise) is. The median rather than the mean or minimum, so that a pair of
near-duplicates in the training set does not move the threshold.

Reports ``copies`` (by either measure; lower is better, so it can keep ``best.safetensors``), ``copies_lpips``
and ``copies_pixel``; the protocol records the thresholds and the closest pairs, and the sheet ``copies`` (rows
of sample | its LPIPS-nearest training image, closest first) goes to the folder ``compute_metrics`` is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..registry import metrics, option
from ._base import IMAGES, Measured, Metric
from ._networks import LPIPS, load_lpips_vgg


@dataclass(frozen=True)
class CopiesOptions:
    fraction: float = option(0.5, "Threshold as a fraction of the training set's median nearest-neighbour "
                                  "distance (per measure).", check=lambda v: 0 < v <= 1, wanted="in (0, 1]")
    sheet_rows: int = option(8, "Closest pairs shown on the sheet (0: no sheet).", check=lambda v: v >= 0,
                             wanted=">= 0")


@metrics.register("copies", options=CopiesOptions, needs=(IMAGES,), lower_is_better=True,
                  reports=("copies", "copies_lpips", "copies_pixel"),
                  help="share of samples that are near-copies of a training image (LPIPS or pixels), with a sheet")
class Copies(Metric):
    label = "copies"
    loads = {LPIPS: load_lpips_vgg}

    def compute(self, real: Mapping[str, Any], fake: Mapping[str, Any], seed: int) -> Measured:
        from ._lpips_sets import copy_report, pairs_sheet

        fakes, reals = fake[IMAGES], real[IMAGES].features
        report = copy_report(self.networks[LPIPS], fakes, reals, self.options.fraction)
        lp, px = report["lpips"], report["pixel"]
        either = lp["flagged"] | px["flagged"]
        order = lp["distance"].argsort()[: self.options.sheet_rows]
        closest = [{"sample": int(i), "train": int(lp["index"][i]), "lpips": float(lp["distance"][i]),
                    "pixel_train": int(px["index"][i]), "pixel": float(px["distance"][i])} for i in order]
        protocol = {"copies_fraction": self.options.fraction, "copies_closest": closest,
                    **{f"copies_{m}_{k}": report[m][k] for m in ("lpips", "pixel") for k in ("threshold", "median_nn")}}
        sheets = {"copies": pairs_sheet(fakes, reals, order, lp["index"][order])} if len(order) else {}
        return Measured({"copies": float(either.double().mean()), "copies_lpips": float(lp["flagged"].double().mean()),
                         "copies_pixel": float(px["flagged"].double().mean())}, protocol, sheets=sheets)

    @classmethod
    def summary(cls, result: Mapping[str, Any], protocol: Mapping[str, Any], reports: tuple[str, ...]) -> list[str]:
        lines = [f"  copies     {result['copies']:.4f}  (LPIPS {result['copies_lpips']:.4f} under "
                 f"{protocol['copies_lpips_threshold']:.4f}, pixels {result['copies_pixel']:.4f} under "
                 f"{protocol['copies_pixel_threshold']:.4f}: {protocol['copies_fraction']:g} x the training set's "
                 f"median nearest-neighbour distance)"]
        sheet = protocol.get("sheets", {}).get("copies")
        if sheet:
            lines.append(f"  copies     sheet of the closest pairs (sample | nearest training image): {sheet}")
        return lines
