"""Rewrites of a frozen torchvision ResNet's stem that keep its function and cut its cost.

(BatchNorm folding, which every frozen extractor gets, is in ``fewshot.frozen``.) Two stems:

* **The upsampled stem.** Small fakes (32 or 64 px) are upsampled by nearest neighbour (×8 or ×4) before the
  network, as the official Reg-DGM code does, and the stem then runs a 7×7 stride-2 convolution over mostly
  repeated pixels. Nearest upsampling by ``s`` followed by a stride-``t`` convolution is a stride-1
  convolution of the *small* image with ``(s/t)²`` small phase filters, one per output position modulo
  ``s/t``; ``UpsampledStem`` computes conv1 → bn1 → ReLU → 3×3/2 max-pool that way, on the small image.
  For ×8 that is 3×3 taps over 3 channels per output instead of 7×7 (5.4x fewer multiply-adds), no 256 px
  input tensor, and an input gradient that reaches the small image directly instead of through the 4x-costlier
  transposed 7×7 convolution and the upsampling's block sums.
* **The full-size stem.** Without upsampling, ``StridedStem`` runs the same four ops channels-last (where
  max-pooling is 10x faster than in NCHW) and computes the 7×7/2 convolution's input gradient as a four-phase
  stride-1 correlation, about twice as fast as oneDNN's transposed convolution to 3 channels.

Both are checked against the untouched network in ``tests/test_reg_dgm.py`` (outputs and input gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


def _is_torchvision_resnet(model: nn.Module) -> bool:
    try:
        from torchvision.models.resnet import ResNet
    except ImportError:
        return False
    return isinstance(model, ResNet)


def phase_filters(weight: torch.Tensor, factor: int, stride: int, padding: int) -> tuple[torch.Tensor, int, int, int]:
    """The stride-1 filters that equal nearest ×``factor`` upsampling followed by ``conv(stride, padding)``.

    Returns ``(filters [q*q*O, C, K, K], q, pad_before, pad_after)`` with ``q = factor / stride``: output channel
    ``(qy*q + qx)*O + o`` of a stride-1 convolution of the small image (padded by ``pad_before``/``pad_after``)
    is channel ``o`` of the original output at ``(q*i + qy, q*j + qx)``. Each tap ``t`` of the original filter
    lands on the small-image offset ``floor((stride*r - padding + t) / factor)`` of phase ``r``.
    """
    out_channels, _, k, k2 = weight.shape
    if k != k2 or factor % stride:
        raise ValueError(f"need a square kernel and a factor divisible by the stride, got {k}x{k2}, x{factor}/{stride}")
    q = factor // stride
    first = (-padding) // factor
    last = (stride * (q - 1) - padding + k - 1) // factor
    size = last - first + 1
    taps = torch.zeros(q, size, k, dtype=weight.dtype, device=weight.device)  # taps[r, d, t]: tap t -> offset d
    for r in range(q):
        for t in range(k):
            taps[r, (stride * r - padding + t) // factor - first, t] = 1
    filters = torch.einsum("ydt,xeu,octu->yxocde", taps, taps, weight)
    return filters.reshape(q * q * out_channels, weight.shape[1], size, size).contiguous(), q, -first, last


class _StemFunction(torch.autograd.Function):
    """conv (phase filters) → interleave phases → 3×3/2 max-pool → ReLU, with a direct input-gradient backward.

    ReLU and max-pooling commute (ReLU is monotone), so ReLU runs on the 4x smaller pooled tensor, and the
    backward needs only its mask and the pooling indices. Everything between the convolutions stays channels-last,
    the layout in which max-pooling is fast and the phase interleave is a copy of contiguous rows.
    """

    @staticmethod
    def forward(ctx, x, filters, bias, q: int, pad_before: int, pad_after: int):  # noqa: ANN001, ANN205
        n, _, h, w = x.shape
        channels = filters.shape[0] // (q * q)
        padded = F.pad(x, (pad_before, pad_after, pad_before, pad_after)).contiguous(memory_format=torch.channels_last)
        phases = F.conv2d(padded, filters, bias)  # [N, q*q*O, h, w]; channels-last memory: [N, h, w, qy, qx, O]
        phases = phases.permute(0, 2, 3, 1).reshape(n, h, w, q, q, channels)
        stem = phases.permute(0, 1, 3, 2, 4, 5).reshape(n, h * q, w * q, channels)  # interleaved, NHWC
        stem = stem.permute(0, 3, 1, 2)  # an NCHW view of the NHWC memory: the fast layout for max-pooling
        if not ctx.needs_input_grad[0]:
            return F.max_pool2d(stem, 3, 2, 1).relu_().contiguous()
        pooled, where = torch.ops.aten.max_pool2d_with_indices(stem, [3, 3], [2, 2], [1, 1])
        pooled = pooled.relu_()
        ctx.save_for_backward(filters, pooled, where)
        ctx.shape = (n, h, w, q, channels, pad_before, tuple(padded.shape))
        return pooled.contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        filters, pooled, where = ctx.saved_tensors
        n, h, w, q, channels, pad_before, padded_shape = ctx.shape
        grad = (grad * (pooled > 0)).contiguous(memory_format=torch.channels_last)  # the ReLU's mask
        # The pooling's gradient in the interleaved NHWC layout (the input is only a shape and layout: never read),
        # then one copy back into the phase layout of the convolution's output.
        layout = torch.empty(n, h * q, w * q, channels, dtype=grad.dtype, device=grad.device).permute(0, 3, 1, 2)
        grad_stem = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, layout, [3, 3], [2, 2], [1, 1], [1, 1], False, where)
        grad_stem = grad_stem.permute(0, 2, 3, 1).reshape(n, h, q, w, q, channels)
        grad_phases = grad_stem.permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, q * q * channels).permute(0, 3, 1, 2)
        grad_padded = torch.nn.grad.conv2d_input(padded_shape, filters, grad_phases)
        grad_x = grad_padded[:, :, pad_before : pad_before + h, pad_before : pad_before + w]
        return grad_x, None, None, None, None, None


def _folded_stem_weights(conv: nn.Conv2d, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """conv1's filters and bias with bn1 folded in (bn1 may already be folded: an Identity)."""
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=weight.dtype,
                                                                        device=weight.device)
    if isinstance(bn, nn.BatchNorm2d):
        scale = bn.weight.detach() / (bn.running_var + bn.eps).sqrt()
        weight, bias = weight * scale.view(-1, 1, 1, 1), bn.bias.detach() + (bias - bn.running_mean) * scale
    return weight, bias


