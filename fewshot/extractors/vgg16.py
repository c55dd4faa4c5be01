"""torchvision's VGG-16 (IMAGENET1K_V1): the 4096-d ``fc2`` features after their ReLU.

One output, two readers: precision/recall (Kynkäänniemi et al. call the layer fc2) and DISP's instance priors
(fc7 in the VGG paper's numbering, the paper's C). Images are resized to 224 px (bilinear, antialiased when
shrinking) with ImageNet normalisation. Weights: ``vgg16-397923af.pth``, pinned (the metrics' numbers are
comparable only with the published file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..registry import extractors
from . import IMAGENET_224

VGG16 = "vgg16"


@extractors.register(VGG16, help="torchvision VGG-16, fc2 after ReLU (4096-d; fc7 in the paper's numbering)",
                     weights_name=VGG16, outputs={"fc2": 4096}, preprocess=IMAGENET_224, offers={"disp": "fc2"},
                     pinned=True)
def build_vgg16(weights_file: Path | None) -> Any:
    import torch
    import torchvision

    from ._frozen import load_strict, read_state_dict
    from ._modules import VGG16Fc2

    # Built on the meta device and filled by assignment: a random init of 138 M parameters is wasted time.
    with torch.device("meta"):
        vgg = torchvision.models.vgg16(weights=None)
    load_strict(vgg, read_state_dict(weights_file, VGG16), "VGG-16", weights_file, assign=True)
    return VGG16Fc2(vgg.float())
