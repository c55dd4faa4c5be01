"""Cost of each transfer method in one G+D training step (non-saturating loss, Adam), plus AdaFM export.

Run: .venv/bin/python benchmarks/transfer_step.py [--res 64] [--batch 4] [--steps 5] [--threads 1]
Prints, per method: trainable G / D parameters and the median step time on this machine's CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from fewshot.nets import Discriminator, Generator
from fewshot.transfer import build_transfer

METHODS = [
    ("finetune", {}),
    ("freezed", {"freeze_d": 2}),
    ("general-part", {}),
    ("general-part", {"specific": "reinit"}),
    ("adafm", {}),
]


def step_times(method: str, options: dict, args: argparse.Namespace) -> tuple[int, int, float]:
    torch.manual_seed(0)
    G = Generator(args.z_dim, 0, args.z_dim, args.res, 3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": args.channel_base, "channel_max": args.channel_max})
    D = Discriminator(0, args.res, 3, channel_base=args.channel_base, channel_max=args.channel_max)
    t = build_transfer(method, **options)
    t.apply(G, D)
    opt_G = torch.optim.Adam(t.trainable_parameters(G), lr=0.002, betas=(0.0, 0.99))
    opt_D = torch.optim.Adam(t.trainable_parameters(D), lr=0.002, betas=(0.0, 0.99))
    times = []
    for i in range(args.steps + 1):
        z = torch.randn([args.batch, args.z_dim])
        real = torch.rand([args.batch, 3, args.res, args.res]) * 2 - 1
        start = time.perf_counter()
        loss_D = F.softplus(D(G(z).detach())).mean() + F.softplus(-D(real)).mean()
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        loss_G = F.softplus(-D(G(z))).mean()
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()
        if i > 0:  # the first step pays one-time allocation costs
            times.append(time.perf_counter() - start)
    n_G = sum(p.numel() for p in t.trainable_parameters(G))
    n_D = sum(p.numel() for p in t.trainable_parameters(D))
    return n_G, n_D, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channel-base", type=int, default=4096)
    parser.add_argument("--channel-max", type=int, default=256)
    parser.add_argument("--z-dim", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.res}px, channel_base {args.channel_base}, channel_max {args.channel_max}, batch {args.batch}, "
          f"{args.threads} thread(s), median of {args.steps} steps")
    print(f"{'method':32} {'G trainable':>12} {'D trainable':>12} {'step ms':>9}")
    for method, options in METHODS:
        n_G, n_D, seconds = step_times(method, options, args)
        label = method + ("".join(f" {k}={v}" for k, v in options.items()))
        print(f"{label:32} {n_G:>12,} {n_D:>12,} {seconds * 1000:>9.0f}")

    torch.manual_seed(0)
    G = Generator(args.z_dim, 0, args.z_dim, args.res, 3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": args.channel_base, "channel_max": args.channel_max})
    t = build_transfer("adafm")
    t.apply(G, None)
    start = time.perf_counter()
    t.export_generator(G)
    print(f"adafm export (fold + rebuild plain G): {(time.perf_counter() - start) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
