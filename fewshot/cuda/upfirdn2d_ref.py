"""Reference definition of upfirdn2d: upsample by zero insertion, pad, FIR filter, downsample.

This file *defines* the op; the compiled kernels must agree with it. Conventions follow
StyleGAN2 so that official weights produce the same images: the filter is applied as a true
convolution (flipped) unless ``flip_filter`` is set, and ``gain`` multiplies the filter by
``gain ** (ndim / 2)`` so a separable pass applies it once in total.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Padding = int | Sequence[int]
Scale = int | Sequence[int]


def parse_scaling(scaling: Scale) -> tuple[int, int]:
    """An int or (sx, sy) -> (sx, sy); both at least 1."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    sx, sy = (int(s) for s in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f"scaling factors must be >= 1, got {scaling}")
    return sx, sy


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """An int, (px, py) or (x0, x1, y0, y1) -> (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        padding = [padding, padding]
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        return padding[0], padding[1], padding[2], padding[3]
    raise ValueError(f"padding must have 1, 2 or 4 entries, got {padding}")


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a 1-D (separable) or 2-D filter; (1, 1) for None."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    fw = f.shape[-1]
    fh = f.shape[0]
    return int(fw), int(fh)


def setup_filter(
    f: Sequence[float] | torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """Turn a filter spec into a tensor. Short 1-D taps become a 2-D outer product, as upstream.

    ``[1, 3, 3, 1]`` becomes the normalised 4x4 outer product StyleGAN2 stores as ``resample_filter``.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scale = 1,
    down: Scale = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample (zero insertion), pad or crop, convolve with ``f``, then keep every ``down``-th pixel."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects NCHW input, got shape {tuple(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    batch, ch, in_h, in_w = x.shape

    # Upsample by inserting upx-1 / upy-1 zeros after every pixel.
    x = x.reshape(batch, ch, in_h, 1, in_w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(batch, ch, in_h * upy, in_w * upx)

    # Positive padding pads with zeros, negative padding crops.
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]

    # conv2d is a correlation: flipping the taps makes it a true convolution.
    f = f * (gain ** (f.ndim / 2))
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f[None, None].repeat([ch, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = F.conv2d(x, f, groups=ch)
    else:
        x = F.conv2d(x, f.unsqueeze(2), groups=ch)
        x = F.conv2d(x, f.unsqueeze(3), groups=ch)

    return x[:, :, ::downy, ::downx]
