"""Compiled ops vs the plain-PyTorch references: forward+backward time and peak memory (CPU or CUDA).

Prints one table, both implementations side by side, for StyleGAN2-typical shapes. Peak memory
is the rise of the process's peak resident set during one forward+backward above what the inputs
already hold, measured in a fresh subprocess per case and implementation (large CPU tensors are
mmap-backed and returned on free, so the peak RSS is the allocator's true peak).
On CUDA (``--device cuda``) the times are medians over device-synchronised repeats and the memory is
the peak of torch's CUDA allocator above the inputs, also in float16 (the fp16 layers of a GPU run).
Run: .venv/bin/python benchmarks/ops.py [--repeats N] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from fewshot.cuda import build as ops_build
from fewshot.cuda.bias_act_compiled import bias_act_compiled
from fewshot.cuda.bias_act_ref import bias_act_ref
from fewshot.cuda.upfirdn2d_compiled import upfirdn2d_compiled
from fewshot.cuda.upfirdn2d_ref import setup_filter, upfirdn2d_ref


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM (the peak resident set) to the current size.
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory_bytes(case: int, impl: str, threads: int) -> int:
    """Peak extra memory of one forward+backward, in a fresh process so earlier cases do not mask it."""
    cmd = [sys.executable, __file__, "--measure-memory", str(case), impl, "--threads", str(threads)]
    # A fixed mmap threshold: every large tensor is mmap-backed and unmapped on free, so the peak RSS is exact.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return int(out.strip().splitlines()[-1])


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def best_seconds(step: Callable[[], None], repeats: int, device: str = "cpu") -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    if device == "cuda":
        return sorted(times)[len(times) // 2]
    return min(times)  # the machine is shared: the minimum is the least disturbed run


def cuda_peak_bytes(step: Callable[[], None]) -> int:
    step()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def make_step(op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        xi = x.detach().requires_grad_()
        y = op(xi)
        y.backward(torch.ones_like(y))

    return step


def build_cases(device: str = "cpu") -> list[tuple[str, list[int], Callable, Callable]]:
    state = ops_build.get_state(device)
    if state.module is None:
        raise SystemExit(f"compiled {device} ops unavailable: {state.reason}")
    ops = state.module
    f = setup_filter([1, 3, 3, 1], device=device)
    cases = []
    for shape in ([16, 512, 32, 32], [16, 128, 128, 128]):
        b = torch.randn(shape[1], device=device, requires_grad=True)
        cases.append((
            f"bias_act lrelu {shape}",
            shape,
            lambda x, b=b: bias_act_ref(x, b.to(x.dtype), act="lrelu"),
            lambda x, b=b: bias_act_compiled(ops, x, b.to(x.dtype), act="lrelu"),
        ))
    cases.append((
        "upfirdn2d up=2 [1,3,3,1] [16,256,32,32]",
        [16, 256, 32, 32],
        lambda x: upfirdn2d_ref(x, f, up=2, padding=[2, 1, 2, 1], gain=4),
        lambda x: upfirdn2d_compiled(ops, x, f, up=2, padding=[2, 1, 2, 1], gain=4),
    ))
    cases.append((
        "upfirdn2d down=2 [1,3,3,1] [16,128,64,64]",
        [16, 128, 64, 64],
        lambda x: upfirdn2d_ref(x, f, down=2, padding=1),
        lambda x: upfirdn2d_compiled(ops, x, f, down=2, padding=1),
    ))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: stable on a shared CPU)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--measure-memory", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.device == "cuda":
        main_cuda(args.repeats)
        return
    cases = build_cases()
    if args.measure_memory:
        index, impl = int(args.measure_memory[0]), args.measure_memory[1]
        _, shape, ref_op, comp_op = cases[index]
        x = torch.randn(shape)
        step = make_step(ref_op if impl == "ref" else comp_op, x)
        step()  # warm-up: first-touch of the allocator and the kernels' lazy state
        _reset_peak_rss()
        before = _peak_rss_bytes()
        step()
        print(_peak_rss_bytes() - before)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward+backward")
    header = f"{'case':<42} {'ref ms':>8} {'comp ms':>8} {'speedup':>8} {'ref MiB':>8} {'comp MiB':>8}"
    print(header)
    print("-" * len(header))
    for index, (name, shape, ref_op, comp_op) in enumerate(cases):
        x = torch.randn(shape)
        ref_step, comp_step = make_step(ref_op, x), make_step(comp_op, x)
        t_ref, t_comp = best_seconds(ref_step, args.repeats), best_seconds(comp_step, args.repeats)
        m_ref, m_comp = peak_memory_bytes(index, "ref", args.threads), peak_memory_bytes(index, "comp", args.threads)
        print(
            f"{name:<42} {t_ref * 1e3:8.1f} {t_comp * 1e3:8.1f} {t_ref / t_comp:7.2f}x "
            f"{m_ref / 2**20:8.1f} {m_comp / 2**20:8.1f}"
        )


def main_cuda(repeats: int) -> None:
    cases = build_cases("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, forward+backward, median of {repeats}")
    header = f"{'case':<42} {'dtype':>8} {'ref ms':>8} {'comp ms':>8} {'speedup':>8} {'ref MiB':>8} {'comp MiB':>8}"
    print(header)
    print("-" * len(header))
    for name, shape, ref_op, comp_op in cases:
        for dtype in (torch.float32, torch.float16):
            x = torch.randn(shape, device="cuda").to(dtype)
            ref_step, comp_step = make_step(ref_op, x), make_step(comp_op, x)
            t_ref, t_comp = best_seconds(ref_step, repeats, "cuda"), best_seconds(comp_step, repeats, "cuda")
            m_ref, m_comp = cuda_peak_bytes(ref_step), cuda_peak_bytes(comp_step)
            print(
                f"{name:<42} {str(dtype)[6:]:>8} {t_ref * 1e3:8.3f} {t_comp * 1e3:8.3f} {t_ref / t_comp:7.2f}x "
                f"{m_ref / 2**20:8.1f} {m_comp / 2**20:8.1f}"
            )


if __name__ == "__main__":
    main()
