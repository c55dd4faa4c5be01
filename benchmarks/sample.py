"""Sampling throughput: batched generation vs one seed per forward pass, with peak memory (CPU or CUDA).

Runs a 64 px generator with random weights through :func:`fewshot.synthesis.iter_sample_batches`, the path
``fewshot sample`` uses: ``--arch constructor`` is ``Generator(512, 0, 512, 64, 3)`` (8 mapping layers,
channel_base 32768, 27.0 M parameters), ``--arch auto`` what ``fewshot train --resolution 64`` builds
(train.py's ``--cfg auto``: 2 mapping layers, channel_base 16384). Prints images/s for each batch size and
the peak memory of each phase: on the CPU the peak resident memory of a fresh process that builds the same
generator and runs only that phase (sampled every millisecond; one process cannot separate its phases, since
the freed memory `fewshot sample` keeps for reuse stays resident), on CUDA the peak of torch's allocator. Each phase ends with the uint8 images on the host, as ``fewshot sample``
needs them, so GPU timings include the copy back.

Per-seed loops are timed when batch 1 is asked for:
- "1 (off.)": the official forward as the official generate.py runs it for each seed: the fused modulated
  conv with per-sample weights and, on the CPU, the plain-PyTorch reference ops with torch's direct
  convolutions (NVIDIA's CUDA plugins do not run on CPU tensors, so its bias_act and upfirdn2d fall back
  to their reference code there; fewshot's references compute the same functions the same way). On CUDA
  the official code runs its compiled plugins, so this row uses fewshot's compiled CUDA ops;
- "1 (fused)" (CPU only): the same fused forward on fewshot's compiled CPU ops and Winograd convolutions;
- "1": fewshot's own path for one image (on the CPU the non-fused conv with the weights' Winograd
  transforms kept, fewshot.cuda.derived).

    .venv/bin/python benchmarks/sample.py [--images 64] [--batches 1,8,16,32] [--rounds 3] [--arch auto] [--threads N] [--png] [--device cuda]

With ``--rounds R`` the phases run R times, interleaved (batch 1, 8, ..., batch 1, 8, ...), and each
batch size reports its fastest round: on a shared machine the other tenants slow some rounds down,
and interleaving keeps a slow spell from landing on one batch size only.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from fewshot import settings  # noqa: E402
from fewshot.image_output import encode_image  # noqa: E402
from fewshot.loading import prepare_device  # noqa: E402
from fewshot.nets import Generator  # noqa: E402
from fewshot.synthesis import iter_sample_batches  # noqa: E402


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def run_phase(G: Generator, seeds: list[int], batch: int, encode_png: bool,
              forward: str = "fewshot") -> tuple[float, float | None]:
    """Seconds for all seeds at this batch size, and the phase's peak memory in MiB (RSS, or CUDA allocator).

    ``forward``: "fewshot" (fewshot's choice for the device), "fused" (the official forward: fused modulated
    conv, per-sample weights) or "official" (the fused forward with the ops the official code has on this
    device: on the CPU the reference ops and direct convolutions)."""
    on_cuda = next(G.parameters()).device.type == "cuda"
    if forward != "fewshot":
        env = {"FEWSHOT_OPS": "reference", "FEWSHOT_WINOGRAD": "0"} if forward == "official" and not on_cuda else {}
        with mock.patch("fewshot.synthesis.inference_kwargs", lambda device: {}), mock.patch.dict(os.environ, env):
            return run_phase(G, seeds, batch, encode_png)
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _, images in iter_sample_batches(G, seeds, psi=0.7, noise_mode="const", batch_size=batch):
        if encode_png:
            for image in images:
                encode_image(image.permute(1, 2, 0).numpy(), "png")
    elapsed = time.perf_counter() - start
    return elapsed, (torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None)


def build_generator(arch: str) -> Generator:
    torch.manual_seed(0)
    if arch == "auto":
        G = Generator(512, 0, 512, 64, 3, mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 16384})
    else:
        G = Generator(512, 0, 512, 64, 3)
    G = G.eval().requires_grad_(False)
    G.mapping.w_avg.normal_()
    return G


def _phase_args(phase: int | str) -> tuple[int, str]:
    return (1, phase) if isinstance(phase, str) else (phase, "fewshot")


def peak_in_child(phase: int | str, args: argparse.Namespace) -> float | None:
    """Peak RSS in MiB of a fresh process that builds the generator and runs ``phase`` alone (two batches)."""
    command = [sys.executable, __file__, "--peak-of", str(phase), "--arch", args.arch]
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--png"] if args.png else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"peak of phase {phase}: the child failed: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return float(done.stdout.strip().splitlines()[-1])


class RssSampler(threading.Thread):
    """The largest resident set seen, read from /proc/self/statm every millisecond while the phase runs (torch
    releases the GIL in its kernels). ru_maxrss would also count building the generator, and VmHWM cannot be
    reset in every sandbox."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.read()
        self.done = threading.Event()

    def read(self) -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * self.page

    def run(self) -> None:
        while not self.done.wait(0.001):
            self.peak = max(self.peak, self.read())


