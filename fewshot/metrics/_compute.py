"""``compute_metrics``: the registered metrics of a generator against a set of real images.

Fakes are generated in memory (fixed-seed latents, seeded noise) and go straight through the
feature extractors batch by batch; nothing is written to disk except the real-set features, which
are cached per (image content, resolution, extractor weights). Which metrics exist, what features each
reads and how it turns them into numbers is the registry's (:data:`fewshot.registry.metrics`): nothing here
knows a metric or an extractor by name.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ImageStream
from ..errors import FewshotError
from ..extractors import FeatureExtractor, extractor_spec, load_extractor
from ..registry import Entry, options_dict
from ..registry import metrics as metric_registry
from ._base import IMAGES, Metric, split_feature
from ._cache import RealFeatures, cache_path, data_hash, load_real_features, make_real_features, save_real_features
from ._images import check_real_images, decoding_notes, resize_uint8


def parse_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    """``"fid,kid"`` or ``["fid", "kid"]`` -> registered, de-duplicated names in the given order."""
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names: list[str] = []
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        name = metric_registry.get(name).name  # an unknown name: one error listing the registered ones
        if name not in names:
            names.append(name)
    if not names:
        raise FewshotError("no metric chosen", hint=f"choose from {', '.join(metric_registry.names())}")
    return tuple(names)


@dataclass
class ChosenMetric:
    """One requested metric: its entry, the instance built with its options, and what it reads."""

    entry: Entry
    metric: Metric
    needs: tuple[str, ...]
    needs_real: bool
    reports: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def label(self) -> str:
        return self.metric.label or self.name.upper()


def choose_metrics(metrics: str | Iterable[str], options: Mapping[str, Any] | None = None,
                   keywords: Mapping[str, Any] | None = None) -> list[ChosenMetric]:
    """The requested metrics, built with their options.

    ``options`` maps a metric name to its options (an instance or a dict of values; defaults otherwise);
    ``keywords`` are ``compute_metrics`` keywords that set options through an entry's ``keywords`` extra."""
    chosen = []
    for name in parse_metrics(metrics):
        entry = metric_registry.get(name)
        given = (options or {}).get(name)
        values = options_dict(given) if is_dataclass(given) else dict(given or {})
        for keyword, field_name in entry.extra.get("keywords", {}).items():
            if (keywords or {}).get(keyword) is not None:
                values[field_name] = keywords[keyword]
        needs = tuple(entry.extra.get("needs", ()))
        if not needs:
            raise FewshotError(f"metric {name!r} ({entry.module}) names no features it needs",
                               hint=f"register it with needs=('<extractor>/<output>', ...) or needs=('{IMAGES}',)")
        for feature in needs:
            split_feature(feature)  # a malformed feature name fails before anything loads
        chosen.append(ChosenMetric(entry, entry.target(entry.make_options(values)), needs,
                                   bool(entry.extra.get("needs_real", True)), tuple(entry.extra.get("reports", (name,)))))
    return chosen


