"""Decoded training images and what loading them found (fewshot.data and fewshot.demo_data make them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class DataSummary:
    """What loading found: counts, the size range of the sources, what was skipped and why."""

    source: str
    resolution: int
    crop: str
    count: int = 0
    min_size: tuple[int, int] | None = None  # (width, height) of the smallest source by area
    max_size: tuple[int, int] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    ignored: list[str] = field(default_factory=list)  # files without an image suffix
    duplicates: list[list[str]] = field(default_factory=list)  # groups of identical images
    converted: dict[str, int] = field(default_factory=dict)  # source mode -> count (e.g. 'CMYK': 1)
    upscaled: int = 0  # images whose side the crop keeps is below the resolution: they are enlarged


@dataclass
class ImageSet:
    """Decoded training images: ``images`` is uint8 ``[N, 3, R, R]``, unflipped."""

    images: torch.Tensor
    names: list[str]
    summary: DataSummary
    mirror: bool = False
    labels: Any = None  # fewshot.labels.Labels of the images (their class indices), or None: unlabelled

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def describe(self) -> str:
        """A few human lines: what was loaded, from where, and anything a user should look at."""
        s = self.summary
        lines = [f"{s.count} images from {s.source} -> {s.resolution}x{s.resolution} ({s.crop} crop"
                 f"{', x-flips on' if self.mirror else ''})"]
        if s.min_size and s.max_size:
            lines.append(f"source sizes from {s.min_size[0]}x{s.min_size[1]} to {s.max_size[0]}x{s.max_size[1]}")
        if s.upscaled:
            lines.append(f"warning: {s.upscaled} of {s.count} images are smaller than {s.resolution} px and are "
                         f"upscaled (the smallest {s.min_size[0]}x{s.min_size[1]}): expect blur")
        if s.converted:
            lines.append("converted to RGB: " + ", ".join(f"{n} {mode}" for mode, n in sorted(s.converted.items())))
        if s.skipped:
            lines.append(f"skipped {len(s.skipped)} file(s):")
            lines.extend(f"  {name}: {reason}" for name, reason in s.skipped[:20])
            if len(s.skipped) > 20:
                lines.append(f"  ... and {len(s.skipped) - 20} more")
        if s.ignored:
            lines.append(f"ignored {len(s.ignored)} file(s) without an image suffix")
        if s.duplicates:
            lines.append(f"{len(s.duplicates)} group(s) of exact duplicates (kept):")
            lines.extend("  " + " = ".join(group) for group in s.duplicates[:10])
        if self.labels is not None:
            lines.append(self.labels.describe())
        return "\n".join(lines)
