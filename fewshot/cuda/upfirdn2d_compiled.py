"""Autograd wrapper of the compiled upfirdn2d kernel.

The gradient of upfirdn2d with respect to its input is upfirdn2d again with up and down swapped,
the filter flipped and the padding mirrored (the adjoint), so every derivative order runs the same
kernel. A 1-D filter runs as two passes (horizontal, then vertical), each with gain ** 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch

from .upfirdn2d_ref import Padding, Scale, parse_padding, parse_scaling


@dataclass(frozen=True)
class _Params:
    module: ModuleType
    upx: int
    upy: int
    downx: int
    downy: int
    px0: int
    px1: int
    py0: int
    py1: int
    flip_filter: bool
    gain: float

    def adjoint(self, taps_x: int, taps_y: int, in_w: int, in_h: int, out_w: int, out_h: int) -> _Params:
        """The parameters whose upfirdn2d is the transpose of this one (maps out-shaped grads to in-shaped)."""
        return _Params(
            self.module,
            upx=self.downx,
            upy=self.downy,
            downx=self.upx,
            downy=self.upy,
            px0=taps_x - self.px0 - 1,
            px1=in_w * self.upx - out_w * self.downx + self.px0 - self.upx + 1,
            py0=taps_y - self.py0 - 1,
            py1=in_h * self.upy - out_h * self.downy + self.py0 - self.upy + 1,
            flip_filter=not self.flip_filter,
            gain=self.gain,
        )


def _run(x: torch.Tensor, f: torch.Tensor, p: _Params) -> torch.Tensor:
    m = p.module
    if f.ndim == 2:
        return m.upfirdn2d(x, f * p.gain, p.upx, p.upy, p.downx, p.downy, p.px0, p.px1, p.py0, p.py1, p.flip_filter)
    taps = f * p.gain**0.5
    x = m.upfirdn2d(x, taps[None, :], p.upx, 1, p.downx, 1, p.px0, p.px1, 0, 0, p.flip_filter)
    return m.upfirdn2d(x, taps[:, None], 1, p.upy, 1, p.downy, 0, 0, p.py0, p.py1, p.flip_filter)


class _Upfirdn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, params: _Params):  # type: ignore[override]
        y = _run(x, f, params)
        ctx.save_for_backward(f)
        ctx.params = params
        ctx.shapes = (x.shape[3], x.shape[2], y.shape[3], y.shape[2])
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (f,) = ctx.saved_tensors
        taps_x, taps_y = f.shape[-1], f.shape[0]
        adjoint = ctx.params.adjoint(taps_x, taps_y, *ctx.shapes)
        grad_x = _Upfirdn2d.apply(grad, f, adjoint) if ctx.needs_input_grad[0] else None
        return grad_x, None, None


def upfirdn2d_compiled(
    module: ModuleType,
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scale = 1,
    down: Scale = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Same meaning as :func:`fewshot.cuda.upfirdn2d_ref.upfirdn2d_ref`, computed by ``module``'s kernel."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects NCHW input, got shape {tuple(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    px0, px1, py0, py1 = parse_padding(padding)
    out_w = (x.shape[3] * upx + px0 + px1 - f.shape[-1]) // downx + 1
    out_h = (x.shape[2] * upy + py0 + py1 - f.shape[0]) // downy + 1
    if out_w < 1 or out_h < 1:
        raise ValueError(f"upfirdn2d: padding {padding} and filter {tuple(f.shape)} leave no output for {tuple(x.shape)}")
    params = _Params(module, upx, upy, downx, downy, px0, px1, py0, py1, bool(flip_filter), float(gain))
    return _Upfirdn2d.apply(x, f.to(device=x.device), params)
