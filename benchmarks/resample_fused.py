"""The resampling convolutions with their blur folded in, as one 3x3 Winograd convolution, against the current path.

StyleGAN2's upsampling convolution is a stride-2 transposed 3x3 convolution followed by a 4x4 FIR; the composite is
linear and shift-equivariant with period 2, so each of the four output phases is a plain 3x3 convolution of the
low-resolution input. Stacking the phases as output channels makes it ``pixel_shuffle(conv3x3(x, W4), 2)`` with
``W4 [4·O, C, 3, 3]``, which fewshot's Winograd path can run. The downsampling one (FIR, then a stride-2 3x3
convolution) is likewise ``conv3x3(pixel_unshuffle(x, 2), W4)`` with ``W4 [O, 4·C, 3, 3]``. The phase weights are a
fixed linear map of the 3x3 weight, read off the current path's response to impulses, so they follow its padding
and flip conventions exactly.

This was tried for issue 26 and not adopted: the folded form has 4x the direct convolution's outputs (or inputs) at
Winograd's quarter of the multiplications, i.e. the same multiply count, so the tile transforms and the shuffles
are pure extra (BENCHMARKS.md, issue 26, round 4). The script checks the folded form in float64 and times forward
+ backward (input and weight gradients) of both, float32, best of 5, at the 64 px small network's shapes, with
training's malloc settings (``fewshot.host_memory``).

    .venv/bin/python benchmarks/resample_fused.py [--batch 16]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from fewshot.cuda import conv2d_resample, setup_filter
from fewshot.cuda.winograd import conv3x3
from fewshot.host_memory import keep_freed_memory

ONE_HOT_TAPS = torch.eye(9, dtype=torch.float64).reshape(9, 1, 3, 3)  # 9 filters, each one tap of a 3x3 kernel


def up_phase_map(f: torch.Tensor) -> torch.Tensor:
    """``P [36, 9]``: the 3x3 tap k of the upsampling convolution -> tap (sy, sx) of output phase (a, b)."""
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = 1
    y = conv2d_resample(x, ONE_HOT_TAPS, f=f.double(), up=2, padding=1, flip_weight=False)[0]  # [9, 10, 10]
    # y[2j + a] = sum_s K_a[s] x[j + s - 1] with the impulse at 2: K_a[s] = y[2 (3 - s) + a].
    rows = [y[:, 2 * (3 - sy) + a, 2 * (3 - sx) + b] for a in range(2) for b in range(2) for sy in range(3)
            for sx in range(3)]
    if abs(sum(float(r.abs().sum()) for r in rows) - float(y.abs().sum())) > 1e-12 * float(y.abs().sum()):
        raise AssertionError("the upsampling composite reaches beyond a 3x3 neighbourhood per phase")
    return torch.stack(rows)


def down_phase_map(f: torch.Tensor) -> torch.Tensor:
    """``P [9, 36]``: the 3x3 tap k of the downsampling convolution -> tap (sy, sx) of input phase (py, px)."""
    columns = torch.zeros(9, 2, 2, 3, 3, dtype=torch.float64)
    for py in range(2):
        for px in range(2):
            x = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
            x[0, 0, 6 + py, 6 + px] = 1  # phase (py, px), position 3 of the half-resolution phase image
            y = conv2d_resample(x, ONE_HOT_TAPS, f=f.double(), down=2, padding=1)[0]  # [9, 6, 6]
            columns[:, py, px] = y[:, 2:5, 2:5].flip([1, 2])  # y[i] = sum_s W[s] x_p[i + s - 1]: tap s at i = 4 - s
            if abs(float(columns[:, py, px].abs().sum()) - float(y.abs().sum())) > 1e-12 * float(y.abs().sum()):
                raise AssertionError("the downsampling composite reaches beyond a 3x3 neighbourhood per phase")
    return columns.reshape(9, 36)


def up_folded(x: torch.Tensor, w: torch.Tensor, phase_map: torch.Tensor) -> torch.Tensor:
    o, c = w.shape[:2]
    w4 = (w.reshape(o * c, 9) @ phase_map.t().to(w.dtype)).reshape(o, c, 4, 3, 3).transpose(1, 2)
    return F.pixel_shuffle(conv3x3(x, w4.reshape(4 * o, c, 3, 3)), 2)


def down_folded(x: torch.Tensor, w: torch.Tensor, phase_map: torch.Tensor) -> torch.Tensor:
    o, c = w.shape[:2]
    w4 = (w.reshape(o * c, 9) @ phase_map.to(w.dtype)).reshape(o, 4 * c, 3, 3)  # unshuffled channel = c·4 + phase
    return conv3x3(F.pixel_unshuffle(x, 2), w4)


def forward_backward_seconds(fn, x: torch.Tensor, w: torch.Tensor, rounds: int = 5) -> float:
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    best = float("inf")
    for _ in range(rounds + 1):  # the first is a warm-up
        start = time.perf_counter()
        y = fn(x, w)
        torch.autograd.grad(y, [x, w], torch.ones_like(y))
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    keep_freed_memory()  # as in training: freed blocks reused, no fresh pages per call
    f = setup_filter([1, 3, 3, 1])
    up_map, down_map = up_phase_map(f), down_phase_map(f)

    x, w = torch.randn(2, 5, 8, 8, dtype=torch.float64), torch.randn(6, 5, 3, 3, dtype=torch.float64)
    up_error = (up_folded(x, w, up_map) - conv2d_resample(x, w, f=f.double(), up=2, padding=1, flip_weight=False))
    down_error = down_folded(x, w, down_map) - conv2d_resample(x, w, f=f.double(), down=2, padding=1)
    print(f"float64 max difference from the current path: up {up_error.abs().max():.1e}, "
          f"down {down_error.abs().max():.1e}")

    print(f"\n| layer (batch {args.batch}) | current path | blur folded in | ratio |\n|---|---:|---:|---:|")
    for c, o, size in [(256, 256, 4), (256, 256, 8), (256, 256, 16), (256, 128, 32)]:
        x, w = torch.randn(args.batch, c, size, size), torch.randn(o, c, 3, 3) * 0.05
        now = forward_backward_seconds(lambda x, w: conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=False),
                                       x, w)
        folded = forward_backward_seconds(lambda x, w: up_folded(x, w, up_map), x, w)
        print(f"| G up {c} -> {o}, {size} -> {2 * size} px | {now * 1e3:.1f} ms | {folded * 1e3:.1f} ms | "
              f"{now / folded:.2f}x |", flush=True)
    for c, o, size in [(128, 256, 64), (256, 256, 32), (256, 256, 16), (256, 256, 8)]:
        x, w = torch.randn(args.batch, c, size, size), torch.randn(o, c, 3, 3) * 0.05
        now = forward_backward_seconds(lambda x, w: conv2d_resample(x, w, f=f, down=2, padding=1), x, w)
        folded = forward_backward_seconds(lambda x, w: down_folded(x, w, down_map), x, w)
        print(f"| D down {c} -> {o}, {size} -> {size // 2} px | {now * 1e3:.1f} ms | {folded * 1e3:.1f} ms | "
              f"{now / folded:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
