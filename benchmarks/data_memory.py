"""Peak memory of reading an image set: held whole (``load_images``, training) vs streamed (``ImageStream``,
the metrics' reference set), each in its own process so the peaks do not mix.

Prints, for each way, the decoded images, the seconds and the peak resident memory above a process that
has only imported torch and fewshot.data (Linux ``ru_maxrss``). The default source is the 10k CelebA zip
of ``../shared/data`` at 128 px (469 MiB of uint8 pixels).

    .venv/bin/python benchmarks/data_memory.py [--source PATH] [--resolution 128] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "celeba-10k.zip"

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch  # noqa: F401
from fewshot.data import ImageStream, load_images
way, source, resolution, batch = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if way == "baseline":
    count = 0
elif way == "load_images":
    count = len(load_images(source, resolution, progress=False))
else:
    count = sum(chunk.shape[0] for chunk in ImageStream(source, resolution).chunks(batch))
print(json.dumps({"count": count, "seconds": time.perf_counter() - start,
                  "base_mib": base / 1024, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(way: str, source: Path, resolution: int, batch: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), way, str(source), str(resolution), str(batch)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder or zip of images")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64, help="images per streamed chunk")
    args = parser.parse_args()
    if not args.source.exists():
        raise SystemExit(f"{args.source} not found (pass --source)")
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs; source {args.source} at {args.resolution} px")
    baseline = measure("baseline", args.source, args.resolution, args.batch)["peak_mib"]
    print(f"process after importing torch + fewshot.data: {baseline:.0f} MiB")
    print(f"{'way':14s} {'images':>7s} {'seconds':>8s} {'peak MiB':>9s} {'above the process':>18s}")
    for way in ("load_images", "ImageStream"):
        r = measure(way, args.source, args.resolution, args.batch)
        print(f"{way:14s} {r['count']:7d} {r['seconds']:8.1f} {r['peak_mib']:9.0f} {r['peak_mib'] - baseline:18.0f}")
    pixels = 3 * args.resolution**2 / 2**20
    print(f"(the pixels themselves: {pixels:.3f} MiB per image)")


if __name__ == "__main__":
    main()
