"""Real-set feature statistics cached on disk, keyed by (data content, resolution, extractor weights).

A few-shot training set is tiny, so the features themselves are stored (KID and precision/recall need
them, and the Gaussian fit is cheap to redo). Above ``MAX_STORED_FEATURES`` images the file keeps the
exact mean/covariance of all of them plus a fixed-seed subset of the features, so it stays small.
Files are safetensors, written atomically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import FewshotError
from ._scores import GaussianStats, gaussian_stats

CACHE_FORMAT = "fewshot.metrics.real_features"
CACHE_VERSION = 1
MAX_STORED_FEATURES = 20000


@dataclass
class RealFeatures:
    """Features of the real set for one extractor output, and its Gaussian fit over all images.

    For the ``images`` feature (a metric that reads pixels) ``features`` are the uint8 images themselves and
    ``stats`` is None: nothing is fitted or cached."""

    features: torch.Tensor  # [n_stored, D] float32 (all images, or a subset above MAX_STORED_FEATURES)
    stats: GaussianStats | None  # over all images
    num_images: int
    from_cache: bool = False
    notes: list[str] = field(default_factory=list)  # what decoding the real set found (resized, skipped)


def data_hash(images: torch.Tensor) -> str:
    """sha256 over shape and pixel bytes of a uint8 image tensor: the same pictures give the same key."""
    from ..data import content_hash

    return content_hash(images)


def cache_path(cache_dir: Path, content_hash: str, resolution: int, extractor: str, fingerprint: str,
               output: str) -> Path:
    key = hashlib.sha256(f"{content_hash}|{resolution}|{extractor}|{fingerprint}|{output}".encode()).hexdigest()
    return Path(cache_dir) / f"{extractor}-{output}-{resolution}px-{key[:20]}.safetensors"


def make_real_features(features: torch.Tensor, seed: int = 0) -> RealFeatures:
    stats = gaussian_stats(features)
    stored = features
    if features.shape[0] > MAX_STORED_FEATURES:
        pick = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(seed))
        stored = features[pick[:MAX_STORED_FEATURES].sort().values]
    return RealFeatures(features=stored.float().contiguous(), stats=stats, num_images=int(features.shape[0]))


def save_real_features(path: Path, real: RealFeatures, meta: dict) -> None:
    from safetensors.torch import save

    from ..checkpoint import atomic_write_bytes

    tensors = {"features": real.features}
    if real.features.shape[0] != real.num_images:
        tensors["mu"] = torch.from_numpy(real.stats.mu)
        tensors["sigma"] = torch.from_numpy(real.stats.sigma)
    header = {"format": CACHE_FORMAT, "version": str(CACHE_VERSION), "num_images": str(real.num_images),
              "meta": json.dumps(meta)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(tensors, metadata=header))


def load_real_features(path: Path) -> RealFeatures | None:
    """The cached features, or None when absent or unreadable (a broken cache is recomputed, not fatal)."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            if header.get("format") != CACHE_FORMAT or header.get("version") != str(CACHE_VERSION):
                return None
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        num = int(header["num_images"])
        features = tensors["features"]
        if "mu" in tensors:
            stats = GaussianStats(mu=tensors["mu"].double().numpy(), sigma=tensors["sigma"].double().numpy(), num=num)
        else:
            stats = gaussian_stats(features)
        notes = json.loads(header.get("meta", "{}")).get("notes", [])
        return RealFeatures(features=features, stats=stats, num_images=num, from_cache=True,
                            notes=[str(n) for n in notes] if isinstance(notes, list) else [])
    except (OSError, KeyError, ValueError, RuntimeError, FewshotError):
        return None
