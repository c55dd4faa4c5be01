"""Foundation figures: CLI start-up, header reads, pickle import/convert, G/D forward on CPU.

Run: ``.venv/bin/python benchmarks/foundation.py [--threads N]``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    def cli(*argv: str) -> None:
        subprocess.run([sys.executable, "-m", "fewshot", *argv], check=True, capture_output=True)

    import resource

    rows: list[tuple[str, str]] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = timed(lambda: cli("--help"))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / 3
    rows.append(("`fewshot --help` (new process, no torch import)", f"{wall:.2f} s wall, {cpu:.2f} s CPU"))
    rows.append(("`python -c 'import torch'` for comparison",
                 f"{timed(lambda: subprocess.run([sys.executable, '-c', 'import torch'], check=True)):.2f} s"))

    import torch
    from official_format import make_official_pickle

    from fewshot.checkpoint import bundle_from_pickle, convert_pickle, read_header
    from fewshot.nets import Discriminator, Generator

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    G, D = Generator(512, 0, 512, 64, 3).eval(), Discriminator(0, 64, 3).eval()
    with tempfile.TemporaryDirectory() as tmp:
        src = make_official_pickle(Path(tmp) / "snap64.pkl", G=G, D=D, G_ema=G, augment_p=0.1)
        dst = Path(tmp) / "snap64.safetensors"
        size_mb = src.stat().st_size / 2**20
        rows.append((f"safe import of a 64 px default snapshot ({size_mb:.0f} MiB, G+D+G_ema)",
                     f"{timed(lambda: bundle_from_pickle(src), 1):.2f} s"))
        rows.append(("convert the same snapshot to a bundle", f"{timed(lambda: convert_pickle(src, dst), 1):.2f} s"))
        rows.append(("read_header of that bundle (no tensor data)", f"{timed(lambda: read_header(dst)) * 1e3:.1f} ms"))
        rows.append(("`fewshot info` on that bundle (new process)", f"{timed(lambda: cli('info', str(dst))):.2f} s"))

    z = torch.randn(4, 512)
    for name, fused in (("fused", True), ("non-fused", False)):
        def forward(fused: bool = fused) -> None:
            with torch.no_grad():
                G(z, None, noise_mode="const", fused_modconv=fused)
        forward()
        rows.append((f"G 64 px default, batch 4, {name} modconv", f"{timed(forward):.2f} s"))
    img = torch.randn(4, 3, 64, 64)

    def d_forward() -> None:
        with torch.no_grad():
            D(img, None)
    d_forward()
    rows.append(("D 64 px default, batch 4", f"{timed(d_forward):.2f} s"))

    print(f"torch {torch.__version__}, {args.threads} intra-op thread(s), CPU only\n")
    print("| step | time |\n|---|---:|")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
