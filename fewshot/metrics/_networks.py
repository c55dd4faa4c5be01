"""Loaders of the frozen networks metrics read themselves, besides the registered feature extractors.

A metric names them in its class attribute ``loads`` (``{key: loader}``); ``compute_metrics`` loads each key once
(into the ``extractors`` dict it is given, so a training run loads it before it trains and once for all its
evaluations) and hands it to the metric as ``self.networks[key]``. Torch-free at import: the registered metric
modules import this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

LPIPS = "lpips-vgg"  # the key of fewshot.perceptual's LPIPS-VGG (its trunk: the weights registry's vgg16)


def load_lpips_vgg(device: Any, weights_paths: Mapping[str, str | Path] | None = None) -> Any:
    """LPIPS-VGG on ``device``, its trunk from ``weights_paths["vgg16"]`` or the weights registry (offline
    without the file: one line naming the remedies)."""
    from ..perceptual import WEIGHTS_NAME, load_lpips

    return load_lpips((weights_paths or {}).get(WEIGHTS_NAME), device=device)
