"""Frozen feature networks, one registry for all who read them: Reg-DGM, the metrics and DISP.

Each extractor is one entry of :data:`fewshot.registry.extractors`, registered by the file that builds it
(``resnet.py``: resnet18..152, ``clip.py``, ``facenet.py``, ``inception.py``, ``vgg16.py``). The entry's target
builds the network with its weights loaded, ``build(weights_file: Path | None) -> nn.Module``; the entry's
extra holds the facts (the fields of :class:`ExtractorSpec`):

* ``outputs``: the named feature outputs and their sizes, in the order the network returns them
  (``{"pool": 2048, "logits": 1008}`` for the FID Inception);
* ``weights_name``: the ``fewshot.weights`` entry of its weights file (None: a network without weights);
* ``preprocess``: how uint8 images become its input when it is used on images (metrics, DISP);
* ``min_input_size`` / ``fixed_input_size``: what Reg-DGM, which feeds it its own normalised tensors, must
  upsample or resize to;
* ``offers``: which output serves which use (``{"reg-dgm": "logits", "disp": "logits"}``); a metric names the
  output it reads itself (``needs=("inception-v3-fid/pool",)``);
* ``pinned``: an explicit weights file must be the published one (the metrics' numbers are comparable only
  with it); otherwise any file in the upstream layout is taken (a user's own fine-tuned ResNet);
* ``fuse_upsampling``: ``callable(network, factor) -> bool`` that takes a nearest ×factor upsampling into the
  network's first layer (torchvision ResNets).

Two ways to get one, both frozen (no grads, eval mode, BatchNorms folded, 3x3 convolutions by Winograd on the
CPU): :func:`build_extractor` gives the network itself (Reg-DGM differentiates through it);
:func:`load_extractor` gives a :class:`FeatureExtractor` that maps uint8 images to its named outputs (metrics,
DISP). This module imports no torch: the command line reads the registry when it is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FewshotError
from ..lazy import lazy_exports
from ..registry import Entry, extractors

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ._frozen import FeatureExtractor



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


def build_extractor(name: str, weights_path: str | Path | None = None,
                    device: torch.device | str = "cpu") -> tuple[nn.Module, ExtractorSpec]:
    """The network itself, frozen, on ``device`` (it maps the tensors its user prepares to its output)."""
    from ._frozen import frozen_network

    spec = extractor_spec(name)
    return frozen_network(spec, resolve_extractor_weights(spec, weights_path)).to(device), spec


def load_extractor(name: str, weights_path: str | Path | None = None, device: torch.device | str = "cpu",
                   reuse: bool = True) -> FeatureExtractor:
    """The extractor on images: uint8 ``[B, 3, H, W]`` -> ``{output: float32 [B, d]}`` on the CPU.

    With ``reuse`` it stays in memory for the next call with the same weights and device (one set per name)."""
    from ._frozen import image_extractor

    return image_extractor(extractor_spec(name), weights_path, device, reuse)


def require(module: str, install: str, what: str) -> Any:
    """Import an optional package an extractor needs, or one line that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] != module:
            # The package is there but one of its own imports is not (facenet-pytorch installed --no-deps).
            raise FewshotError(f"the {what} extractor's package {module!r} cannot import {exc.name!r}",
                               hint=f"pip install {exc.name.split('.')[0]}") from None
        raise FewshotError(f"the {what} extractor needs the {module!r} package", hint=f"install it: {install}") from None


_LAZY = {"FeatureExtractor": "_frozen", "load_strict": "_frozen", "read_state_dict": "_frozen",
         "weights_fingerprint": "_frozen"}

__getattr__ = lazy_exports(__name__, _LAZY)  # torch-backed names, imported when first asked for

__all__ = ["IMAGENET_224", "IMAGENET_MEAN", "IMAGENET_STD", "ExtractorSpec", "FeatureExtractor", "Preprocess",
           "build_extractor", "extractor_spec", "load_extractor", "load_strict", "offering", "read_state_dict", "register_extractor",
           "require", "resolve_extractor_weights", "weights_fingerprint"]
