"""Compiled CPU ops vs the plain-PyTorch references: forward+backward time and peak memory.

Prints one table, both implementations side by side, for StyleGAN2-typical shapes. Peak memory
is what the CPU allocator held above the inputs during one forward+backward, taken from
torch.profiler's memory events. Run: .venv/bin/python benchmarks/ops.py [--repeats N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from fewshot.cuda import build as ops_build
from fewshot.cuda.bias_act_compiled import bias_act_compiled
from fewshot.cuda.bias_act_ref import bias_act_ref
from fewshot.cuda.upfirdn2d_compiled import upfirdn2d_compiled
from fewshot.cuda.upfirdn2d_ref import setup_filter, upfirdn2d_ref


def peak_memory_bytes(step: Callable[[], None]) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    memory_events = [e for e in prof.events() if e.name == "[memory]"]
    memory_events.sort(key=lambda e: e.time_range.start)
    held = peak = 0
    for event in memory_events:
        held += event.cpu_memory_usage
        peak = max(peak, held)
    return peak


def best_seconds(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)  # the machine is shared: the minimum is the least disturbed run


def make_step(op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        xi = x.detach().requires_grad_()
        y = op(xi)
        y.backward(torch.ones_like(y))

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    state = ops_build.get_state("cpu")
    if state.module is None:
        raise SystemExit(f"compiled CPU ops unavailable: {state.reason}")
    ops = state.module
    f = setup_filter([1, 3, 3, 1])
    cases = []
    for shape in ([16, 512, 32, 32], [16, 128, 128, 128]):
        b = torch.randn(shape[1], requires_grad=True)
        cases.append((
            f"bias_act lrelu {shape}",
            shape,
            lambda x, b=b: bias_act_ref(x, b, act="lrelu"),
            lambda x, b=b: bias_act_compiled(ops, x, b, act="lrelu"),
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
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward+backward")
    header = f"{'case':<42} {'ref ms':>8} {'comp ms':>8} {'speedup':>8} {'ref MiB':>8} {'comp MiB':>8}"
    print(header)
    print("-" * len(header))
    for name, shape, ref_op, comp_op in cases:
        x = torch.randn(shape)
        ref_step, comp_step = make_step(ref_op, x), make_step(comp_op, x)
        t_ref, t_comp = best_seconds(ref_step, args.repeats), best_seconds(comp_step, args.repeats)
        m_ref, m_comp = peak_memory_bytes(ref_step), peak_memory_bytes(comp_step)
        print(
            f"{name:<42} {t_ref * 1e3:8.1f} {t_comp * 1e3:8.1f} {t_ref / t_comp:7.2f}x "
            f"{m_ref / 2**20:8.1f} {m_comp / 2**20:8.1f}"
        )


if __name__ == "__main__":
    main()