def child_main(phase_text: str, args: argparse.Namespace) -> None:
    phase: int | str = int(phase_text) if phase_text.isdigit() else phase_text
    G = build_generator(args.arch)
    prepare_device(torch.device("cpu"))
    batch, forward = _phase_args(phase)
    sampler = RssSampler()
    sampler.start()
    run_phase(G, list(range(2 * batch)), batch, args.png, forward=forward)
    sampler.done.set()
    sampler.join()
    print(max(sampler.peak, sampler.read()) / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images per phase")
    parser.add_argument("--batches", default="1,8,16,32", help="batch sizes; 1 is the one-seed-at-a-time loop")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions; each batch size keeps its best")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--png", action="store_true", help="also encode each image as PNG (as `fewshot sample` does)")
    parser.add_argument("--arch", default="constructor", choices=("constructor", "auto"),
                        help="constructor: Generator(512, 0, 512, 64, 3) (cb 32768, 8 mapping layers); "
                             "auto: what `fewshot train --resolution 64` builds (cb 16384, 2 mapping layers)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--peak-of", default=None, help=argparse.SUPPRESS)  # internal: one phase's peak, in a child
    parser.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 convolutions (torch's cuDNN default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_of is not None:
        return child_main(args.peak_of, args)
    batches = [int(b) for b in args.batches.split(",")]

    G = build_generator(args.arch)
    params = sum(p.numel() for p in G.parameters())
    device_text = "no GPU used"
    if args.device == "cpu":
        prepare_device(torch.device("cpu"))  # as `fewshot sample` does: keep freed memory for reuse
    if args.device == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.benchmark = True
        G = G.cuda()
        device_text = f"GPU {torch.cuda.get_device_name()}, TF32 {'on' if args.tf32 else 'off'}"
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, ops {settings.ops_choice()}, {device_text}")
    print(f"generator: 64 px, {args.arch} config, {params:,} parameters; {args.images} images per phase, psi 0.7, "
          f"const noise"
          f"{', PNG encoding included' if args.png else ''}")
    baseline_rss = _status_kib("VmRSS")
    print(f"RSS after building G: {baseline_rss / 1024:.0f} MiB" if baseline_rss else "RSS: unavailable")

    # Phases: "official" and "fused" are one seed per forward through the fused forward (generate.py's loop),
    # with the official code's ops and with fewshot's; the numbers are fewshot's path at that batch size.
    per_seed_extra = ["official"] + ([] if args.device == "cuda" else ["fused"])
    phases: list[int | str] = (per_seed_extra if 1 in batches else []) + list(batches)

    def run(phase: int | str, seeds: list[int]) -> tuple[float, float | None]:
        batch, forward = _phase_args(phase)
        return run_phase(G, seeds, batch, args.png, forward=forward)

    for phase in phases:  # warm-up: first-call allocations, kept transforms, kernel selection (cuDNN)
        run(phase, list(range(1 if isinstance(phase, str) else phase)))
    seeds = list(range(args.images))
    results: dict[int | str, list[tuple[float, float | None]]] = {phase: [] for phase in phases}
    for _ in range(max(args.rounds, 1)):
        for phase in phases:
            results[phase].append(run(phase, seeds))
    if args.device == "cpu":
        for phase in phases:
            results[phase].append((float("inf"), peak_in_child(phase, args)))
    rates: dict[int | str, float] = {}
    print(f"{'batch':>9} {'seconds':>9} {'images/s':>9} {'peak MiB':>9} {'vs official':>12} {'vs batch 1':>11}"
          + ("   all rounds (s)" if args.rounds > 1 else ""))
    for phase in phases:
        elapsed = min(t for t, _ in results[phase])
        peaks = [p for _, p in results[phase] if p is not None]
        rates[phase] = args.images / elapsed
        vs_official = f"{rates[phase] / rates['official']:.2f}x" if "official" in rates else "-"
        vs_one = f"{rates[phase] / rates[1]:.2f}x" if 1 in rates else "-"
        peak_text = f"{max(peaks):.0f}" if peaks else "n/a"
        timed = [t for t, _ in results[phase] if t != float("inf")]
        rounds_text = "   " + " ".join(f"{t:.2f}" for t in timed) if args.rounds > 1 else ""
        label = {"official": "1 (off.)", "fused": "1 (fused)"}.get(str(phase), str(phase))
        print(f"{label:>9} {elapsed:>9.2f} {rates[phase]:>9.2f} {peak_text:>9} {vs_official:>12} {vs_one:>11}"
              f"{rounds_text}")
    batched = [b for b in batches if b != 1]
    if 1 in rates and batched:
        best = max(batched, key=lambda b: rates[b])
        fused = f", {rates[best] / rates['fused']:.2f}x the fused forward on fewshot's ops" if "fused" in rates else ""
        print(f"best batched: batch {best}, {rates[best]:.2f} images/s = {rates[best] / rates['official']:.2f}x the "
              f"official per-seed loop{fused}, {rates[best] / rates[1]:.2f}x fewshot's own per-seed loop")


if __name__ == "__main__":
    main()
