"""Resampling helpers and the convolution-with-resampling composition the networks use.

All of them reduce to :func:`upfirdn2d` plus a plain (transposed) convolution, with the
padding arithmetic of StyleGAN2 so that official weights give the same images.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F

from .derived import derived
from .dispatch import upfirdn2d
from .upfirdn2d_ref import Padding, Scale, filter_size, parse_padding, parse_scaling
from .winograd import conv3x3, winograd_module


def upsample2d(
    x: torch.Tensor, f: torch.Tensor | None, up: Scale = 2, padding: Padding = 0,
    flip_filter: bool = False, gain: float = 1,
) -> torch.Tensor:
    """Upsample by ``up`` and filter; output is ``up`` times the input size for padding 0."""
    upx, upy = parse_scaling(up)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(
    x: torch.Tensor, f: torch.Tensor | None, down: Scale = 2, padding: Padding = 0,
    flip_filter: bool = False, gain: float = 1,
) -> torch.Tensor:
    """Filter and keep every ``down``-th pixel; output is the input size / ``down`` for padding 0."""
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain)


def filter2d(
    x: torch.Tensor, f: torch.Tensor | None, padding: Padding = 0, flip_filter: bool = False, gain: float = 1,
) -> torch.Tensor:
    """Filter keeping the size (for padding 0)."""
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


# The dtype of the direct CPU convolutions inside a reduced-precision block (training's ``cpu_bf16``), None
# elsewhere. Set for the duration of a block's forward, like torch.autocast; autograd records the casts, so the
# backward (and R1's double backward) runs the same convolutions in the same dtype.
_DIRECT_CONV_DTYPE: ContextVar[torch.dtype | None] = ContextVar("fewshot_direct_conv_dtype", default=None)


@contextmanager
def direct_convs_in(dtype: torch.dtype | None) -> Iterator[None]:
    """Within it, float32 CPU convolutions that take oneDNN's direct path run in ``dtype`` (None: unchanged)
    and return float32; Winograd convolutions stay float32."""
    token = _DIRECT_CONV_DTYPE.set(dtype)
    try:
        yield
    finally:
        _DIRECT_CONV_DTYPE.reset(token)


def _conv(
    x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding: int | list[int] = 0, groups: int = 1,
    transpose: bool = False, flip_weight: bool = True,
) -> torch.Tensor:
    # flip_weight=True means "use conv2d's correlation as is"; False flips the taps to a true convolution.
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    winograd_shaped = (not transpose and stride == 1 and groups == 1 and w.shape[2:] == (3, 3)
                       and padding in ([1, 1], 1, (1, 1)))
    low = _DIRECT_CONV_DTYPE.get()
    if low is not None and x.device.type == "cpu" and x.dtype == torch.float32 and not (
            winograd_shaped and winograd_module(x, w) is not None):
        # Only the convolution's operands are rounded; its output and everything around it stay float32.
        # Winograd keeps float32: with bfloat16 GEMMs its transforms would amplify the rounding to ~3%.
        return _plain_conv(x.to(low), w.to(low), stride, padding, groups, transpose, winograd_shaped).float()
    return _plain_conv(x, w, stride, padding, groups, transpose, winograd_shaped)


def _plain_conv(
    x: torch.Tensor, w: torch.Tensor, stride: int, padding: int | list[int], groups: int, transpose: bool,
    winograd_shaped: bool,
) -> torch.Tensor:
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    if winograd_shaped:
        return conv3x3(x, w)  # Winograd on the CPU where it pays, else F.conv2d
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
    padding: Padding = 0, groups: int = 1, flip_weight: bool = True, flip_filter: bool = False,
) -> torch.Tensor:
    """2-D convolution with optional up/downsampling, cheapest formulation for each case.

    ``up``: transposed conv with stride ``up`` (weight not flipped when ``flip_weight`` is False,
    as the generator does), then the FIR filter with gain ``up**2``.
    ``down``: FIR filter, then a strided conv (or, for 1x1 kernels, decimate then conv).
    """
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError("conv2d_resample expects 4-D input and weight")
    if up < 1 or down < 1:
        raise ValueError("up and down must be >= 1")
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)

    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up**2, flip_filter=flip_filter)

    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    if up > 1:
        # Transposed convolution wants [in, out/groups, kh, kw].
        if groups == 1:
            # A contiguous copy, kept per weight at inference (fewshot.cuda.derived): torch would otherwise copy
            # the transposed view inside every call (10 ms of a 64 px generator's single-image forward on a CPU).
            w = derived(w, "conv_transpose_weight", lambda t: t.transpose(0, 1).contiguous())
        else:
            w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
    return _conv(x, w, groups=groups, flip_weight=flip_weight)
