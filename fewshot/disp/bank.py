"""The prior bank: features of every training image (and its x-flip) from a frozen extractor.

DISP (Mangla et al.) encodes each training image once with a frozen pre-trained network C and
conditions the GAN on C(x). The bank holds those features, normalised, for all N images and, when
the run mirrors its data, their N x-flips (rows N..2N-1), plus the extractor name and the content
hash of the images. It is saved in the run folder (``prior_bank.safetensors``) and inside every
snapshot and exported bundle (state tensor ``disp.bank``), so sampling needs no extractor weights.

Normalisation (a documented choice): each feature vector is scaled to unit root-mean-square,
``f * sqrt(d) / ||f||``. The direction carries the instance; the length is the same for every
image, so the projection discriminator's term has a stable scale. G's mapping normalises its
embedded condition itself, so G is indifferent to the length of a prior (mixups need no rescaling).

The extractor is any entry of :data:`fewshot.registry.extractors` that offers ``disp`` features: ``vgg16``
(default; torchvision VGG-16 fc7 after ReLU, 4096-d, the paper's C), the ResNets and CLIP RN50, each on
uint8 images through its own preprocessing (224 px, ImageNet or CLIP normalisation).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import FewshotError

if TYPE_CHECKING:
    from ..extractors import ExtractorSpec

BANK_STATE_KEY = "disp.bank"
from ..train.run_dir import PRIOR_BANK_NAME as BANK_FILENAME  # noqa: E402 - the run folder's layout

NORMALIZATION = "unit-rms"  # f * sqrt(d) / ||f||

# A feature function maps uint8 images [B, 3, H, W] to float features [B, d].
FeatureFn = Callable[[torch.Tensor], torch.Tensor]
USE = "disp"  # what an extractor offers to be a prior extractor (fewshot.extractors)


def prior_extractor_spec(name: str) -> ExtractorSpec:
    """The registered extractor ``name``, if it offers DISP priors (``spec.dim("disp")`` is their size)."""
    from ..extractors import extractor_spec

    spec = extractor_spec(name)
    spec.output(USE)  # one error naming the extractors that do offer priors
    return spec


def load_feature_fn(name: str, weights_path: str | Path | None = None,
                    device: torch.device | str = "cpu") -> tuple[FeatureFn, ExtractorSpec]:
    """The extractor's prior features on uint8 images (weights resolved through the weights registry unless given).

    The network stays loaded for the next call (``fewshot.extractors.load_extractor(reuse=True)``)."""
    from ..extractors import load_extractor

    spec = prior_extractor_spec(name)
    extractor = load_extractor(name, weights_path, device)
    output = spec.output(USE)

    def features(images: torch.Tensor) -> torch.Tensor:
        return extractor(images)[output]

    return features, spec


# ---------------------------------------------------------------------------------------------------------------
# The bank


def normalize_features(features: torch.Tensor) -> torch.Tensor:
    """``f * sqrt(d) / ||f||`` per row (a zero row stays zero)."""
    features = features.float()
    norm = features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return features * (math.sqrt(features.shape[1]) / norm)


@dataclass
class PriorBank:
    """Normalised instance priors ``[M, d]``: rows 0..N-1 the images, N..2N-1 their x-flips when mirrored."""

    priors: torch.Tensor
    extractor: str
    data_hash: str
    num_images: int
    mirrored: bool
    normalization: str = NORMALIZATION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = self.num_images * (2 if self.mirrored else 1)
        if self.priors.ndim != 2 or self.priors.shape[0] != expected:
            raise FewshotError(f"prior bank holds {tuple(self.priors.shape)} priors, expected {expected} rows")

    @property
    def dim(self) -> int:
        return int(self.priors.shape[1])

    def __len__(self) -> int:
        return int(self.priors.shape[0])

    def to(self, device: torch.device | str) -> PriorBank:
        return PriorBank(self.priors.to(device), self.extractor, self.data_hash, self.num_images, self.mirrored,
                         self.normalization, dict(self.extra))

    def meta(self) -> dict[str, Any]:
        """JSON description (without the tensor) for ``training['disp']`` and file metadata."""
        return {"extractor": self.extractor, "data_hash": self.data_hash, "num_images": self.num_images,
                "mirrored": self.mirrored, "normalization": self.normalization, "dim": self.dim, **self.extra}

    @classmethod
    def from_state(cls, priors: torch.Tensor, meta: dict[str, Any]) -> PriorBank:
        try:
            extra = {k: v for k, v in meta.items()
                     if k not in ("extractor", "data_hash", "num_images", "mirrored", "normalization", "dim")}
            return cls(priors.float(), str(meta["extractor"]), str(meta["data_hash"]), int(meta["num_images"]),
                       bool(meta["mirrored"]), str(meta.get("normalization", NORMALIZATION)), extra)
        except KeyError as exc:
            raise FewshotError(f"prior bank metadata lacks {exc}") from None

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save

        from ..checkpoint import atomic_write_bytes

        data = save({"priors": self.priors.detach().cpu().contiguous()}, metadata={"disp": json.dumps(self.meta())})
        atomic_write_bytes(path, data)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> PriorBank:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {}).get("disp", "{}"))
                priors = fh.get_tensor("priors")
        except (SafetensorError, OSError, json.JSONDecodeError) as exc:
            raise FewshotError(f"{path}: not a prior bank ({exc})") from None
        return cls.from_state(priors, meta)

    def rows(self, indices: torch.Tensor, flips: torch.Tensor | None = None) -> torch.Tensor:
        """Priors of images ``indices`` (x-flipped where ``flips``): the row of a flipped image is N + index."""
        if flips is not None and self.mirrored:
            indices = indices + flips.long() * self.num_images
        return self.priors[indices.to(self.priors.device)]

    def sample_batch(self, imageset: Any, batch_size: int, generator: torch.Generator,
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``fewshot.data.sample_batch`` that also returns each image's prior.

        It draws from ``generator`` exactly as ``sample_batch`` does (indices, then flips), so a DISP run
        sees the same image sequence as a plain run with the same seed, and resume stays exact.
        """
        if batch_size < 1:
            raise FewshotError(f"batch size must be at least 1, got {batch_size}")
        count = len(imageset)
        if count != self.num_images:
            raise FewshotError(f"the prior bank describes {self.num_images} images but the data has {count}")
        indices = torch.randint(count, (batch_size,), generator=generator, device=generator.device)
        batch = imageset.images[indices.to(imageset.images.device)]
        if device is not None:
            batch = batch.to(device)
        batch = batch.to(torch.float32) / 127.5 - 1.0
        flip = torch.zeros(batch_size, dtype=torch.bool)
        if imageset.mirror:
            flip = torch.rand(batch_size, generator=generator, device=generator.device) < 0.5
            batch = torch.where(flip.to(batch.device).view(-1, 1, 1, 1), batch.flip(3), batch)
        priors = self.rows(indices.cpu(), flip.cpu() if imageset.mirror else None)
        return batch, priors.to(batch.device)


