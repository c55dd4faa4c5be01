"""``compute_metrics``: FID / KID / precision-recall / IS of a generator against a set of real images.

Fakes are generated in memory (fixed-seed latents, seeded noise) and go straight through the
feature extractors batch by batch; nothing is written to disk except the real-set features, which
are cached per (image content, resolution, extractor weights).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ImageStream
from ..errors import FewshotError
from . import scores
from .cache import RealFeatures, cache_path, data_hash, load_real_features, make_real_features, save_real_features
from .extractors import INCEPTION, VGG16, FeatureExtractor, load_extractor
from .images import check_real_images, decoding_notes, resize_uint8

METRIC_NAMES = ("fid", "kid", "pr", "is")
# Which extractor output each metric reads, and whether it needs the real set.
_METRIC_FEATURES: dict[str, tuple[str, str, bool]] = {
    "fid": (INCEPTION, "pool", True),
    "kid": (INCEPTION, "pool", True),
    "pr": (VGG16, "fc2", True),
    "is": (INCEPTION, "logits", False),
}
KID_SUBSETS = 100
KID_MAX_SUBSET = 1000
PR_K = 3
IS_SPLITS = 10


def parse_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    """``"fid,kid"`` or ``["fid", "kid"]`` -> validated, de-duplicated names in the given order."""
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names: list[str] = []
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        if name not in METRIC_NAMES:
            raise FewshotError(f"unknown metric {name!r}", hint=f"choose from {', '.join(METRIC_NAMES)}")
        if name not in names:
            names.append(name)
    if not names:
        raise FewshotError("no metric chosen", hint=f"choose from {', '.join(METRIC_NAMES)}")
    return tuple(names)


def _progress(iterable: Iterable[Any], total: int, desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False, disable=None)  # None: off when not a TTY


def _batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, images.shape[0], batch_size):
        yield images[start:start + batch_size]


def generate_fakes(generator: nn.Module, n: int, batch_size: int, psi: float, seed: int,
                   device: torch.device) -> Iterator[torch.Tensor]:
    """uint8 [B, 3, R, R] batches on the CPU: z ~ N(0, I) from a seeded generator, labels uniform over
    classes for a conditional G, noise_mode='random' (as the official metrics) under a seeded RNG."""
    from ..synthesis import inference_kwargs, to_uint8

    z_rng = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            z = torch.randn(count, generator.z_dim, generator=z_rng).to(device)
            c = torch.zeros(count, generator.c_dim, device=device)
            if generator.c_dim:
                c[torch.arange(count), torch.randint(generator.c_dim, (count,), generator=z_rng)] = 1
            # On the CPU a batch takes the non-fused modulated conv, as `fewshot sample` does.
            fast = inference_kwargs(device)
            images = to_uint8(generator(z, c, truncation_psi=psi, noise_mode="random", **fast))
            if images.shape[1] == 1:  # grayscale G: the extractors see three equal channels
                images = images.repeat(1, 3, 1, 1)
            yield images


def _real_features(real: torch.Tensor | ImageStream, wanted: dict[str, set[str]],
                   extractors: dict[str, FeatureExtractor], resolution: int, cache_dir: Path | None,
                   batch_size: int, progress: bool) -> dict[tuple[str, str], RealFeatures]:
    """Features of the real set for each wanted (extractor, output): from the cache where it has them, else
    from one pass over the images that feeds every extractor still missing (a stream is decoded once)."""
    found: dict[tuple[str, str], RealFeatures] = {}
    paths: dict[tuple[str, str], Path] = {}
    if cache_dir is not None:
        key = real.listing_key() if isinstance(real, ImageStream) else data_hash(real)
        for name, outputs in wanted.items():
            for output in outputs:
                paths[(name, output)] = cache_path(cache_dir, key, resolution, name, extractors[name].fingerprint,
                                                   output)
                cached = load_real_features(paths[(name, output)])
                if cached is not None:
                    found[(name, output)] = cached
    missing = {name: {o for o in outputs if (name, o) not in found} for name, outputs in wanted.items()}
    missing = {name: outputs for name, outputs in missing.items() if outputs}
    if not missing:
        return found

    if isinstance(real, ImageStream):
        batches: Iterable[torch.Tensor] = real.chunks(batch_size, progress=progress)
        total = -(-real.candidates // batch_size)
    else:
        batches, total = _batches(real, batch_size), -(-real.shape[0] // batch_size)
    parts: dict[tuple[str, str], list[torch.Tensor]] = {(e, o): [] for e, outs in missing.items() for o in outs}
    label = "real " + ", ".join(missing)
    for batch in _progress(batches, total, label, progress and not isinstance(real, ImageStream)):
        for name, outputs in missing.items():
            feats = extractors[name](batch)
            for output in outputs:
                parts[(name, output)].append(feats[output])
    notes = decoding_notes(real.summary) if isinstance(real, ImageStream) else []
    for (name, output), chunks in parts.items():
        features = make_real_features(torch.cat(chunks))
        features.notes = notes
        found[(name, output)] = features
        if (name, output) in paths:
            meta = {"num_images": features.num_images, "resolution": resolution, "extractor": name,
                    "weights_sha256": extractors[name].fingerprint, "output": output, "notes": list(notes)}
            try:
                save_real_features(paths[(name, output)], features, meta)
            except OSError as exc:  # a read-only or full cache folder costs the next run time, not this result
                unsaved = f"real-set features not cached ({paths[(name, output)].parent}: {exc.strerror or exc})"
                if unsaved not in notes:
                    notes.append(unsaved)
    return found


def load_metric_extractors(metrics: str | Iterable[str], device: str | torch.device = "cpu",
                           weights_paths: dict[str, str | Path] | None = None,
                           into: dict[str, FeatureExtractor] | None = None) -> dict[str, FeatureExtractor]:
    """The feature extractors ``metrics`` read, loaded now (missing ones added to ``into``). A training run
    calls this before it trains, so absent weights stop it at the start rather than at its first evaluation."""
    extractors = into if into is not None else {}
    for name in parse_metrics(metrics):
        extractor_name = _METRIC_FEATURES[name][0]
        if extractor_name not in extractors:
            path = (weights_paths or {}).get(extractor_name)
            extractors[extractor_name] = load_extractor(extractor_name, path, device)
    return extractors


def compute_metrics(
    generator: nn.Module,
    real_images: torch.Tensor | ImageStream,
    metrics: str | Iterable[str] = ("fid", "kid"),
    n_fake: int = 5000,
    psi: float = 1.0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    weights_paths: dict[str, str | Path] | None = None,
    seed: int = 0,
    progress: bool = True,
    kid_subset_size: int = KID_MAX_SUBSET,
    kid_subsets: int = KID_SUBSETS,
    extractors: dict[str, FeatureExtractor] | None = None,
    use_cache: bool = True,
    notes: Iterable[str] = (),
) -> dict[str, Any]:
    """Evaluate ``generator`` against ``real_images``: uint8 [N, 3, H, W], or an :class:`~fewshot.data.ImageStream`
    at the generator's resolution for a set too large to hold (decoded once, while its features are computed).

    Returns flat numbers (``fid``; ``kid``, ``kid_std``; ``precision``, ``recall``; ``is``, ``is_std``)
    and a ``protocol`` dict recording how they were measured. ``weights_paths`` maps extractor names
    (``inception-v3-fid``, ``vgg16``) to explicit weight files; ``extractors`` passes ready extractors and
    receives any that had to be loaded, so a trainer that passes the same dict again loads each once. Real images at another resolution than the generator's
    are resized to it, with a note. ``cache_dir`` defaults to ``<fewshot home>/metrics``.
    """
    started = time.perf_counter()
    names = parse_metrics(metrics)
    streamed = isinstance(real_images, ImageStream)
    if not streamed:
        check_real_images(real_images)
    if n_fake < 2:
        raise FewshotError(f"need at least 2 generated images, got n_fake={n_fake}")
    if batch_size < 1:
        raise FewshotError(f"batch size must be at least 1, got {batch_size}")
    if "is" in names and n_fake < IS_SPLITS:
        raise FewshotError(f"IS uses {IS_SPLITS} splits: generate at least {IS_SPLITS} images (got {n_fake})")
    device = torch.device(device)
    notes = list(notes)
    resolution = int(generator.img_resolution)
    if streamed and real_images.resolution != resolution:
        raise FewshotError(f"the real images are decoded at {real_images.resolution} px, the generator makes "
                           f"{resolution} px", hint="open the stream at the generator's resolution")
    if not streamed and tuple(real_images.shape[-2:]) != (resolution, resolution):
        notes.append(f"real images {real_images.shape[-1]}x{real_images.shape[-2]} resized to the generator's "
                     f"{resolution}x{resolution}")
        real_images = resize_uint8(real_images, resolution)
    if use_cache and cache_dir is None:
        from ..settings import home_dir

        cache_dir = home_dir() / "metrics"
    cache_dir = Path(cache_dir) if use_cache and cache_dir is not None else None

    # One extractor per name, loaded once; the outputs each one must produce for fakes and reals.
    extractors = extractors if extractors is not None else {}
    wanted: dict[str, set[str]] = {}
    for name in names:
        extractor_name, output, _ = _METRIC_FEATURES[name]
        wanted.setdefault(extractor_name, set()).add(output)
    load_metric_extractors(names, device, weights_paths, into=extractors)

    needs_real: dict[str, set[str]] = {}
    for name in names:
        extractor_name, output, needs = _METRIC_FEATURES[name]
        if needs:
            needs_real.setdefault(extractor_name, set()).add(output)
    real = _real_features(real_images, needs_real, extractors, resolution, cache_dir, batch_size, progress)
    for found in real.values():
        notes.extend(note for note in found.notes if note not in notes)
        if found.num_images < 2:
            raise FewshotError(f"metrics need at least 2 real images, found {found.num_images}")

    # One pass over the fakes feeds every extractor: the images are never kept.
    fake_parts: dict[tuple[str, str], list[torch.Tensor]] = {
        (e, o): [] for e, outputs in wanted.items() for o in outputs}
    gen = generator
    if next(generator.parameters()).device != device:
        gen = copy.deepcopy(generator).to(device)  # leave the caller's network where it is
    was_training = gen.training
    gen.eval()
    try:
        with torch.no_grad():
            batches = generate_fakes(gen, n_fake, batch_size, psi, seed, device)
            for images in _progress(batches, -(-n_fake // batch_size), "fakes", progress):
                for extractor_name, outputs in wanted.items():
                    feats = extractors[extractor_name](images)
                    for output in outputs:
                        fake_parts[(extractor_name, output)].append(feats[output])
    finally:
        gen.train(was_training)
    fake = {key: torch.cat(parts) for key, parts in fake_parts.items()}

    result: dict[str, Any] = {}
    kid_size = None
    for name in names:
        extractor_name, output, _ = _METRIC_FEATURES[name]
        key = (extractor_name, output)
        if name == "fid":
            if real[key].features.shape[0] == real[key].num_images:  # all real features at hand
                result["fid"] = scores.fid_from_features(real[key].features, fake[key])
            else:
                result["fid"] = scores.frechet_distance(real[key].stats, scores.gaussian_stats(fake[key]))
        elif name == "kid":
            kid = scores.kid_from_features(real[key].features, fake[key], num_subsets=kid_subsets,
                                           max_subset_size=kid_subset_size, seed=seed)
            result["kid"], result["kid_std"], kid_size = kid["mean"], kid["std"], kid["subset_size"]
        elif name == "pr":
            pr = scores.precision_recall_from_features(real[key].features, fake[key], k=PR_K)
            result["precision"], result["recall"] = pr["precision"], pr["recall"]
        elif name == "is":
            inception_score = scores.inception_score_from_logits(fake[key], num_splits=IS_SPLITS)
            result["is"], result["is_std"] = inception_score["mean"], inception_score["std"]

    n_real = next(iter(real.values())).num_images if real else (0 if streamed else int(real_images.shape[0]))
    if any(r.features.shape[0] < r.num_images for r in real.values()):
        notes.append("KID / precision-recall use a fixed subset of the real features (set larger than the cache keeps)")
    protocol: dict[str, Any] = {
        "metrics": list(names),
        "n_real": n_real,
        "n_fake": int(n_fake),
        "resolution": resolution,
        "psi": float(psi),
        "seed": int(seed),
        "noise_mode": "random (seeded)",
        "extractors": {
            e: {"weights_sha256": extractors[e].fingerprint, "resize": extractors[e].resize, "outputs": sorted(o)}
            for e, o in wanted.items()
        },
        "real_features_cached": {f"{e}/{o}": r.from_cache for (e, o), r in real.items()},
        "seconds": round(time.perf_counter() - started, 3),
        "notes": notes,
    }
    if "fid" in names:
        protocol["fid_note"] = f"FID is biased at small N: compare only at the same N (here {n_real} real / {n_fake} fake)"
    if kid_size is not None:
        protocol["kid_subset_size"] = kid_size
        protocol["kid_subsets"] = kid_subsets
    if "pr" in names:
        protocol["pr_k"] = PR_K
    if "is" in names:
        protocol["is_splits"] = IS_SPLITS
    result["protocol"] = protocol
    return result
