"""Panning and rotating StyleGAN3's output through its input transform (``--translate`` / ``--rotate``).

StyleGAN3 synthesises from Fourier features of a continuous grid; the 3x3 buffer
``G.synthesis.input.transform`` is the inverse of a rotation + translation applied to that grid, so
setting it moves the picture: gen_images.py's ``--translate TX,TY --rotate DEG`` set it to
``inv([[cos, sin, tx], [-sin, cos, ty], [0, 0, 1]])``, and so does :func:`transformed_input`. Translations
are in image widths (the last layer samples ``img_resolution`` pixels per unit of the grid), angles in
degrees. A video pans or rotates continuously over its frames (:func:`frame_transforms`); the frames
render as one batch, each sample with its own transform.

StyleGAN2 has no such input: asking it for a transform is a :class:`FewshotError`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from .errors import FewshotError
from .nets.stylegan3 import input_transform, is_stylegan3

if TYPE_CHECKING:
    from torch import nn

Vec2 = tuple[float, float]


def check_transformable(G: nn.Module, translate: Vec2 | None, rotate: float | None) -> bool:
    """Whether a transform was asked for (an error for a generator without StyleGAN3's Fourier input)."""
    asked = (translate is not None and tuple(translate) != (0.0, 0.0)) or (rotate is not None and rotate != 0)
    for name, value in (("--translate", translate), ("--rotate", rotate)):
        values = () if value is None else (value if isinstance(value, tuple) else (value,))
        if not all(math.isfinite(v) for v in values):
            raise FewshotError(f"{name} must be finite, got {value}")
    if asked and not is_stylegan3(G):
        raise FewshotError(
            f"--translate/--rotate need a StyleGAN3 generator (its Fourier input can be moved); this checkpoint "
            f"holds a {type(G).__name__} (StyleGAN2), whose input is a fixed 4x4 constant"
        )
    return asked


@contextlib.contextmanager
def transformed_input(G: nn.Module, translate: Vec2 | None = None, rotate: float | None = None) -> Iterator[None]:
    """Render with the output moved by ``translate`` and turned by ``rotate`` degrees; the generator's own
    transform comes back afterwards. Nothing asked: nothing changes (any generator)."""
    if not check_transformable(G, translate, rotate):
        yield
        return
    buffer = G.synthesis.input.transform
    saved = buffer.detach().clone()
    with torch.no_grad():
        buffer.copy_(input_transform(tuple(translate or (0.0, 0.0)), float(rotate or 0.0)))
    try:
        yield
    finally:
        with torch.no_grad():
            buffer.copy_(saved)


def frame_transforms(num_frames: int, translate: Vec2 | None, rotate: float | None, loop: bool = False) -> torch.Tensor:
    """``[num_frames, 3, 3]`` input transforms of a continuous pan/rotation from none to the whole of ``translate``
    and ``rotate`` (the last frame), or with ``loop`` stopping one step short, so that a full turn (``--rotate
    360``) repeats without a doubled frame."""
    if num_frames < 1:
        raise FewshotError(f"a video needs at least one frame, got {num_frames}")
    tx, ty = translate or (0.0, 0.0)
    angle = float(rotate or 0.0)
    steps = num_frames if loop else max(num_frames - 1, 1)
    return torch.stack([input_transform((tx * i / steps, ty * i / steps), angle * i / steps) for i in range(num_frames)])
