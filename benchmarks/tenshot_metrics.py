"""Seconds for the ten-shot metrics (swd, intra-lpips, copies) of N generated images against 10 training images.

Times the metrics alone, through ``compute_metrics_of_images`` (the route of ``fewshot metrics --fake``), on
synthetic uint8 images (no generator), with an LPIPS-VGG whose trunk has random weights (the same cost as the real
VGG-16 file, which this machine may not have). One metric per call, after one untimed warm-up call.

    .venv/bin/python benchmarks/tenshot_metrics.py --n 1000 --resolution 64
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F


def synthetic(n: int, res: int, seed: int) -> torch.Tensor:
    """Images with structure at several scales, uint8 [n, 3, res, res]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, res, res)
    for octave in (4, 8, 16):
        x += F.interpolate(torch.randn(n, 3, octave, octave, generator=g), size=res, mode="bilinear",
                           align_corners=False) * (16 / octave)
    return (128 + 24 * x).round().clamp(0, 255).to(torch.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="generated images (the CDC papers: 1000)")
    parser.add_argument("--n-real", type=int, default=10, help="training images")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--metrics", default="swd,intra-lpips,copies")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from fewshot.metrics import compute_metrics_of_images
    from fewshot.metrics._networks import LPIPS
    from fewshot.perceptual import load_lpips

    reals = synthetic(args.n_real, args.resolution, seed=0)
    # Half near-copies of the training images, half new pictures: every code path of copies runs.
    copies = reals.repeat(-(-args.n // 2 // args.n_real), 1, 1, 1)[: args.n // 2]
    fakes = torch.cat([copies, synthetic(args.n - len(copies), args.resolution, seed=1)])
    extractors = {LPIPS: load_lpips(random_trunk=True)}
    kwargs = dict(batch_size=args.batch, use_cache=False, progress=False, extractors=extractors)
    compute_metrics_of_images(fakes[:8], reals, metrics=args.metrics, **kwargs)  # warm-up

    print(f"{args.n} generated vs {args.n_real} training images at {args.resolution} px, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    for name in args.metrics.split(","):
        started = time.perf_counter()
        result = compute_metrics_of_images(fakes, reals, metrics=name, **kwargs)
        seconds = time.perf_counter() - started
        headline = {k: round(v, 4) for k, v in result.items() if isinstance(v, float) and k.startswith(name[:4])}
        print(f"{name:<12} {seconds:8.1f} s   {headline}")


if __name__ == "__main__":
    main()
