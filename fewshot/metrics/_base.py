"""What a metric is: a class registered in :data:`fewshot.registry.metrics`, with the features it reads.

    @dataclass(frozen=True)
    class MyOptions:
        k: int = option(3, "Neighbours.", check=lambda v: v >= 1, wanted=">= 1")

    @metrics.register("mine", options=MyOptions, needs=("vgg16/fc2",), lower_is_better=True, reports=("mine",))
    class Mine(Metric):
        label = "mine"

        def compute(self, real, fake, seed):
            return Measured({"mine": ...}, {"mine_k": self.options.k})

The entry's extra:

* ``needs``: the features it reads, each ``"<extractor>/<output>"`` (an extractor of
  :data:`fewshot.registry.extractors` and one of its outputs) or ``"images"``, the uint8 images themselves
  (a metric that needs no network);
* ``lower_is_better``: the direction of its headline value (``reports[0]``), e.g. for choosing the best snapshot;
* ``reports``: the result keys it writes, headline first (default: its name);
* ``needs_real`` (default True): False when it reads the generated images only (IS);
* ``keywords``: ``{compute_metrics keyword: option name}`` for the keywords ``compute_metrics`` kept from
  before the registry (``kid_subset_size``).

A metric that reads a frozen network itself (LPIPS) names it in its class attribute ``loads``, ``{key: loader}``
with ``loader(device, weights_paths) -> network`` (``_networks.py``); each key is loaded once, before anything is
generated, and ``compute`` finds it in ``self.networks[key]``. A picture a metric makes for people to look at
(the copies sheet) comes back in ``Measured.sheets``, uint8 ``[3, H, W]`` by name; ``compute_metrics`` writes it
where it is told (``sheets_dir``) and records the path in the protocol's ``sheets``.

``compute`` receives, per feature it needs, the real set's :class:`~fewshot.metrics._cache.RealFeatures` (all
features, or a fixed subset when the set is larger than the cache keeps, with the Gaussian fit over all of
them) and the generated images' features as one tensor. This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import FewshotError

if TYPE_CHECKING:
    import torch

    from ._cache import RealFeatures

IMAGES = "images"  # the feature that is the uint8 images [N, 3, R, R] themselves


def split_feature(feature: str) -> tuple[str, str] | None:
    """``"inception-v3-fid/pool"`` -> ``("inception-v3-fid", "pool")``; ``"images"`` -> None."""
    if feature == IMAGES:
        return None
    extractor, sep, output = feature.rpartition("/")
    if not sep or not extractor or not output:
        raise FewshotError(f"bad metric feature {feature!r}", hint=f"write <extractor>/<output>, or {IMAGES}")
    return extractor, output


@dataclass
class Measured:
    """A metric's numbers (flat result keys) and what the protocol record should say about how."""

    values: dict[str, Any]
    protocol: dict[str, Any] = field(default_factory=dict)
    sheets: dict[str, Any] = field(default_factory=dict)  # name -> uint8 [3, H, W] picture, written by the caller


class Metric:
    """Base of the registered metrics: built with its options, then ``check``ed, then ``compute``d."""

    label: str = ""  # how the summary and the notes name it ("FID"); default: the name in capitals
    # False for a metric that is exact from the Gaussian fit over all real images when the cache keeps a subset
    # of their features (FID); the others get a note that they read a subset.
    reads_real_features: bool = True
    # Frozen networks it reads besides the feature extractors: key -> loader(device, weights_paths).
    loads: ClassVar[Mapping[str, Callable[[Any, Mapping[str, Any] | None], Any]]] = {}

    def __init__(self, options: Any) -> None:
        self.options = options
        self.networks: dict[str, Any] = {}  # the loaded ``loads``, set by compute_metrics before ``compute``

    def check(self, n_fake: int) -> None:
        """Refuse a request this metric cannot answer, before any network loads or image is generated."""

    def compute(self, real: Mapping[str, RealFeatures], fake: Mapping[str, torch.Tensor], seed: int) -> Measured:
        raise NotImplementedError

    @classmethod
    def summary(cls, result: Mapping[str, Any], protocol: Mapping[str, Any], reports: tuple[str, ...]) -> list[str]:
        """Lines for ``fewshot metrics`` (indented two spaces)."""
        return [f"  {key:<10} {result[key]:.4f}" for key in reports if isinstance(result.get(key), (int, float))]
