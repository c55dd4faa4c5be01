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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FewshotError
from ..lazy import lazy_exports

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ._frozen import FeatureExtractor



from ._spec import (  # noqa: E402 - the facts live apart from this package's lazy torch-backed names
    IMAGENET_224,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ExtractorSpec,
    Preprocess,
    extractor_spec,
    offering,
    register_extractor,
    resolve_extractor_weights,
)


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
