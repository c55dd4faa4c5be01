"""Evaluation metrics: FID, KID, precision/recall and IS behind one call, :func:`compute_metrics`.

- ``scores``: the formulas on feature arrays (no networks);
- ``inception``: the TF-ported FID Inception-v3; ``extractors``: Inception / VGG-16 feature extractors
  with weights from the weights registry;
- ``cache``: real-set features on disk; ``images``: real images from a folder or zip;
- ``compute``: generation + extraction + metrics + the protocol record.
"""

from __future__ import annotations

from .compute import METRIC_NAMES, compute_metrics, load_metric_extractors, parse_metrics
from .scores import (
    GaussianStats,
    fid_from_features,
    frechet_distance,
    gaussian_stats,
    inception_score_from_logits,
    kid_from_features,
    precision_recall_from_features,
)

__all__ = [
    "METRIC_NAMES",
    "GaussianStats",
    "compute_metrics",
    "fid_from_features",
    "frechet_distance",
    "gaussian_stats",
    "inception_score_from_logits",
    "kid_from_features",
    "load_metric_extractors",
    "parse_metrics",
    "precision_recall_from_features",
]
