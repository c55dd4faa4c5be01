"""Real images for the metrics, at the generator's size: one uint8 [N, 3, R, R] tensor, or a stream
decoded batch by batch for a reference set too large to hold.

Decoding is the project's data loader (``fewshot.data``); this module adds the checks and notes the
metrics protocol needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..errors import FewshotError

if TYPE_CHECKING:
    from ..data import DataSummary, ImageStream


def load_real_images(source: str | Path, resolution: int, progress: bool = False) -> tuple[torch.Tensor, list[str]]:
    """Decode every image under ``source`` (folder or .zip) at ``resolution`` (centre crop, resize).

    Returns the images and human-readable notes (images resized, files skipped).
    """
    from ..data import load_images

    open_real_images(source, resolution)  # the same checks, nothing decoded
    image_set = load_images(source, resolution, progress=progress)
    check_real_images(image_set.images, str(source))
    return image_set.images, decoding_notes(image_set.summary)


def open_real_images(source: str | Path, resolution: int) -> ImageStream:
    """The real set as an :class:`~fewshot.data.ImageStream` at ``resolution``: decoded a batch at a time
    while its features are computed, so a reference set of any size (70k FFHQ) fits in memory."""
    from ..data import ImageStream

    source = Path(source).expanduser()
    if not source.exists():
        raise FewshotError(f"no such image folder or zip: {source}")
    if source.is_dir() and not any(p.is_file() for p in source.rglob("*")):
        raise FewshotError(f"{source} is an empty folder", hint="point --data at a folder or zip of images")
    stream = ImageStream(source, resolution)
    if stream.candidates < 2:  # known from the listing: fail before any extractor loads
        raise FewshotError(f"metrics need at least 2 real images, {stream.description} holds "
                           f"{stream.candidates} image file(s)")
    return stream


def decoding_notes(summary: DataSummary, what: str = "real images", size_of: str = "the generator's ") -> list[str]:
    """Human-readable notes on a decoded real set: images resized to the generator's size, files skipped."""
    notes = []
    resolution = summary.resolution
    sizes = {s for s in (summary.min_size, summary.max_size) if s}
    if sizes and sizes != {(resolution, resolution)}:
        lo, hi = summary.min_size, summary.max_size
        notes.append(f"{what} ({lo[0]}x{lo[1]} to {hi[0]}x{hi[1]}) resized to {size_of}"
                     f"{resolution}x{resolution} ({summary.crop} crop)")
    if summary.skipped:
        notes.append(f"{what}: skipped {len(summary.skipped)} unreadable file(s), e.g. {summary.skipped[0][0]}: "
                     f"{summary.skipped[0][1]}")
    return notes


def check_real_images(images: torch.Tensor, where: str = "real images") -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise FewshotError(f"{where}: expected a uint8 [N, 3, H, W] tensor, got {got}")
    if images.shape[1] != 3:
        raise FewshotError(f"{where}: expected 3 colour channels, got {images.shape[1]}")
    if images.shape[0] < 2:
        raise FewshotError(f"{where}: metrics need at least 2 real images, found {images.shape[0]}")


def resize_uint8(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize uint8 images to a square ``resolution`` (antialiased bilinear when shrinking), keeping uint8."""
    x = images.float()
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                      antialias=max(x.shape[-2:]) > resolution)
    return x.round().clamp(0, 255).to(torch.uint8)
