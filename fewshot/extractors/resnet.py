"""torchvision ResNets (resnet18 ... resnet152): 1000-d ImageNet logits, as the official Reg-DGM code uses them.

Weights: torchvision's ``state_dict`` files (``resnet18-f37072fd.pth`` ...). For Reg-DGM the stem can take the
nearest upsampling of small images into itself (``_fused_resnet``); for DISP the images are resized to 224 px
with ImageNet normalisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..registry import extractors
from . import IMAGENET_224


def fuse_stem(model: Any, factor: int) -> bool:
    """Nearest ×``factor`` upsampling, then the stem, as one stem on the small image (False: left as it is)."""
    from ._fused_resnet import fuse_resnet_stem

    return fuse_resnet_stem(model, factor)


def _builder(arch: str):  # noqa: ANN202 - returns the registry's builder
    def build(weights_file: Path | None) -> Any:
        import torchvision

        from ._frozen import load_strict, read_state_dict

        model = getattr(torchvision.models, arch)(weights=None)
        if weights_file is not None:
            load_strict(model, read_state_dict(weights_file), f"torchvision {arch}", weights_file)
        return model

    build.__doc__ = f"torchvision {arch}, ImageNet logits (1000-d)"
    return build


for _arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    extractors.register(_arch, help=f"torchvision {_arch}, ImageNet logits (1000-d)", weights_name=_arch,
                        outputs={"logits": 1000}, preprocess=IMAGENET_224,
                        offers={"reg-dgm": "logits", "disp": "logits"}, fuse_upsampling=fuse_stem)(_builder(_arch))
