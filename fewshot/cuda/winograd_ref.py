"""Winograd F(4x4, 3x3) convolution, defined in plain PyTorch.

A 3x3 convolution (cross-correlation, stride 1, zero padding 1) computed per 4x4 output tile as
``A^T [(G g G^T) * (B^T d B)] A`` (Lavin & Gray, 2016; interpolation points 0, 1, -1, 2, -2, inf),
with d the 6x6 input tile around it and g the 3x3 filter. Per tile and channel pair that is 36
multiplications instead of 144: the 36 products over channels become 36 matrix products
``U[k] @ V[k]`` of ``[O, C] x [C, tiles]``. Everything else is a fixed linear map per tile (the
transforms below). In float32 the result agrees with the float64 convolution to ~3e-6 relative
(``F.conv2d`` in float32: ~1e-6); every map is linear, so autograd differentiates the whole
construction as often as asked (R1 and path length need gradients of gradients).

Layouts: ``V [36, C, N*TH*TW]`` and ``M [36, O, N*TH*TW]`` with tiles ordered (n, ty, tx),
``TH = ceil(H/4)``, ``TW = ceil(W/4)``. ``winograd.cpp`` computes the same four transforms
(input, output and their adjoints) in one pass each; this file is their definition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TILE_IN, TILE_OUT = 6, 4
TAPS = TILE_IN * TILE_IN
_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]


def _kron(rows: list[list[float]], like: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(rows, dtype=torch.float64).kron(torch.tensor(rows, dtype=torch.float64))
    return m.to(dtype=like.dtype, device=like.device)


def tile_counts(h: int, w: int) -> tuple[int, int]:
    return -(-h // TILE_OUT), -(-w // TILE_OUT)


def input_transform_ref(x: torch.Tensor) -> torch.Tensor:
    """``x [N, C, H, W]`` -> ``V [36, C, N*TH*TW]``: ``B^T d B`` of each zero-padded 6x6 tile."""
    n, c, h, w = x.shape
    th, tw = tile_counts(h, w)
    padded = F.pad(x, [1, 1 + TILE_OUT * tw - w, 1, 1 + TILE_OUT * th - h])
    tiles = padded.unfold(2, TILE_IN, TILE_OUT).unfold(3, TILE_IN, TILE_OUT)  # [N, C, TH, TW, 6, 6]
    d = tiles.permute(4, 5, 1, 0, 2, 3).reshape(TAPS, c * n * th * tw)
    return (_kron(_BT, x) @ d).reshape(TAPS, c, n * th * tw)


def weight_transform(w: torch.Tensor) -> torch.Tensor:
    """``w [O, C, 3, 3]`` -> ``U [36, O, C]``: ``G g G^T`` of each filter (cheap; shared by both paths)."""
    o, c = w.shape[:2]
    return (_kron(_G, w) @ w.reshape(o * c, 9).t()).reshape(TAPS, o, c)


def output_transform_ref(m: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """``M [36, O, N*TH*TW]`` -> ``y [N, O, H, W]``: ``A^T m A`` of each tile, cropped to H x W."""
    o = m.shape[1]
    th, tw = tile_counts(h, w)
    y = (_kron(_AT, m) @ m.reshape(TAPS, -1)).reshape(TILE_OUT, TILE_OUT, o, n, th, tw)
    y = y.permute(3, 2, 4, 0, 5, 1).reshape(n, o, TILE_OUT * th, TILE_OUT * tw)
    return y[:, :, :h, :w]


def conv3x3_winograd_ref(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, w, padding=1)`` for 3x3 ``w``, through the Winograd transforms above."""
    n, _, h, width = x.shape
    m = torch.bmm(weight_transform(w), input_transform_ref(x))
    return output_transform_ref(m, n, h, width)
