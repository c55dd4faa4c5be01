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
from torch import nn

from .. import settings
from .cpu_matmul import batched_matmul  # torch.bmm, on oneDNN where MKL runs narrower vectors
from .derived import derived  # U(W) [36, O, C] computed once per weight at inference

# Where the transforms cost more than the smaller GEMMs save, the direct convolution stays:
# few channels (the transforms scale with C + O, the GEMMs with C x O) or few tiles (narrow GEMMs,
# and the fixed cost of transforming the [O, C, 3, 3] filters). Measured on a 2-core AVX2 CPU
# (BENCHMARKS.md, "Winograd"): 512 channels at 64 px 2.6-3.2x forward and 2.7-3.0x forward+backward;
# 64 channels at 64 px 1.08x / 1.39x; 32 tiles 1.12x / 1.26x; 16 tiles 0.71x / 0.99x.
MIN_CHANNEL_PRODUCT = 64 * 64
MIN_TILES = 32  # N * ceil(H/4) * ceil(W/4): the GEMMs' column count
# Maps under 12x12 (2x2 tiles or fewer per image: half-empty 4-lane steps in the transforms) take it only
# from 256x256 channels. Measured one thread, 2-core Intel Xeon (AVX-512), forward and forward+backward vs
# the direct convolution at 8x8: 128 channels, batch 16: 0.61x / 0.92x; 256: 0.91x / 1.23x; 512: 0.88x / 1.10x.
SMALL_MAP_PIXELS = 12 * 12
SMALL_MAP_MIN_CHANNEL_PRODUCT = 256 * 256


class _LinearMap(torch.autograd.Function):
    """``module.<name>(x, *args)`` for one of the compiled linear transforms; its backward is the
    adjoint ``module.<adjoint>(grad, *adjoint_args)``, itself a _LinearMap whose backward is the
    transform again, so gradients of every order flow through."""

    @staticmethod
    def forward(ctx, x, module, name, adjoint, args, adjoint_args):  # type: ignore[override]
        ctx.module, ctx.names, ctx.args = module, (name, adjoint), (args, adjoint_args)
        return getattr(module, name)(x, *args)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (name, adjoint), (args, adjoint_args) = ctx.names, ctx.args
        return _LinearMap.apply(grad, ctx.module, adjoint, name, adjoint_args, args), None, None, None, None, None


def conv3x3_winograd_compiled(module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    n, _, h, width = x.shape
    u = derived(w, "winograd_u", lambda t: _LinearMap.apply(t, module, "winograd_weight", "winograd_weight_t", (), ()))
    v = _LinearMap.apply(x, module, "winograd_input", "winograd_input_t", (), (n, h, width))  # [36, C, tiles]
    return _LinearMap.apply(batched_matmul(u, v), module, "winograd_output", "winograd_output_t", (n, h, width), ())


def winograd_module(x: torch.Tensor, w: torch.Tensor):
    """The compiled CPU module when this convolution should take the Winograd path, else None."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or w.dtype != x.dtype:
        return None
    if w.shape[0] * w.shape[1] < MIN_CHANNEL_PRODUCT:
        return None
    if x.shape[0] * -(-x.shape[2] // 4) * -(-x.shape[3] // 4) < MIN_TILES:
        return None
    if x.shape[2] * x.shape[3] < SMALL_MAP_PIXELS and w.shape[0] * w.shape[1] < SMALL_MAP_MIN_CHANNEL_PRODUCT:
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


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3x3, stride 1, padding 1, groups 1) whose convolution goes through :func:`conv3x3`."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        module = winograd_module(input, weight)
        if module is None:  # CUDA, or too small to pay: torch's convolution, with its own bias handling
            return F.conv2d(input, weight, bias, padding=1)
        y = conv3x3_winograd_compiled(module, input, weight)
        return y if bias is None else y.add_(bias.view(1, -1, 1, 1))  # y is a fresh output: no copy


def _takes_winograd(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
        and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
    )


def use_winograd(module: nn.Module) -> int:
    """Route the plain 3x3 stride-1 ``nn.Conv2d`` layers of ``module`` (a torchvision ResNet, say) through
    :func:`conv3x3`, in place; parameters and ``state_dict`` are unchanged. Returns how many were routed.

    Each call still picks Winograd or torch's convolution by device, dtype and size, so the module
    behaves as before on CUDA and wherever Winograd does not pay.
    """
    routed = 0
    for conv in module.modules():
        if _takes_winograd(conv):
            conv.__class__ = WinogradConv2d
            routed += 1
    return routed
