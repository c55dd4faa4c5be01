"""Bilinear ``grid_sample`` with a gradient of its gradient, on every device.

R1 differentiates D's gradient with respect to the real images, and those images pass through the
ADA geometry, so the sampling must support double backward in its input. torch's CUDA
``grid_sampler_2d_backward`` has no derivative ("derivative for aten::grid_sampler_2d_backward is
not implemented"); on the CPU torch happens to take a composite path that has one. The sampled
image is linear in the input for a fixed grid, ``out = S(grid) @ input``, so the pieces are simple:

- forward: ``S @ input`` (``F.grid_sample``);
- backward: ``S^T @ grad_out`` (``aten.grid_sampler_2d_backward`` with only the input gradient);
- backward of that: ``S @ v`` again, a plain ``grid_sample``.

The grid carries no gradient here (the transforms are random draws), which keeps the construction
exact and cheap; a grid that needs one is refused rather than silently given a zero gradient.

``S^T @ grad_out`` on CUDA adds with atomics, so its sums land in a different order on every run. A
run with ``deterministic = true`` (torch's deterministic algorithms on) takes a scatter-add of the four
bilinear taps instead, which torch sums in a fixed order: a resumed GPU run with ADA then equals the
straight run bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_BILINEAR, _ZEROS = 0, 0  # aten's enums for interpolation_mode and padding_mode


def _sample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _sample_transposed(grad_out: torch.Tensor, grid: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
    if grad_out.is_cuda and torch.are_deterministic_algorithms_enabled():
        return _sample_transposed_by_scatter(grad_out, grid, input_shape)
    # Only the input's shape matters when the grid gradient is not requested.
    shape_only = grad_out.new_empty(input_shape)
    grad_input, _ = torch.ops.aten.grid_sampler_2d_backward(
        grad_out, shape_only, grid, _BILINEAR, _ZEROS, False, [True, False])
    return grad_input


def _sample_transposed_by_scatter(grad_out: torch.Tensor, grid: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
    """``S^T @ grad_out`` as a scatter-add of the four bilinear taps (deterministic on CUDA in deterministic mode).

    The taps and weights follow aten's bilinear kernel (align_corners=False, zeros padding): source pixel
    ``((g + 1) * size - 1) / 2``, weights ``(x1 - x) * (y1 - y)`` ... for the corners, none outside the image.
    """
    batch, channels, height, width = input_shape
    x = ((grid[..., 0] + 1) * width - 1) / 2  # [N, Ho, Wo]
    y = ((grid[..., 1] + 1) * height - 1) / 2
    x0, y0 = x.floor(), y.floor()
    grad = grad_out.reshape(batch, channels, -1)
    grad_input = grad_out.new_zeros(batch, channels, height * width)
    for corner_y, weight_y in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
        for corner_x, weight_x in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
            inside = (corner_x >= 0) & (corner_x < width) & (corner_y >= 0) & (corner_y < height)
            weight = torch.where(inside, weight_x * weight_y, 0).reshape(batch, 1, -1).to(grad.dtype)
            index = (corner_y.clamp(0, height - 1) * width + corner_x.clamp(0, width - 1)).long()
            index = index.reshape(batch, 1, -1).expand(-1, channels, -1)
            grad_input.scatter_add_(2, index, grad * weight)
    return grad_input.reshape(input_shape)


class _GridSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, images, grid):  # type: ignore[override]
        ctx.save_for_backward(grid)
        ctx.input_shape = images.shape
        return _sample(images, grid)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (grid,) = ctx.saved_tensors
        return _GridSampleTransposed.apply(grad_out, grid, ctx.input_shape), None


class _GridSampleTransposed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_out, grid, input_shape):  # type: ignore[override]
        ctx.save_for_backward(grid)
        return _sample_transposed(grad_out, grid, input_shape)

    @staticmethod
    def backward(ctx, grad_grad_input):  # type: ignore[override]
        (grid,) = ctx.saved_tensors
        return _GridSample.apply(grad_grad_input, grid), None, None


def grid_sample_bilinear(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(images, grid, bilinear, zeros, align_corners=False)``, twice differentiable in ``images``."""
    if grid.requires_grad:
        raise ValueError("grid_sample_bilinear: the grid must not require a gradient")
    return _GridSample.apply(images, grid)
