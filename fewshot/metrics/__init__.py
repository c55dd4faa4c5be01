"""Evaluation metrics behind one call, :func:`compute_metrics`; each metric one file in this package.

``fid.py``, ``kid.py``, ``pr.py``, ``inception_score.py`` ("is"), ``swd.py``, ``intra_lpips.py`` and
``copies.py`` register themselves in :data:`fewshot.registry.metrics` with their options and the features they
read (``_base.py`` says how to add one); the feature extractors are :data:`fewshot.registry.extractors`'. The machinery:

- ``_scores``: the formulas on feature arrays (no networks);
- ``_cache``: real-set features on disk; ``_images``: real images from a folder or zip;
- ``_compute``: generation (or a folder of generated images) + extraction + metrics + the protocol record;
- ``_swd``: ProGAN's sliced Wasserstein distance; ``_lpips_sets``: LPIPS between image sets (intra-LPIPS,
  copies); ``_networks``: the networks metrics load themselves.

Importing this package imports no torch (the command line lists the metrics when it is built); the names
below load on first use.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "compute_metrics": "_compute", "compute_metrics_of_images": "_compute", "load_metric_extractors": "_compute", "parse_metrics": "_compute",
    "choose_metrics": "_compute", "generate_fakes": "_compute", "summary_lines": "_compute",
    "GaussianStats": "_scores", "fid_from_features": "_scores", "frechet_distance": "_scores",
    "gaussian_stats": "_scores", "inception_score_from_logits": "_scores", "kid_from_features": "_scores",
    "precision_recall_from_features": "_scores",
    "RealFeatures": "_cache",
    "load_real_images": "_images", "open_real_images": "_images",
    "IMAGES": "_base", "Measured": "_base", "Metric": "_base",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
