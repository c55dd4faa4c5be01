"""``diffaug``: Differentiable Augmentation (Zhao et al., NeurIPS 2020), policy ``color,translation,cutout``.

Every op is applied to every image on every D call (not adaptive): ``p`` is fixed at 1.0, which
the log reports, meaning "always on"; a ``p`` argument is accepted and ignored. Constants:

* ``color``: brightness + U(-0.5, 0.5); saturation x U(0, 2) about the per-pixel channel mean;
  contrast x U(0.5, 1.5) about the per-image mean.
* ``translation``: an integer shift of up to ``round(size / 8)`` pixels per axis, zero padding.
* ``cutout``: one square of ``round(size / 2)`` pixels set to zero, centred anywhere in the image
  (so near a border only its visible part is zeroed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import FewshotError
from ..registry import augmentations, option
from .base import Augment

POLICY_OPS = ("color", "translation", "cutout")


def _brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def _saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean


def _contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    batch, _, height, width = x.shape
    max_y, max_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    shift_y = torch.randint(-max_y, max_y + 1, (batch, 1, 1), device=x.device)
    shift_x = torch.randint(-max_x, max_x + 1, (batch, 1, 1), device=x.device)
    padded = F.pad(x, [max_x, max_x, max_y, max_y])  # zeros around, so shifted-in pixels are 0
    rows = torch.arange(height, device=x.device).view(1, -1, 1) + max_y - shift_y  # [B, H, 1]
    cols = torch.arange(width, device=x.device).view(1, 1, -1) + max_x - shift_x  # [B, 1, W]
    batch_index = torch.arange(batch, device=x.device).view(-1, 1, 1)
    # Advanced indexing gathers [B, H, W, C]; indexing is linear in x, so any order of grad works.
    return padded.permute(0, 2, 3, 1)[batch_index, rows, cols].permute(0, 3, 1, 2)


def cutout_mask(batch: int, height: int, width: int, device: torch.device, ratio: float = 0.5) -> torch.Tensor:
    """``[B, 1, H, W]`` of ones with one zeroed ``round(size * ratio)`` square per sample (clipped at borders)."""
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    # The centre may lie anywhere; odd sizes get one position fewer so the square stays symmetric.
    centre_y = torch.randint(0, height + (1 - size_y % 2), (batch, 1, 1), device=device)
    centre_x = torch.randint(0, width + (1 - size_x % 2), (batch, 1, 1), device=device)
    ys = torch.arange(height, device=device).view(1, -1, 1) - (centre_y - size_y // 2)
    xs = torch.arange(width, device=device).view(1, 1, -1) - (centre_x - size_x // 2)
    inside = (ys >= 0) & (ys < size_y) & (xs >= 0) & (xs < size_x)
    return (~inside).unsqueeze(1)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    batch, _, height, width = x.shape
    return x * cutout_mask(batch, height, width, x.device, ratio).to(x.dtype)


@dataclass(frozen=True)
class DiffAugmentOptions:
    policy: str = option("color,translation,cutout", "DiffAugment policy: a comma-separated subset of "
                         + ", ".join(POLICY_OPS) + ".")
    translation_ratio: float = option(0.125, "Largest shift, as a fraction of the image side.",
                                      check=lambda v: 0 <= v <= 1, wanted="in [0, 1]")
    cutout_ratio: float = option(0.5, "Side of the cut-out square, as a fraction of the image side.",
                                 check=lambda v: 0 <= v <= 1, wanted="in [0, 1]")


@augmentations.register("diffaug", options=DiffAugmentOptions, help="DiffAugment (Zhao et al. 2020), always on")
class DiffAugment(Augment):
    """DiffAugment with a comma-separated ``policy`` of ``color``, ``translation``, ``cutout``."""

    adaptive = False

    def __init__(
        self, p: float = 1.0, target: float = 0.6, ada_kimg: float = 500, interval: int = 4,
        policy: str = "color,translation,cutout", translation_ratio: float = 0.125, cutout_ratio: float = 0.5,
    ) -> None:
        super().__init__(p=1.0, target=target, ada_kimg=ada_kimg, interval=interval)
        ops = [op.strip() for op in policy.split(",") if op.strip()]
        bad = [op for op in ops if op not in POLICY_OPS]
        if bad or not ops:
            raise FewshotError(f"bad DiffAugment policy {policy!r}", hint=f"use a comma list of {', '.join(POLICY_OPS)}")
        if not 0 < translation_ratio < 1 or not 0 < cutout_ratio <= 1:
            raise FewshotError("DiffAugment ratios must be in (0, 1)")
        self.policy = ops
        self.translation_ratio = float(translation_ratio)
        self.cutout_ratio = float(cutout_ratio)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise FewshotError(f"augmentation expects NCHW images, got shape {tuple(images.shape)}")
        for op in self.policy:
            if op == "color":
                images = _contrast(_saturation(_brightness(images)))
            elif op == "translation":
                images = _translation(images, self.translation_ratio)
            else:
                images = _cutout(images, self.cutout_ratio)
        return images.contiguous()

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policy)}"
