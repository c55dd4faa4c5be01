"""Throughput of the augmentations on this machine: forward, and forward + R1-style double backward.

    .venv/bin/python benchmarks/augment.py [--res 64] [--batch 16]
"""

from __future__ import annotations

import argparse
import time

import torch

from fewshot.augment import build_augment


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.res, args.res) * 2 - 1
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    print(f"batch {args.batch} x {args.res}px, {torch.get_num_threads()} threads")
    for name, kwargs in [("none", {}), ("diffaug", {}), ("ada", {"pipeline": "bgc"}), ("ada", {"pipeline": "bgcfnc"})]:
        aug = build_augment(name, p=1.0, **kwargs)

        def forward(aug: torch.nn.Module = aug) -> None:
            with torch.no_grad():
                aug(x)

        def double_backward(aug: torch.nn.Module = aug) -> None:
            xr = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(conv(aug(xr)).sum(), xr, create_graph=True)
            g.square().sum().backward()

        f, d = timed(forward, args.repeats), timed(double_backward, args.repeats)
        label = name + (f"[{kwargs['pipeline']}]" if kwargs else "")
        print(f"{label:16s} forward {f * 1e3:7.1f} ms ({args.batch / f:7.0f} img/s)   fwd+double-bwd {d * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