@torch.no_grad()
def extract_priors(images: torch.Tensor, feature_fn: FeatureFn, batch_size: int = 16,
                   progress: bool = False) -> torch.Tensor:
    """Normalised priors of uint8 images ``[N, 3, H, W]`` through ``feature_fn``."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise FewshotError(f"priors are extracted from uint8 [N, 3, H, W] images, got {images.dtype} "
                           f"{tuple(images.shape)}")
    starts = range(0, images.shape[0], batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="DISP priors", unit="batch", leave=False, disable=None)
    parts = [feature_fn(images[s:s + batch_size]).float().cpu() for s in starts]
    features = torch.cat(parts)
    if not torch.isfinite(features).all():
        raise FewshotError("the prior extractor returned non-finite features")
    return normalize_features(features)


def build_prior_bank(imageset: Any, extractor: str = "vgg16", weights_path: str | Path | None = None,
                     device: torch.device | str = "cpu", mirror: bool | None = None, batch_size: int = 16,
                     progress: bool = False) -> PriorBank:
    """Encode every image of ``imageset`` (an ``ImageSet`` or a uint8 tensor) and, when mirrored, its x-flip."""
    from ..data import content_hash

    images = imageset.images if hasattr(imageset, "images") else imageset
    if mirror is None:
        mirror = bool(getattr(imageset, "mirror", False))
    from ..hub import suggesting

    with suggesting("--set disp_weights=FILE"):  # the bank is built by a training run: its option for the file
        feature_fn, _ = load_feature_fn(extractor, weights_path, device)
    source = torch.cat([images, images.flip(3)]) if mirror else images
    priors = extract_priors(source, feature_fn, batch_size, progress)
    return PriorBank(priors, extractor, content_hash(images), int(images.shape[0]), bool(mirror))


def bank_for_run(run_dir: Path | None, imageset: Any, extractor: str, device: torch.device | str,
                 echo: Callable[[str], None] = print, progress: bool = False) -> PriorBank:
    """The run's bank: reused from ``run_dir/prior_bank.safetensors`` when it matches the data, else built."""
    from ..data import content_hash

    path = run_dir / BANK_FILENAME if run_dir is not None else None
    if path is not None and path.is_file():
        bank = PriorBank.load(path)
        if (bank.extractor == extractor and bank.data_hash == content_hash(imageset)
                and bank.mirrored == bool(imageset.mirror)):
            return bank
    echo(f"DISP: encoding {len(imageset)} images{' and their flips' if imageset.mirror else ''} with {extractor}")
    return build_prior_bank(imageset, extractor, device=device, progress=progress)


def read_bundle_bank(path: str | Path) -> PriorBank | None:
    """The prior bank stored in a bundle (None when it has none), read without building any network."""
    from safetensors import SafetensorError, safe_open

    from ..checkpoint import STATE_PREFIX, read_header

    header = read_header(path)
    meta = (header.training or {}).get("disp")
    key = STATE_PREFIX + BANK_STATE_KEY
    if not meta or key not in header.tensor_shapes:
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            priors = fh.get_tensor(key)
    except (SafetensorError, OSError) as exc:
        raise FewshotError(f"{path}: cannot read the prior bank ({exc})") from None
    return PriorBank.from_state(priors, meta)
