"""Image files per second: encoding and writing PNGs inline vs on ImageWriter's threads (CPU).

``fewshot sample`` hands each finished image to :class:`fewshot.image_output.ImageWriter`, which
encodes and writes it on a few threads while the generator runs the next batch. This times the
writing side alone, for images the size of real generators' output, with ``writers=0`` (inline, one
after the other, as the official generate.py does) and with 1, 2, ... threads. The images are smooth
random fields with a little noise (upsampled 16x16 noise + 2 levels of grain), so they compress
like photographs rather than like white noise.

    .venv/bin/python benchmarks/image_writer.py [--sizes 256,1024] [--count 32] [--writers 0,1,2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fewshot.image_output import ImageWriter, default_writers  # noqa: E402


def photo_like(count: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(count, 3, 16, 16, generator=gen), size=(size, size), mode="bicubic",
                           align_corners=False)
    grain = torch.randint(0, 3, (count, 3, size, size), generator=gen).float() / 255
    return ((smooth + grain).clamp(0, 1) * 255).to(torch.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024")
    parser.add_argument("--count", type=int, default=32, help="images per measurement")
    parser.add_argument("--writers", default=None, help="thread counts to compare (default: 0, 1 and the default)")
    args = parser.parse_args()
    counts = [int(w) for w in args.writers.split(",")] if args.writers else sorted({0, 1, default_writers()})
    print(f"{os.cpu_count()} CPUs, default writers {default_writers()}; {args.count} PNGs per row, best of 2")
    print(f"{'size':>6} {'writers':>8} {'seconds':>8} {'images/s':>9} {'vs inline':>10}")
    for size in (int(s) for s in args.sizes.split(",")):
        images = photo_like(args.count, size)
        base = None
        for writers in counts:
            best = float("inf")
            for _ in range(2):
                with tempfile.TemporaryDirectory() as tmp:
                    start = time.perf_counter()
                    with ImageWriter(writers) as writer:
                        for i, image in enumerate(images):
                            writer.submit(image, Path(tmp) / f"{i:05d}.png", "png")
                    best = min(best, time.perf_counter() - start)
            rate = args.count / best
            base = base or rate
            print(f"{size:>6} {writers:>8} {best:>8.2f} {rate:>9.1f} {rate / base:>9.2f}x")


if __name__ == "__main__":
    main()
