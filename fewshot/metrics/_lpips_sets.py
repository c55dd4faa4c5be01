"""LPIPS between sets of images within a memory budget, and the two LPIPS metrics' computations.

:meth:`fewshot.perceptual.LPIPS.embed` turns N x M distances into N + M trunk passes and one product, but an
embedding is long (~0.5 M numbers per image at 64 px, ~8 M at 256 px), so the second set is embedded in chunks
that fit :data:`EMBEDDING_BUDGET` and the first streams past each chunk a batch at a time. With ten or a hundred
training images at 64-256 px the training set is one chunk and each sample is embedded once.

* :func:`intra_cluster_lpips`: CDC's diversity metric (Ojha et al., CVPR 2021), as their ``feat_cluster.py``
  computes it: each sample joins the cluster of its LPIPS-nearest training image; per cluster, at most
  ``cluster_size`` (50) members drawn at random, the mean LPIPS over their pairs; clusters with fewer than two
  members have no pairs (their NaN is left out), the metric is the mean over the other clusters.
* :func:`copy_report`: each sample's nearest training image by LPIPS and by pixels, against thresholds set by
  the training set's own nearest-neighbour distances (see ``copies.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..perceptual import LPIPS, embed_uint8, pairwise_lpips

EMBEDDING_BUDGET = 1 << 30  # bytes of float64 embeddings held at once
SHEET_CELL = 128  # smallest side of an image on the copies sheet


def lpips_distances(lpips: LPIPS, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 16,
                    budget: int = EMBEDDING_BUDGET) -> torch.Tensor:
    """``[N, M]`` LPIPS distances between uint8 image sets ``x [N, 3, R, R]`` and ``y [M, 3, R, R]``
    (``y=None``: ``x`` against itself, each image embedded once when the set fits the budget)."""
    same = y is None
    y = x if same else y
    if len(x) == 0 or len(y) == 0:
        return torch.zeros(len(x), len(y))
    first = embed_uint8(lpips, y[:1]).double()
    per_chunk = max(1, budget // (first.shape[1] * 8))
    out = torch.empty(len(x), len(y))
    for start in range(0, len(y), per_chunk):
        chunk = embed_uint8(lpips, y[start:start + per_chunk], batch_size).double()
        if same and per_chunk >= len(y):
            return pairwise_lpips(chunk, chunk)
        for row in range(0, len(x), batch_size):
            rows = embed_uint8(lpips, x[row:row + batch_size], batch_size)
            out[row:row + batch_size, start:start + per_chunk] = pairwise_lpips(rows, chunk)
    return out


def pixel_distances(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """``[N, M]`` root-mean-square pixel differences of uint8 sets, in units of the full range (0..1), so the
    number does not grow with the resolution."""
    a = x.flatten(1).double() / 255
    b = a if y is None else y.flatten(1).double() / 255
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None] - 2 * a @ b.T
    return (d.clamp_min(0) / a.shape[1]).sqrt().float()


def nearest_neighbour_distances(distances: torch.Tensor) -> torch.Tensor:
    """Each image's distance to its nearest *other* image, from a square distance matrix of one set."""
    d = distances.clone()
    d.fill_diagonal_(math.inf)
    return d.min(dim=1).values


def intra_cluster_lpips(lpips: LPIPS, fakes: torch.Tensor, reals: torch.Tensor, cluster_size: int, seed: int,
                        batch_size: int = 16) -> dict[str, Any]:
    """Mean and std over clusters of the mean pairwise LPIPS within each, and the clusters' sizes."""
    assign = lpips_distances(lpips, fakes, reals, batch_size).argmin(dim=1)
    rng = torch.Generator().manual_seed(seed)
    sizes, means = [], []
    for cluster in range(len(reals)):
        members = (assign == cluster).nonzero().flatten()
        sizes.append(int(members.numel()))
        if members.numel() < 2:
            continue  # no pairs: the paper's code gets NaN here and leaves it out of the mean
        members = members[torch.randperm(members.numel(), generator=rng)[:cluster_size]]
        d = lpips_distances(lpips, fakes[members], None, batch_size)
        upper = torch.triu_indices(len(members), len(members), offset=1)
        means.append(float(d[upper[0], upper[1]].double().mean()))
    if not means:
        return {"mean": math.nan, "std": math.nan, "sizes": sizes, "used": 0}
    values = torch.tensor(means, dtype=torch.float64)
    std = float(values.std()) if len(means) > 1 else 0.0  # torch.std is unbiased, as the paper's print
    return {"mean": float(values.mean()), "std": std, "sizes": sizes, "used": len(means)}


def copy_report(lpips: LPIPS, fakes: torch.Tensor, reals: torch.Tensor, fraction: float, batch_size: int = 16
                ) -> dict[str, Any]:
    """Per sample its nearest training image and distance by LPIPS and by pixels; the thresholds
    (``fraction`` x the median nearest-neighbour distance among the distinct training images, per measure)
    and which samples fall under them."""
    report: dict[str, Any] = {}
    for measure, to_train, within in (
        ("lpips", lpips_distances(lpips, fakes, reals, batch_size), lpips_distances(lpips, reals, None, batch_size)),
        ("pixel", pixel_distances(fakes, reals), pixel_distances(reals)),
    ):
        median_nn = float(nearest_neighbour_distances(within).median())
        nearest = to_train.min(dim=1)
        threshold = fraction * median_nn
        report[measure] = {"distance": nearest.values, "index": nearest.indices, "threshold": threshold,
                           "median_nn": median_nn, "flagged": nearest.values < threshold}
    return report


def pairs_sheet(fakes: torch.Tensor, reals: torch.Tensor, samples: torch.Tensor, nearest: torch.Tensor
                ) -> torch.Tensor:
    """uint8 ``[3, H, W]``: one row per pair, sample on the left, its nearest training image on the right, 2 px
    apart; images under 128 px enlarged by an integer factor (nearest) so that a 32 px pair can be judged."""
    scale = max(1, SHEET_CELL // fakes.shape[-1])
    size, gap = fakes.shape[-1] * scale, 2
    rows = len(samples)
    sheet = torch.full((3, rows * size + (rows - 1) * gap, 2 * size + gap), 255, dtype=torch.uint8)
    for row, (s, t) in enumerate(zip(samples.tolist(), nearest.tolist(), strict=True)):
        top = row * (size + gap)
        for left, image in ((0, fakes[s]), (size + gap, reals[t])):
            sheet[:, top:top + size, left:left + size] = image.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return sheet
