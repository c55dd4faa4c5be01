"""3x3 convolutions on the CPU: torch's direct convolution (oneDNN) vs fewshot's Winograd F(4x4, 3x3).

For the layer shapes of the 64 px networks, times the forward alone and forward + backward (input
and weight gradients) of ``F.conv2d(x, w, padding=1)`` and of ``conv3x3_winograd_compiled``, side
by side in one process, and prints the float32 error of both against a float64 convolution.

    .venv/bin/python benchmarks/winograd.py [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fewshot.cuda import build  # noqa: E402
from fewshot.cuda.winograd import conv3x3_winograd_compiled  # noqa: E402
from fewshot.host_memory import keep_freed_memory  # noqa: E402

SHAPES = [  # (batch, in channels, out channels, size)
    (4, 512, 512, 64), (1, 512, 512, 64), (4, 512, 512, 32), (4, 512, 512, 16),
    (4, 256, 256, 64), (4, 128, 128, 64), (4, 128, 128, 32), (4, 64, 64, 64), (4, 512, 512, 8),
    (16, 512, 512, 8), (2, 512, 512, 16),
]


def best(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as fewshot train / sample do on the CPU
    module = build.get_state("cpu").module
    if module is None:
        raise SystemExit("compiled CPU ops unavailable")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, float32")
    print(f"{'N x C -> O @ size':22s} {'fwd direct':>11s} {'fwd wino':>9s} {'x':>6s} "
          f"{'f+b direct':>11s} {'f+b wino':>9s} {'x':>6s} {'err direct':>11s} {'err wino':>9s}")
    gen = torch.Generator().manual_seed(0)
    for n, c, o, size in SHAPES:
        x = torch.randn(n, c, size, size, generator=gen)
        w = torch.randn(o, c, 3, 3, generator=gen) / (3 * c**0.5)
        g = torch.randn(n, o, size, size, generator=gen)
        want = F.conv2d(x.double(), w.double(), padding=1)

        def direct(a, b):
            return F.conv2d(a, b, padding=1)

        def wino(a, b):
            return conv3x3_winograd_compiled(module, a, b)

        errs = [((fn(x, w).double() - want).norm() / want.norm()).item() for fn in (direct, wino)]
        with torch.no_grad():
            fwd = [best(lambda fn=fn, x=x, w=w: fn(x, w), args.repeats) for fn in (direct, wino)]
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        both = [best(lambda fn=fn, a=xg, b=wg, g=g: torch.autograd.grad(fn(a, b), (a, b), g), args.repeats)
                for fn in (direct, wino)]
        print(f"{n} x {c} -> {o} @ {size:<3d}        {fwd[0] * 1e3:9.0f}ms {fwd[1] * 1e3:7.0f}ms {fwd[0] / fwd[1]:5.2f}x "
              f"{both[0] * 1e3:9.0f}ms {both[1] * 1e3:7.0f}ms {both[0] / both[1]:5.2f}x {errs[0]:11.1e} {errs[1]:9.1e}")


if __name__ == "__main__":
    main()