class UpsampledStem(nn.Module):
    """A torchvision ResNet stem (conv1 → bn1 → ReLU → max-pool) applied to images upsampled ×``factor``.

    Takes the *small* image: ``UpsampledStem(...)(x)`` equals ``stem(F.interpolate(x, scale_factor=factor))``.
    The phase filters are buffers computed once from the frozen stem; there is nothing to train.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.Module, factor: int) -> None:
        super().__init__()
        weight, bias = _folded_stem_weights(conv, bn)
        filters, q, before, after = phase_filters(weight, factor, conv.stride[0], conv.padding[0])
        self.factor, self.q, self.pad_before, self.pad_after = factor, q, before, after
        # Channels-last like the activations around it: oneDNN then runs the input gradient without converting the
        # [N, q*q*O, h, w] gradient to NCHW first (3-5x faster on the CPU).
        self.register_buffer("filters", filters.contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias.repeat(q * q).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _StemFunction.apply(x, self.filters, self.bias, self.q, self.pad_before, self.pad_after)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, phases={self.q}x{self.q}, filters={list(self.filters.shape)}"


def input_gradient_filters(weight: torch.Tensor, stride: int, padding: int) -> tuple[torch.Tensor, int, int]:
    """Filters that compute the input gradient of ``conv(stride, padding)`` as a stride-1 convolution.

    ``grad_x[s*i + a] = sum_u grad_y[i + u] * W[a + padding - s*u]``: each input phase ``a`` is a correlation of the
    output gradient with the taps of one parity. Returns ``(filters [C*s*s, O, K, K], pad_before, pad_after)``;
    ``pixel_shuffle(conv2d(pad(grad_y), filters), s)`` is the input gradient (cropped to the input size).
    """
    out_channels, in_channels, k, _ = weight.shape
    first = -((k - 1 - padding) // stride)
    last = (stride - 1 + padding) // stride
    size = last - first + 1
    taps = torch.zeros(stride, size, k, dtype=weight.dtype, device=weight.device)  # taps[a, v, t]
    for a in range(stride):
        for v in range(size):
            t = a + padding - stride * (v + first)
            if 0 <= t < k:
                taps[a, v, t] = 1
    filters = torch.einsum("yvt,xwu,octu->cyxovw", taps, taps, weight)
    return filters.reshape(in_channels * stride * stride, out_channels, size, size).contiguous(), -first, last


class _StridedStemFunction(torch.autograd.Function):
    """conv 7×7/2 → 3×3/2 max-pool → ReLU at full size, channels-last, with a phase-correlation input gradient.

    oneDNN's own input gradient of the 7×7/2 convolution (a transposed convolution to 3 channels) runs at a
    quarter of its forward's speed; the four-phase stride-1 correlation computes the same sums about twice as fast.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, grad_filters, pad_before: int, pad_after: int):  # noqa: ANN001, ANN205
        stem = F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, bias, stride=2, padding=3)
        if not ctx.needs_input_grad[0]:
            return F.max_pool2d(stem, 3, 2, 1).relu_().contiguous()
        pooled, where = torch.ops.aten.max_pool2d_with_indices(stem, [3, 3], [2, 2], [1, 1])
        pooled = pooled.relu_()
        ctx.save_for_backward(grad_filters, pooled, where)
        ctx.shape = (tuple(stem.shape), tuple(x.shape), pad_before, pad_after)
        return pooled.contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        grad_filters, pooled, where = ctx.saved_tensors
        (n, channels, h, w), x_shape, before, after = ctx.shape
        grad = (grad * (pooled > 0)).contiguous(memory_format=torch.channels_last)  # the ReLU's mask
        layout = torch.empty(n, h, w, channels, dtype=grad.dtype, device=grad.device).permute(0, 3, 1, 2)
        grad_stem = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, layout, [3, 3], [2, 2], [1, 1], [1, 1], False, where)
        grad_x = F.pixel_shuffle(F.conv2d(F.pad(grad_stem, (before, after, before, after)), grad_filters), 2)
        return grad_x[:, :, : x_shape[2], : x_shape[3]], None, None, None, None, None


