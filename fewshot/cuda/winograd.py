"""Winograd 3x3 convolutions on the CPU with the compiled tile transforms (see winograd_ref.py).

``conv3x3(x, w)`` is ``F.conv2d(x, w, padding=1)`` for a 3x3 filter. On the CPU, in float32 or
float64 with the compiled ops available, it runs ``out(bmm(U(w), in(x)))`` with the transforms of
``winograd.cpp``; otherwise it is ``F.conv2d``. Each compiled transform is linear and its backward is
its adjoint, whose backward is the transform again, so gradients of any order flow; the weight
gradient is then also a Winograd-domain matrix product (``dU = dM @ V^T``), 4x fewer
multiply-adds than the direct convolution's, which is where oneDNN's CPU convolution is slowest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import settings
from .winograd_ref import weight_transform

# Where the transforms cost more than the smaller GEMMs save, the direct convolution stays:
# few channels (the transforms scale with C + O, the GEMMs with C x O) or few tiles (narrow GEMMs).
# Measured on a 2-core AVX2 CPU (BENCHMARKS.md, "Winograd"): 512 channels at 64 px 1.4-1.9x
# forward and ~2x forward+backward; 128 channels or 8 px slower than direct.
MIN_CHANNEL_PRODUCT = 256 * 256
MIN_TILES = 256  # N * ceil(H/4) * ceil(W/4): the GEMMs' column count


class _Input(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, module):  # type: ignore[override]
        ctx.module, ctx.shape = module, x.shape
        return module.winograd_input(x)

    @staticmethod
    def backward(ctx, grad_v):  # type: ignore[override]
        n, _, h, w = ctx.shape
        return _InputAdjoint.apply(grad_v, ctx.module, n, h, w), None


class _InputAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, module, n, h, w):  # type: ignore[override]
        ctx.module = module
        return module.winograd_input_t(v, n, h, w)

    @staticmethod
    def backward(ctx, grad_x):  # type: ignore[override]
        return _Input.apply(grad_x, ctx.module), None, None, None, None


class _Output(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m, module, n, h, w):  # type: ignore[override]
        ctx.module = module
        return module.winograd_output(m, n, h, w)

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        return _OutputAdjoint.apply(grad_y, ctx.module), None, None, None, None


class _OutputAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, module):  # type: ignore[override]
        ctx.module, ctx.shape = module, y.shape
        return module.winograd_output_t(y)

    @staticmethod
    def backward(ctx, grad_m):  # type: ignore[override]
        n, _, h, w = ctx.shape
        return _Output.apply(grad_m, ctx.module, n, h, w), None


def conv3x3_winograd_compiled(module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    n, _, h, width = x.shape
    m = torch.bmm(weight_transform(w), _Input.apply(x, module))
    return _Output.apply(m, module, n, h, width)


def winograd_module(x: torch.Tensor, w: torch.Tensor):
    """The compiled CPU module when this convolution should take the Winograd path, else None."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or w.dtype != x.dtype:
        return None
    if w.shape[0] * w.shape[1] < MIN_CHANNEL_PRODUCT:
        return None
    if x.shape[0] * -(-x.shape[2] // 4) * -(-x.shape[3] // 4) < MIN_TILES:
        return None
    if not settings.winograd_enabled() or settings.ops_choice() == "reference":
        return None
    from .build import compiled_module

    return compiled_module("cpu")


def conv3x3(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, w, padding=1)`` for a 3x3 ``w`` (groups 1), by Winograd on the CPU where it pays."""
    module = winograd_module(x, w)
    if module is None:
        return F.conv2d(x, w, padding=1)
    return conv3x3_winograd_compiled(module, x, w)
