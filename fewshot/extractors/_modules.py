"""Small torch modules the extractor files wrap their upstream networks with (kept out of those files so that
listing the registry imports no torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AvgPoolFlatten(nn.Module):
    """Replaces CLIP RN50's attention pooling: global average pooling to a 2048-d vector (official Reg-DGM)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class VGG16Fc2(nn.Module):
    """torchvision's VGG-16 up to its second fully connected layer, after the ReLU (4096-d).

    Kynkäänniemi et al. call it fc2 (precision/recall); in the VGG paper's numbering it is fc7, the penultimate
    layer DISP (Mangla et al.) conditions on. Dropout is absent in eval mode, so it is left out.
    """

    def __init__(self, vgg: nn.Module) -> None:
        super().__init__()
        self.net = vgg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.net.avgpool(self.net.features(x)), 1)
        classifier = self.net.classifier
        return F.relu(classifier[3](F.relu(classifier[0](x))))
