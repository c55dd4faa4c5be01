"""Inference-time rewrites of frozen networks (feature extractors for Reg-DGM, DISP and the metrics).

A frozen extractor never trains and always runs in eval mode, so its eval-mode BatchNorms are per-channel
affine maps: ``bn(conv(x))`` is one convolution with scaled filters and a bias. ``fold_batchnorms`` rewrites the
known conv → bn pairs that way (one pass over each activation less, forward and backward), and
``prepare_frozen`` also routes the plain 3x3 stride-1 convolutions through Winograd on the CPU
(``fewshot.cuda.winograd.use_winograd``). Both keep the function, up to float32 rounding.
"""

from __future__ import annotations

import torch
from torch import nn


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold eval-mode ``bn`` into ``conv`` in place (conv gains a bias); the caller then drops ``bn``."""
    with torch.no_grad():
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bias, requires_grad=False)


_RESNET_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))
# (module, class) -> the (conv, bn) attributes its forward applies back to back, read off each class's forward.
CONV_BN_PAIRS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("torchvision.models.resnet", "ResNet"): _RESNET_PAIRS[:1],
    ("torchvision.models.resnet", "BasicBlock"): _RESNET_PAIRS[:2],
    ("torchvision.models.resnet", "Bottleneck"): _RESNET_PAIRS,
    ("open_clip.modified_resnet", "ModifiedResNet"): _RESNET_PAIRS,  # CLIP RN50's three-conv stem
    ("open_clip.modified_resnet", "Bottleneck"): _RESNET_PAIRS,
    ("facenet_pytorch.models.inception_resnet_v1", "BasicConv2d"): (("conv", "bn"),),
    ("fewshot.extractors._inception_net", "ConvBN"): (("conv", "bn"),),  # the FID Inception-v3
}


def fold_batchnorms(model: nn.Module) -> int:
    """Fold the conv → BatchNorm pairs of a frozen extractor into the convolutions; returns how many.

    Only pairs known to run back to back are touched: the attributes listed in ``CONV_BN_PAIRS`` for
    torchvision's ResNets, open_clip's ModifiedResNet (CLIP RN50), facenet-pytorch's BasicConv2d and the FID
    Inception's ConvBN, and a ``Conv2d`` directly followed by a ``BatchNorm2d`` inside an ``nn.Sequential``
    (ResNet shortcuts). Each folded BatchNorm becomes an ``Identity``; a model with none of these is left as
    it is (0).
    """
    folded = 0
    for module in list(model.modules()):
        cls = type(module)
        for conv_name, bn_name in CONV_BN_PAIRS.get((cls.__module__, cls.__name__), ()):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                fold_batchnorm(conv, bn)
                setattr(module, bn_name, nn.Identity())
                folded += 1
        if isinstance(module, nn.Sequential):
            for index in range(len(module) - 1):
                conv, bn = module[index], module[index + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    fold_batchnorm(conv, bn)
                    module[index + 1] = nn.Identity()
                    folded += 1
    return folded


def prepare_frozen(model: nn.Module) -> nn.Module:
    """Fold ``model``'s BatchNorms and route its 3x3 convolutions through Winograd (in place); returns it.

    For a network already frozen (``requires_grad_(False).eval()``) whose weights are loaded: its ``state_dict``
    loses the folded ``bn`` entries, so weights must be loaded before, never after.
    """
    from .cuda.winograd import use_winograd

    fold_batchnorms(model)
    use_winograd(model)
    return model
