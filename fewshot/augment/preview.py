"""``--aug-preview``: a PNG grid of augmented reals, to see what D will be shown."""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from ..errors import FewshotError
from .base import Augment


def save_grid(images: torch.Tensor, path: str | Path, columns: int | None = None, gap: int = 2) -> Path:
    """Write float images in [-1, 1] (or uint8) ``[N, C, H, W]`` as one PNG grid; returns the path."""
    from PIL import Image

    from ..checkpoint import atomic_write_bytes

    if images.ndim != 4 or images.shape[0] == 0 or images.shape[1] not in (1, 3):
        raise FewshotError(f"cannot write a grid of images shaped {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        images = (images.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    images = images.cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    count, _, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = torch.full((3, rows * (height + gap) - gap, columns * (width + gap) - gap), 255, dtype=torch.uint8)
    for i in range(count):
        top, left = (i // columns) * (height + gap), (i % columns) * (width + gap)
        canvas[:, top : top + height, left : left + width] = images[i]
    buffer = io.BytesIO()
    Image.fromarray(canvas.permute(1, 2, 0).numpy(), mode="RGB").save(buffer, format="PNG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


@torch.no_grad()
def preview_grid(
    augment: Augment, images_uint8: torch.Tensor, path: str | Path, n: int = 16, p: float | None = None,
) -> Path:
    """Augment the first ``n`` images once and write them as a grid (row-major) to ``path``.

    ``p`` temporarily overrides the augmentation strength (an adaptive method starts at 0, which
    would preview nothing); the module's own ``p`` is restored afterwards.
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4:
        raise FewshotError("preview_grid expects uint8 images [N, C, H, W]")
    if n < 1:
        raise FewshotError(f"preview needs n >= 1, got {n}")
    device = augment.p.device
    batch = images_uint8[:n].to(device).float() / 127.5 - 1
    saved_p = augment.p.clone()
    try:
        if p is not None:
            if not 0 <= p <= 1:
                raise FewshotError(f"preview p must be in [0, 1], got {p}")
            augment.p.fill_(p)
        out = augment(augment.replace_reals(batch))
    finally:
        augment.p.copy_(saved_p)
    return save_grid(out, path)
