"""Autograd wrapper of the compiled filtered_lrelu kernels.

The forward saves, per pixel of the upsampled intermediate the output reads, which branch of the
nonlinearity it took (2 bits: negative, positive or clamped; the official op saves the same), not
the intermediate itself. The input gradient runs the fused kernel again with the plan transposed:
upsample the output gradient with ``fd``, multiply by the saved derivative, downsample with ``fu``.
The bias gradient is that input gradient summed per channel. Gradients are first order only, as the
official op's; the filters' gradients are not compiled (the dispatcher uses the reference when a
filter requires grad).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType

import torch

from .filtered_lrelu_ref import check_args, check_output_size
from .upfirdn2d_ref import Padding, parse_padding


@dataclass(frozen=True)
class _Params:
    module: ModuleType
    up: int
    down: int
    padding: tuple[int, int, int, int]
    gain: float
    slope: float
    clamp: float  # < 0: no clamp
    flip_filter: bool


def _filter_arg(f: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    # An empty tensor stands for the identity filter; the kernels convert taps to their accumulation type.
    return x.new_empty(0) if f is None else f.detach().to(device=x.device)


def _input_gradient(grad: torch.Tensor, mask: torch.Tensor, fu: torch.Tensor, fd: torch.Tensor,
                    in_size: tuple[int, int], p: _Params) -> torch.Tensor:
    return p.module.filtered_lrelu_grad(grad.contiguous(), mask, fu, fd, in_size[0], in_size[1], p.up, p.down,
                                        *p.padding, p.gain, p.slope, p.flip_filter)


class _FilteredLreluBackward(torch.autograd.Function):
    """The input gradient as an op of its own, so that differentiating it fails with a clear message."""

    @staticmethod
    def forward(ctx, grad, mask, fu, fd, in_size, params: _Params):  # type: ignore[override]
        return _input_gradient(grad, mask, fu, fd, in_size, params)

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        raise NotImplementedError(
            "filtered_lrelu: the compiled op has first-order gradients only (as StyleGAN3's); "
            "set FEWSHOT_OPS=reference for higher-order gradients")


class _FilteredLrelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, fu, fd, params: _Params):  # type: ignore[override]
        write_mask = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        y, mask = params.module.filtered_lrelu(x, b, fu, fd, params.up, params.down, *params.padding, params.gain,
                                               params.slope, params.clamp, params.flip_filter, write_mask)
        if write_mask:
            ctx.save_for_backward(mask, fu, fd)
        ctx.params = params
        ctx.in_size = (x.shape[2], x.shape[3])
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        mask, fu, fd = ctx.saved_tensors
        grad_x = _FilteredLreluBackward.apply(grad, mask, fu, fd, ctx.in_size, ctx.params)
        grad_b = grad_x.sum([0, 2, 3]) if ctx.needs_input_grad[1] else None
        return (grad_x if ctx.needs_input_grad[0] else None), grad_b, None, None, None


def filtered_lrelu_compiled(
    module: ModuleType,
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
    """Same meaning as :func:`fewshot.cuda.filtered_lrelu_ref.filtered_lrelu_ref`, computed by ``module``'s kernels."""
    check_args(x, b, up, down)
    check_output_size(x, fu, fd, up, down, padding)
    b = x.new_empty(0) if b is None else b.to(x.dtype)
    params = _Params(module, up, down, parse_padding(padding), float(gain), float(slope),
                     -1.0 if clamp is None else float(clamp), bool(flip_filter))
    return _FilteredLrelu.apply(x, b, _filter_arg(fu, x), _filter_arg(fd, x), params)
