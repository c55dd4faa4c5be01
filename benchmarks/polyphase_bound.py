"""How much a polyphase Winograd could win on the resampling convolutions: an upper bound, measured.

The last CPU lever named for issue 26. A stride-2 3x3 convolution (the discriminator's downsampling, after its
blur) splits by input phase into four sub-convolutions of the half-resolution phase images with the 2x2, 2x1, 1x2
and 1x1 sub-kernels; padding all four to 2x2 makes it one 2x2 "valid" convolution of ``[N, 4·C, h+1, h+1]``, which
Winograd F(m x m, 2 x 2) runs as ``(m+1)^2`` GEMMs ``[O, 4·C] @ [4·C, tiles]`` summed over the phases inside the
GEMM: 9 multiplies per output and input channel become ``4·(m+1)^2/m^2`` (6.25 for m=4, 5.44 for m=6, 5.06 for
m=8). The generator's transposed convolution is the adjoint structure (four output phases, GEMMs ``[4·O, C] @ [C, tiles]``)
with the same counts; its rows time those GEMMs and ``F.conv_transpose2d``.

The script:
- builds the transforms (Toom-Cook on points 0, ±1, ±2, ±1/2, ... and infinity) and checks the polyphase Winograd
  against ``F.conv2d(x, w, stride=2)`` in float64, so the counts above belong to a correct formulation;
- times, float32, best of ``--repeats``, with training's malloc settings, at the side-by-side configs' shapes:
  oneDNN's direct convolution forward + backward (input and weight gradients) against the polyphase form's GEMMs
  alone (``bmm`` forward, and the two ``bmm`` of its backward). The GEMMs alone are a bound: a real kernel adds
  the tile transforms and their adjoints on top. As a floor for those, it times fewshot's compiled F(4x4, 3x3)
  transforms (forward and adjoint) on an input with the same element count as the phase stack: the F(m, 2)
  transforms touch ``(m+1)^2/m^2`` elements per output pixel against F(4x4, 3x3)'s 36/16, so this overstates
  their cost for m=4 by 1.44x; the printout scales it down by that ratio.

    .venv/bin/python benchmarks/polyphase_bound.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from fractions import Fraction

import torch
import torch.nn.functional as F

from fewshot.host_memory import keep_freed_memory

# (label, transposed, N, C, O, h): the resampling convolutions of the side-by-side configs, h the low-resolution size
# (D's output, G's input).
LAYERS = [
    ("64 px small: D 64->32", False, 8, 128, 256, 32),
    ("64 px small: D 32->16", False, 8, 256, 256, 16),
    ("64 px small: D 16->8", False, 8, 256, 256, 8),
    ("64 px small: G 32->64", True, 8, 256, 128, 32),
    ("64 px small: G 16->32", True, 8, 256, 256, 16),
    ("64 px small: G 8->16", True, 8, 256, 256, 8),
    ("32 px: D 32->16", False, 16, 128, 128, 16),
    ("32 px: D 16->8", False, 16, 128, 128, 8),
    ("32 px: G 16->32", True, 16, 128, 128, 16),
    ("32 px: G 8->16", True, 16, 128, 128, 8),
]


def toom_cook(m: int, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``AT [m, n], G [n, r], BT [n, n]`` of Winograd F(m, r) (correlation), n = m + r - 1, exact rationals.

    Linear convolution c = g * h of lengths r and m is ``Vinv ((Vr g) . (Vm h))`` with Vandermonde matrices on
    n - 1 finite points and infinity; correlation is its transpose: ``y = Vm^T diag(Vr g) Vinv^T d``.
    """
    n = m + r - 1
    points: list[Fraction] = [Fraction(0)]
    k = 1
    while len(points) < n - 1:
        for p in (Fraction(k), Fraction(-k), Fraction(1, k + 1), Fraction(-1, k + 1)):
            if len(points) < n - 1 and p not in points:
                points.append(p)
        k += 1

    def vandermonde(cols: int) -> list[list[Fraction]]:
        rows = [[p**j for j in range(cols)] for p in points]
        return rows + [[Fraction(int(j == cols - 1)) for j in range(cols)]]  # infinity: the leading coefficient

    vn = vandermonde(n)
    inverse = _invert(vn)
    to_tensor = lambda rows: torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)  # noqa: E731
    at = to_tensor(vandermonde(m)).T.contiguous()
    g = to_tensor(vandermonde(r))
    bt = to_tensor(inverse).T.contiguous()
    return at, g, bt


