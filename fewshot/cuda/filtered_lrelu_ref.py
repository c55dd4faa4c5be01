"""Reference definition of filtered_lrelu: StyleGAN3's alias-free nonlinearity.

This file *defines* the op; the compiled kernels must agree with it. In order:

1. add the bias ``b`` (one per channel),
2. upsample by ``up`` with the FIR filter ``fu`` (zero insertion, pad by ``padding``, filter, gain ``up**2``),
3. leaky ReLU with ``slope``, multiply by ``gain``, clamp to ``[-clamp, clamp]``,
4. filter with ``fd`` and keep every ``down``-th pixel.

Conventions follow StyleGAN3 so that official weights give the same images: the filters are 1-D
(separable) or 2-D, applied as true convolutions unless ``flip_filter`` is set, and ``padding`` is
``[x0, x1, y0, y1]`` of the upsampled image, before ``fu``. The output is
``(in * up + pad0 + pad1 - (fu_taps - 1) - (fd_taps - 1) + (down - 1)) // down`` on each axis.
The compiled kernels give first-order gradients only, as the official op does.
"""

from __future__ import annotations

import math

import torch

from .bias_act_ref import bias_act_ref
from .upfirdn2d_ref import Padding, filter_size, parse_padding, upfirdn2d_ref


def filtered_lrelu_output_size(
    in_size: tuple[int, int], fu: torch.Tensor | None, fd: torch.Tensor | None, up: int, down: int, padding: Padding
) -> tuple[int, int]:
    """(height, width) of filtered_lrelu's output for an input of ``in_size`` = (height, width)."""
    px0, px1, py0, py1 = parse_padding(padding)
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    in_h, in_w = in_size
    out_w = (in_w * up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (in_h * up + py0 + py1 - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down
    return out_h, out_w


def check_args(x: torch.Tensor, b: torch.Tensor | None, up: int, down: int) -> None:
    """The argument rules every implementation shares."""
    if x.ndim != 4:
        raise ValueError(f"filtered_lrelu expects NCHW input, got shape {tuple(x.shape)}")
    if not (isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1):
        raise ValueError(f"up and down must be integers >= 1, got up={up!r}, down={down!r}")
    if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[1]):
        raise ValueError(f"bias of shape {tuple(b.shape)} does not match the {x.shape[1]} channels of the input")


def check_output_size(
    x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None, up: int, down: int, padding: Padding
) -> tuple[int, int]:
    """The output size, after checking the filters (1-D or 2-D) and that padding and filters leave an output."""
    out_h, out_w = filtered_lrelu_output_size((x.shape[2], x.shape[3]), fu, fd, up, down, padding)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"filtered_lrelu: padding {padding} and the filters leave no output for {tuple(x.shape)}")
    return out_h, out_w


def filtered_lrelu_ref(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Bias, upsample with ``fu``, leaky ReLU + gain + clamp, downsample with ``fd``, in plain PyTorch."""
    check_args(x, b, up, down)
    check_output_size(x, fu, fd, up, down, padding)
    x = bias_act_ref(x, b)
    x = upfirdn2d_ref(x, fu, up=up, padding=parse_padding(padding), gain=up**2, flip_filter=flip_filter)
    x = bias_act_ref(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return upfirdn2d_ref(x, fd, down=down, flip_filter=flip_filter)