class StridedStem(nn.Module):
    """A torchvision ResNet stem (conv1 → bn1 → ReLU → max-pool) on full-size images, bn1 folded, channels-last."""

    def __init__(self, conv: nn.Conv2d, bn: nn.Module) -> None:
        super().__init__()
        weight, bias = _folded_stem_weights(conv, bn)
        grad_filters, self.pad_before, self.pad_after = input_gradient_filters(weight, 2, 3)
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias.contiguous())
        self.register_buffer("grad_filters", grad_filters.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _StridedStemFunction.apply(x, self.weight, self.bias, self.grad_filters, self.pad_before,
                                          self.pad_after)


def fuse_resnet_stem(model: nn.Module, factor: int) -> bool:
    """Replace a torchvision ResNet's stem by one op: ``UpsampledStem`` for images the caller would upsample
    ×``factor`` (a power of two >= 2; the model then takes the small images), ``StridedStem`` for ``factor`` 1.

    Only for the standard stem (7×7/2 conv with padding 3, 3×3/2 max-pool); returns False and changes nothing
    for anything else.
    """
    if factor < 1 or factor & (factor - 1) or not _is_torchvision_resnet(model):
        return False
    conv, pool = model.conv1, model.maxpool
    standard_pool = isinstance(pool, nn.MaxPool2d) and (pool.kernel_size, pool.stride, pool.padding) in (
        (3, 2, 1), ((3, 3), (2, 2), (1, 1)))
    if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (7, 7) and conv.stride == (2, 2)
            and conv.padding == (3, 3) and conv.dilation == (1, 1) and conv.groups == 1 and standard_pool
            and not pool.ceil_mode and pool.dilation in (1, (1, 1))):
        return False
    model.conv1 = UpsampledStem(conv, model.bn1, factor) if factor > 1 else StridedStem(conv, model.bn1)
    model.bn1, model.relu, model.maxpool = nn.Identity(), nn.Identity(), nn.Identity()
    return True