def _invert(a: list[list[Fraction]]) -> list[list[Fraction]]:
    n = len(a)
    aug = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(a)]
    for col in range(n):
        pivot = next(i for i in range(col, n) if aug[i][col] != 0)
        aug[col], aug[pivot] = aug[pivot], aug[col]
        scale = aug[col][col]
        aug[col] = [v / scale for v in aug[col]]
        for i in range(n):
            if i != col and aug[i][col] != 0:
                factor = aug[i][col]
                aug[i] = [v - factor * p for v, p in zip(aug[i], aug[col], strict=True)]
    return [row[n:] for row in aug]


def phase_stack(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [N, C, 2h+1, 2h+1], w [O, C, 3, 3]`` -> ``X4 [N, 4C, h+1, h+1], W4 [O, 4C, 2, 2]`` with
    ``conv2d(X4, W4) == conv2d(x, w, stride=2)``."""
    n, c, size, _ = x.shape
    half = (size + 1) // 2
    xs, ws = [], []
    for py in range(2):
        for px in range(2):
            xp = x[:, :, py::2, px::2]
            xs.append(F.pad(xp, (0, half - xp.shape[3], 0, half - xp.shape[2])))
            wp = w[:, :, py::2, px::2]
            ws.append(F.pad(wp, (0, 2 - wp.shape[3], 0, 2 - wp.shape[2])))
    return torch.cat(xs, 1), torch.cat(ws, 1)


def polyphase_winograd(x: torch.Tensor, w: torch.Tensor, m: int) -> torch.Tensor:
    """The stride-2 3x3 convolution as F(m x m, 2 x 2) on the phase stack (reference, any dtype)."""
    at, g, bt = (t.to(x.dtype) for t in toom_cook(m, 2))
    x4, w4 = phase_stack(x, w)
    n, c4, size, _ = x4.shape
    h = size - 1
    tiles = -(-h // m)
    x4 = F.pad(x4, (0, tiles * m + 1 - size, 0, tiles * m + 1 - size))
    d = x4.unfold(2, m + 1, m).unfold(3, m + 1, m)  # [N, 4C, T, T, m+1, m+1]
    v = torch.einsum("ai,nctsij,bj->abcnts", bt, d, bt).reshape((m + 1) ** 2, c4, -1)
    u = torch.einsum("ai,ocij,bj->aboc", g, w4, g).reshape((m + 1) ** 2, w4.shape[0], c4)
    prod = torch.bmm(u, v).reshape(m + 1, m + 1, -1, n, tiles, tiles)
    y = torch.einsum("ia,abonts,jb->notsij", at, prod, at)  # [N, O, T, T, m, m]
    y = y.permute(0, 1, 2, 4, 3, 5).reshape(n, -1, tiles * m, tiles * m)
    return y[:, :, :h, :h]


def best(fn: Callable[[], object], repeats: int) -> float:
    fn()
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        fastest = min(fastest, time.perf_counter() - start)
    return fastest


def check() -> float:
    torch.manual_seed(0)
    worst = 0.0
    for m in (4, 6, 8):
        for h in (5, 8, 13):
            x = torch.randn(2, 3, 2 * h + 1, 2 * h + 1, dtype=torch.float64)
            w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
            want = F.conv2d(x, w, stride=2)
            got = polyphase_winograd(x, w, m)
            err = float((got - want).abs().max() / want.abs().max())
            if err > 1e-10:
                raise AssertionError(f"polyphase F({m}, 2) at h={h} is off by {err:.2e}")
            worst = max(worst, err)
    return worst


def gemms(points: int, rows: int, inner: int, tiles: int, repeats: int) -> float:
    """Forward ``M = U V`` and backward ``dV = U^T dM``, ``dU = dM V^T`` of the Winograd-domain products."""
    u = torch.randn(points, rows, inner)
    v = torch.randn(points, inner, tiles)
    dm = torch.randn(points, rows, tiles)
    return best(lambda: (torch.bmm(u, v), torch.bmm(u.transpose(1, 2), dm), torch.bmm(dm, v.transpose(1, 2))), repeats)


def time_layer(module, label: str, transposed: bool, n: int, c: int, o: int, h: int, repeats: int) -> str:
    """One printed row: the direct convolution against the polyphase form's GEMMs (and their transform floor)."""
    if transposed:  # G: [N, C, h, h] -> [N, O, 2h+1, 2h+1]; GEMM rows are the 4 output phases
        x = torch.randn(n, c, h, h, requires_grad=True)
        w = torch.randn(c, o, 3, 3, requires_grad=True)
        g = torch.randn(n, o, 2 * h + 1, 2 * h + 1)
        conv = lambda: F.conv_transpose2d(x, w, stride=2)  # noqa: E731
        rows, inner, stack_in, stack_out = 4 * o, c, c, 4 * o
    else:  # D: [N, C, 2h+1, 2h+1] -> [N, O, h, h]; GEMM inner dimension is the 4 input phases
        x = torch.randn(n, c, 2 * h + 1, 2 * h + 1, requires_grad=True)
        w = torch.randn(o, c, 3, 3, requires_grad=True)
        g = torch.randn(n, o, h, h)
        conv = lambda: F.conv2d(x, w, stride=2)  # noqa: E731
        rows, inner, stack_in, stack_out = o, 4 * c, 4 * c, o
    direct = best(lambda: torch.autograd.grad(conv(), (x, w), g), repeats)
    parts = [f"{label:22s} direct {direct * 1e3:6.1f}"]
    gemm_times = {}
    for m in (4, 6):
        points = (m + 1) ** 2
        gemm_times[m] = gemms(points, rows, inner, n * (-(-h // m)) ** 2, repeats)
        parts.append(f"F({m},2) GEMMs {gemm_times[m] * 1e3:6.1f} ({direct / gemm_times[m]:.2f}x)")
    # Floor for the transforms: fewshot's compiled F(4x4,3x3) input/output transforms and adjoints on stacks of
    # the same element and tile counts, scaled by the F(4,2)/F(4,3) element ratio (25/36).
    x_stack = torch.randn(n, stack_in, h, h)
    v_stack = module.winograd_input(x_stack)
    m_stack = torch.randn(v_stack.shape[0], stack_out, v_stack.shape[2])
    y_stack = module.winograd_output(m_stack, n, h, h)
    transforms = best(lambda: (module.winograd_input(x_stack), module.winograd_input_t(v_stack, n, h, h),
                               module.winograd_output(m_stack, n, h, h), module.winograd_output_t(y_stack)),
                      repeats) * 25 / 36
    total = gemm_times[4] + transforms
    parts.append(f"F(4,2) GEMMs + transform floor {total * 1e3:6.1f} ({direct / total:.2f}x)")
    return " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    keep_freed_memory()
    print(f"polyphase Winograd exact in float64: worst relative error {check():.1e}")
    from fewshot.cuda.build import compiled_module

    module = compiled_module("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; times in ms, forward + backward")
    for layer in LAYERS:
        print(time_layer(module, *layer, args.repeats), flush=True)


if __name__ == "__main__":
    main()
