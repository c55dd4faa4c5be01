"""The facts of a feature extractor and the registry's lookups of them (torch-free; see fewshot.extractors)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import FewshotError
from ..registry import Entry, extractors


@dataclass(frozen=True)
class Preprocess:
    """How uint8 images ``[B, 3, H, W]`` become the network's input when it is used on images.

    ``x = images / 255``; resized to ``size``×``size`` by bilinear interpolation (``align_corners=False``,
    antialiased when shrinking if ``antialias``) unless already that size or ``size`` is None; then
    ``(x - mean) / std`` per channel when ``mean`` is given. ``note`` is how the metrics protocol records it.
    """

    size: int | None = None
    antialias: bool = True
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise FewshotError("Preprocess needs both mean and std, or neither")


@dataclass(frozen=True)
class ExtractorSpec:
    """The facts of one registered extractor (see the module doc); ``build(weights_file) -> nn.Module``.

    ``feature_dim`` alone is a shorthand for one output named ``features``; ``offers`` given as a tuple of
    uses means they all read the first output. After construction ``outputs`` and ``offers`` are dicts and
    ``feature_dim`` is the size of the first output.
    """

    name: str
    build: Callable[[Path | None], Any]
    feature_dim: int = 0
    weights_name: str | None = None
    min_input_size: int = 224
    fixed_input_size: int | None = None
    description: str = ""
    outputs: Mapping[str, int] = field(default_factory=dict)
    preprocess: Preprocess | None = None
    offers: Mapping[str, str] | tuple[str, ...] = ()
    pinned: bool = False
    fuse_upsampling: Callable[[Any, int], bool] | None = None

    def __post_init__(self) -> None:
        outputs = dict(self.outputs) or ({"features": self.feature_dim} if self.feature_dim else {})
        if not outputs or not all(isinstance(d, int) and d > 0 for d in outputs.values()):
            raise FewshotError(f"feature extractor {self.name!r} must name its outputs and their sizes",
                               hint="outputs={'features': 512} (or feature_dim=512)")
        first = next(iter(outputs))
        offers = dict(self.offers) if isinstance(self.offers, Mapping) else {use: first for use in self.offers}
        unknown = sorted(o for o in offers.values() if o not in outputs)
        if unknown:
            raise FewshotError(f"feature extractor {self.name!r} offers an output it does not have: {unknown[0]!r}",
                               hint=f"its outputs: {', '.join(outputs)}")
        object.__setattr__(self, "outputs", outputs)
        object.__setattr__(self, "offers", offers)
        object.__setattr__(self, "feature_dim", outputs[first])

    def output(self, use: str) -> str:
        """The output that serves ``use`` ("reg-dgm", "disp"), or a FewshotError naming who does offer it."""
        if use not in self.offers:
            raise FewshotError(f"feature extractor {self.name!r} offers no {use} features",
                               hint=f"extractors that do: {', '.join(offering(use)) or '(none)'}")
        return self.offers[use]

    def dim(self, use: str) -> int:
        return self.outputs[self.output(use)]

    def extra(self) -> dict[str, Any]:
        """The registry entry's extra: every fact but the name, the builder and the description."""
        skip = ("name", "build", "description", "feature_dim")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What torchvision's ImageNet classifiers were trained on (VGG-16, the ResNets).
IMAGENET_224 = Preprocess(224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                          note="bilinear (antialiased when shrinking) to 224x224, ImageNet mean/std normalisation")

_FACTS = tuple(f.name for f in fields(ExtractorSpec) if f.name not in ("name", "build", "description"))


def register_extractor(spec: ExtractorSpec, *, replace: bool = False) -> ExtractorSpec:
    """Add ``spec`` to the registry (the form for extractors built in code, e.g. test toys)."""
    if spec.name in extractors and not replace:
        raise FewshotError(f"feature extractor {spec.name!r} is already registered")
    extractors.add(Entry(extractors.family, spec.name, spec.build, help=spec.description,
                         module=getattr(spec.build, "__module__", ""), extra=spec.extra()), replace=True)
    return spec


def extractor_spec(name: str) -> ExtractorSpec:
    """The facts of the extractor registered as ``name`` (a FewshotError listing the known names if none)."""
    entry = extractors.get(name)
    unknown = sorted(set(entry.extra) - set(_FACTS))
    if unknown:
        raise FewshotError(f"feature extractor {entry.name!r} ({entry.module}) has unknown facts: {', '.join(unknown)}",
                           hint=f"known: {', '.join(_FACTS)}")
    return ExtractorSpec(entry.name, entry.target, description=entry.help, **entry.extra)


def offering(use: str) -> tuple[str, ...]:
    """The extractors that offer features for ``use`` ("reg-dgm", "disp"): a choices callable for options."""
    return tuple(name for name in extractors.names() if use in extractor_spec(name).offers)


def resolve_extractor_weights(spec: ExtractorSpec, weights_path: str | Path | None = None) -> Path | None:
    """The weights file for ``spec``: the explicit one when given (hash-checked only when ``spec.pinned``),
    else the one the weights registry resolves (caches, then a download unless offline)."""
    if spec.weights_name is None:
        return None
    from ..weights import resolve_weights

    if weights_path is not None and not spec.pinned:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FewshotError(f"weights file for {spec.name!r} not found: {path}")
        return path
    return Path(resolve_weights(spec.weights_name, path=weights_path))