def _extractor_outputs(chosen: Iterable[ChosenMetric], real_only: bool = False) -> dict[str, set[str]]:
    """Extractor name -> the outputs the chosen metrics read (of the real set only, with ``real_only``)."""
    wanted: dict[str, set[str]] = {}
    for item in chosen:
        if real_only and not item.needs_real:
            continue
        for feature in item.needs:
            split = split_feature(feature)
            if split is not None:
                wanted.setdefault(split[0], set()).add(split[1])
    return wanted


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
                   batch_size: int, progress: bool, want_images: bool = False) -> dict[str, RealFeatures]:
    """Features of the real set for each wanted extractor output, keyed ``"<extractor>/<output>"``: from the
    cache where it has them, else from one pass over the images that feeds every extractor still missing (a
    stream is decoded once). With ``want_images`` the images themselves come back too, as ``"images"``."""
    streamed = isinstance(real, ImageStream)
    found: dict[str, RealFeatures] = {}
    paths: dict[str, Path] = {}
    if cache_dir is not None and wanted:
        key = real.listing_key() if streamed else data_hash(real)
        for name, outputs in wanted.items():
            for output in outputs:
                feature = f"{name}/{output}"
                paths[feature] = cache_path(cache_dir, key, resolution, name, extractors[name].fingerprint, output)
                cached = load_real_features(paths[feature])
                if cached is not None:
                    found[feature] = cached
    missing = {name: {o for o in outputs if f"{name}/{o}" not in found} for name, outputs in wanted.items()}
    missing = {name: outputs for name, outputs in missing.items() if outputs}
    if want_images and not streamed:
        found[IMAGES] = RealFeatures(features=real, stats=None, num_images=int(real.shape[0]))
    collect_images = want_images and streamed
    if not missing and not collect_images:
        return found

    if streamed:
        batches: Iterable[torch.Tensor] = real.chunks(batch_size, progress=progress)
        total = -(-real.candidates // batch_size)
    else:
        batches, total = _batches(real, batch_size), -(-real.shape[0] // batch_size)
    parts: dict[str, list[torch.Tensor]] = {f"{e}/{o}": [] for e, outs in missing.items() for o in outs}
    image_parts: list[torch.Tensor] = []
    label = "real " + (", ".join(missing) or IMAGES)
    for batch in _progress(batches, total, label, progress and not streamed):
        if collect_images:
            image_parts.append(batch)
        for name, outputs in missing.items():
            feats = extractors[name](batch)
            for output in outputs:
                parts[f"{name}/{output}"].append(feats[output])
    notes = decoding_notes(real.summary) if streamed else []
    if collect_images:
        images = torch.cat(image_parts)
        found[IMAGES] = RealFeatures(features=images, stats=None, num_images=int(images.shape[0]), notes=notes)
    for feature, chunks in parts.items():
        features = make_real_features(torch.cat(chunks))
        features.notes = notes
        found[feature] = features
        if feature in paths:
            name, output = split_feature(feature)
            meta = {"num_images": features.num_images, "resolution": resolution, "extractor": name,
                    "weights_sha256": extractors[name].fingerprint, "output": output, "notes": list(notes)}
            try:
                save_real_features(paths[feature], features, meta)
            except OSError as exc:  # a read-only or full cache folder costs the next run time, not this result
                unsaved = f"real-set features not cached ({paths[feature].parent}: {exc.strerror or exc})"
                if unsaved not in notes:
                    notes.append(unsaved)
    return found


def load_metric_extractors(metrics: str | Iterable[str], device: str | torch.device = "cpu",
                           weights_paths: dict[str, str | Path] | None = None,
                           into: dict[str, FeatureExtractor] | None = None) -> dict[str, FeatureExtractor]:
    """The feature extractors ``metrics`` read, and the networks they load themselves (``Metric.loads``), loaded
    now (missing ones added to ``into``). A training run calls this before it trains, so absent weights stop it at
    the start rather than at its first evaluation."""
    extractors = into if into is not None else {}
    chosen = choose_metrics(metrics)
    for extractor_name, outputs in _extractor_outputs(chosen).items():
        if extractor_name in extractors:
            continue
        spec = extractor_spec(extractor_name)
        absent = sorted(outputs - set(spec.outputs))
        if absent:
            readers = [c.name for c in chosen if f"{extractor_name}/{absent[0]}" in c.needs]
            raise FewshotError(f"metric {readers[0]!r} reads {extractor_name}/{absent[0]}, but the {extractor_name} "
                               f"extractor has no output {absent[0]!r}", hint=f"its outputs: {', '.join(spec.outputs)}")
        extractors[extractor_name] = load_extractor(extractor_name, (weights_paths or {}).get(extractor_name), device)
    for item in chosen:  # the networks a metric reads itself (LPIPS), one per key
        for key, loader in item.metric.loads.items():
            if key not in extractors:
                extractors[key] = loader(device, weights_paths)
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
    kid_subset_size: int | None = None,
    kid_subsets: int | None = None,
    extractors: dict[str, FeatureExtractor] | None = None,
    use_cache: bool = True,
    notes: Iterable[str] = (),
    options: Mapping[str, Any] | None = None,
    sheets_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``generator`` against ``real_images``: uint8 [N, 3, H, W], or an :class:`~fewshot.data.ImageStream`
    at the generator's resolution for a set too large to hold (decoded once, while its features are computed).

    Returns each metric's flat numbers (``fid``; ``kid``, ``kid_std``; ``precision``, ``recall``; ``is``,
    ``is_std``; whatever a registered metric reports) and a ``protocol`` dict recording how they were measured.
    ``options`` maps metric names to their options (instances or dicts; the registry's defaults otherwise);
    ``kid_subset_size`` / ``kid_subsets`` set KID's, as before the registry. ``weights_paths`` maps extractor
    names (``inception-v3-fid``, ``vgg16``) to explicit weight files; ``extractors`` passes ready extractors and
    receives any that had to be loaded, so a trainer that passes the same dict again loads each once. Real
    images at another resolution than the generator's are resized to it, with a note. ``cache_dir`` defaults to
    ``<fewshot home>/metrics``. ``sheets_dir``: where the pictures a metric makes (the copies sheet) are written
    as ``<name>.png``; without it they are not written.
    """
    started = time.perf_counter()
    device = torch.device(device)
    fakes = _generated(generator, n_fake, batch_size, psi, seed, device)
    result = _measure(fakes, n_fake, int(generator.img_resolution), real_images, metrics, started=started,
                      batch_size=batch_size, device=device, cache_dir=cache_dir, weights_paths=weights_paths,
                      seed=seed, progress=progress, extractors=extractors, use_cache=use_cache, notes=notes,
                      options=options, sheets_dir=sheets_dir,
                      keywords={"kid_subset_size": kid_subset_size, "kid_subsets": kid_subsets})
    result["protocol"].update(psi=float(psi), noise_mode="random (seeded)")
    return result


def compute_metrics_of_images(fake_images: torch.Tensor | ImageStream, real_images: torch.Tensor | ImageStream,
                              metrics: str | Iterable[str] = ("fid", "kid"), **keywords: Any) -> dict[str, Any]:
    """:func:`compute_metrics` of a set of generated images made by any tool: uint8 ``[N, 3, R, R]`` or an
    :class:`~fewshot.data.ImageStream` (a folder or zip decoded at ``R`` px). Their size plays the generator's:
    real images at another are resized to it. ``keywords``: those of :func:`compute_metrics` but ``n_fake``,
    ``psi`` and the KID ones (``options`` sets KID's); ``seed`` seeds the metrics' own draws (KID subsets, SWD
    patches)."""
    started = time.perf_counter()
    if isinstance(fake_images, ImageStream):
        n_fake, resolution = fake_images.candidates, fake_images.resolution
        fakes: Iterable[torch.Tensor] = fake_images.chunks(keywords.get("batch_size", 64))
    else:
        check_real_images(fake_images, "generated images")
        n_fake, resolution = int(fake_images.shape[0]), int(fake_images.shape[-1])
        fakes = _batches(fake_images, keywords.get("batch_size", 64))
    keywords["device"] = torch.device(keywords.get("device", "cpu"))
    result = _measure(fakes, n_fake, resolution, real_images, metrics, started=started, **keywords)
    if isinstance(fake_images, ImageStream):  # what decoding them found (n_fake: the images decoded)
        result["protocol"]["notes"].extend(decoding_notes(fake_images.summary, "generated images", ""))
    return result


def _generated(generator: nn.Module, n_fake: int, batch_size: int, psi: float, seed: int,
               device: torch.device) -> Iterator[torch.Tensor]:
    """The generator's images for the metrics, in eval mode on ``device`` (the caller's network left as it was)."""
    gen = generator
    if next(generator.parameters()).device != device:
        gen = copy.deepcopy(generator).to(device)  # leave the caller's network where it is
    was_training = gen.training
    gen.eval()
    try:
        with torch.no_grad():
            yield from generate_fakes(gen, n_fake, batch_size, psi, seed, device)
    finally:
        gen.train(was_training)


def _measure(fakes: Iterable[torch.Tensor], n_fake: int, resolution: int, real_images: torch.Tensor | ImageStream,
             metrics: str | Iterable[str], *, started: float, batch_size: int = 64, device: torch.device,
             cache_dir: str | Path | None = None, weights_paths: dict[str, str | Path] | None = None, seed: int = 0,
             progress: bool = True, keywords: Mapping[str, Any] | None = None,
             extractors: dict[str, FeatureExtractor] | None = None, use_cache: bool = True,
             notes: Iterable[str] = (), options: Mapping[str, Any] | None = None,
             sheets_dir: str | Path | None = None) -> dict[str, Any]:
    """The metrics of generated image batches ``fakes`` (``n_fake`` of them, ``resolution`` px) against the reals."""
    chosen = choose_metrics(metrics, options, keywords)
    names = tuple(item.name for item in chosen)
    streamed = isinstance(real_images, ImageStream)
    if not streamed:
        check_real_images(real_images)
    if n_fake < 2:
        raise FewshotError(f"need at least 2 generated images, got n_fake={n_fake}")
    if batch_size < 1:
        raise FewshotError(f"batch size must be at least 1, got {batch_size}")
    for item in chosen:
        item.metric.check(n_fake)
    notes = list(notes)
    if streamed and real_images.resolution != resolution:
        raise FewshotError(f"the real images are decoded at {real_images.resolution} px, the generated ones are "
                           f"{resolution} px", hint="open the stream at the generated images' resolution")
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
    wanted = _extractor_outputs(chosen)
    load_metric_extractors(names, device, weights_paths, into=extractors)
    for item in chosen:
        item.metric.networks = {key: extractors[key] for key in item.metric.loads}
    fake_images_needed = any(IMAGES in item.needs for item in chosen)
    real_images_needed = any(IMAGES in item.needs and item.needs_real for item in chosen)

    real = _real_features(real_images, _extractor_outputs(chosen, real_only=True), extractors, resolution, cache_dir,
                          batch_size, progress, want_images=real_images_needed)
    for found in real.values():
        notes.extend(note for note in found.notes if note not in notes)
        if found.num_images < 2:
            raise FewshotError(f"metrics need at least 2 real images, found {found.num_images}")

    # One pass over the fakes feeds every extractor: the images are kept only for a metric that reads them.
    fake_parts: dict[str, list[torch.Tensor]] = {f"{e}/{o}": [] for e, outputs in wanted.items() for o in outputs}
    if fake_images_needed:
        fake_parts[IMAGES] = []
    counted = 0
    try:
        for images in _progress(fakes, -(-n_fake // batch_size), "fakes", progress):
            counted += int(images.shape[0])
            if fake_images_needed:
                fake_parts[IMAGES].append(images)
            for extractor_name, outputs in wanted.items():
                feats = extractors[extractor_name](images)
                for output in outputs:
                    fake_parts[f"{extractor_name}/{output}"].append(feats[output])
    finally:  # a failed pass puts the generator back in its mode (and closes the files of a stream) now
        getattr(fakes, "close", lambda: None)()
    fake = {feature: torch.cat(parts) for feature, parts in fake_parts.items()}

    result: dict[str, Any] = {}
    measured_protocol: dict[str, Any] = {}
    sheets: dict[str, str] = {}
    on_subsets = []
    for item in chosen:
        mine_real = {f: real[f] for f in item.needs if f in real}
        measured = item.metric.compute(mine_real, {f: fake[f] for f in item.needs}, seed)
        result.update(measured.values)
        measured_protocol.update(measured.protocol)
        sheets.update(_write_sheets(measured.sheets, sheets_dir))
        if item.metric.reads_real_features and any(r.features.shape[0] < r.num_images for r in mine_real.values()):
            on_subsets.append(item.label)

    n_real = next(iter(real.values())).num_images if real else (0 if streamed else int(real_images.shape[0]))
    if on_subsets:
        notes.append(f"{' / '.join(on_subsets)} use a fixed subset of the real features (set larger than the "
                     "cache keeps)")
    protocol: dict[str, Any] = {
        "metrics": list(names),
        "n_real": n_real,
        "n_fake": counted,
        "resolution": resolution,
        "seed": int(seed),
        "extractors": {
            e: {"weights_sha256": extractors[e].fingerprint, "resize": extractors[e].resize, "outputs": sorted(o)}
            for e, o in wanted.items()
        },
        "real_features_cached": {f: r.from_cache for f, r in real.items() if f != IMAGES},
        "seconds": round(time.perf_counter() - started, 3),
        "notes": notes,
        **measured_protocol,
    }
    if sheets:
        protocol["sheets"] = sheets
    result["protocol"] = protocol
    return result


def _write_sheets(sheets: Mapping[str, torch.Tensor], folder: str | Path | None) -> dict[str, str]:
    """Each picture as ``<folder>/<name>.png`` (none without a folder); name -> the path written."""
    if folder is None or not sheets:
        return {}
    from ..image_output import ensure_writable_dir, save_image

    folder = ensure_writable_dir(Path(folder))
    return {name: str(save_image(image, folder / f"{name}.png")) for name, image in sheets.items()}


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """What ``fewshot metrics`` prints for a result of :func:`compute_metrics`, one metric after the other."""
    protocol = result["protocol"]
    lines = []
    for name in protocol["metrics"]:
        entry = metric_registry.get(name)
        lines.extend(entry.target.summary(result, protocol, tuple(entry.extra.get("reports", (name,)))))
    return lines
