"""Autograd wrapper of the compiled bias_act kernel.

The kernel computes the forward value (order 0) or ``t * d^k/ds^k [act(s) * gain]`` masked where
the forward value was clamped (order k = 1, 2), with ``s = x + b``. The backward of every order is
the next order of the same kernel, so first and second derivatives (R1, path length) stay compiled.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch

from .bias_act_ref import resolve_args

MAX_ORDER = 2  # derivatives implemented in closed form in ops_common.h


@dataclass(frozen=True)
class _Params:
    module: ModuleType
    dim: int
    act: int
    alpha: float
    gain: float
    clamp: float


def _reduce_to_bias(grad: torch.Tensor, dim: int) -> torch.Tensor:
    return grad.sum([d for d in range(grad.ndim) if d != dim])


class _BiasActDerivative(torch.autograd.Function):
    """``t * gain * act^(order)(x + b) * mask``; differentiable in t, x and b."""

    @staticmethod
    def forward(ctx, t, x, b, params: _Params, order: int):  # type: ignore[override]
        if order > MAX_ORDER:
            raise NotImplementedError(f"bias_act: derivatives beyond order {MAX_ORDER} are not implemented")
        ctx.save_for_backward(t, x, b)
        ctx.params, ctx.order = params, order
        return params.module.bias_act(x, b, t, params.dim, params.act, order, params.alpha, params.gain, params.clamp)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        t, x, b = ctx.saved_tensors
        params, order = ctx.params, ctx.order
        grad_t = grad_x = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_t = _BiasActDerivative.apply(grad, x, b, params, order)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_s = _BiasActDerivative.apply(grad * t, x, b, params, order + 1)
            grad_x = grad_s if ctx.needs_input_grad[1] else None
            grad_b = _reduce_to_bias(grad_s, params.dim) if ctx.needs_input_grad[2] else None
        return grad_t, grad_x, grad_b, None, None


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, params: _Params):  # type: ignore[override]
        # Keep x (not x + b or act(x + b)): the kernel recomputes s in the backward, so no intermediate is stored.
        ctx.save_for_backward(x, b)
        ctx.params = params
        empty = x.new_empty(0)
        return params.module.bias_act(x, b, empty, params.dim, params.act, 0, params.alpha, params.gain, params.clamp)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, b = ctx.saved_tensors
        params = ctx.params
        grad_x = grad_b = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_s = _BiasActDerivative.apply(grad, x, b, params, 1)
            grad_x = grad_s if ctx.needs_input_grad[0] else None
            grad_b = _reduce_to_bias(grad_s, params.dim) if ctx.needs_input_grad[1] else None
        return grad_x, grad_b, None


def bias_act_compiled(
    module: ModuleType,
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Same meaning as :func:`fewshot.cuda.bias_act_ref.bias_act_ref`, computed by ``module``'s kernel."""
    spec, alpha, gain, clamp = resolve_args(act, alpha, gain, clamp)
    if x.ndim == 0:
        raise ValueError("bias_act expects at least a 1-D input")
    dim = dim % x.ndim
    if b is None:
        b = x.new_empty(0)
    elif b.ndim != 1 or b.shape[0] != x.shape[dim]:
        raise ValueError(f"bias of shape {tuple(b.shape)} does not match dim {dim} of {tuple(x.shape)}")
    else:
        b = b.to(x.dtype)
    params = _Params(module, dim, spec.code, alpha, gain, clamp)
    return _BiasAct.apply(x, b, params)
