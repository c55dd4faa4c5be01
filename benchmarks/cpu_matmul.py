"""The Winograd GEMMs on this CPU: MKL (torch.bmm) against fewshot's AVX-512 kernel, side by side.

For each shape of the side-by-side configs' Winograd layers (36 GEMMs ``[O, C] @ [C, tiles]``), the three products
a training step runs: the forward ``U @ V``, the weight gradient ``dM @ V^T`` and the input gradient ``U^T @ dM``
(the transposed operands are views, as autograd passes them). Float32, two threads as in training, with training's
malloc settings, interleaved, best of ``--repeats``. Also 2048^3 as a plain matrix product, and a large direct 3x3
convolution as oneDNN's own rate on this CPU. Prints which one ``FEWSHOT_CPU_MATMUL=auto`` picks here and why.

    .venv/bin/python benchmarks/cpu_matmul.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import functools

import torch
from polyphase_bound import best as best_seconds  # fn's best time of `repeats` after one warm-up

from fewshot.cuda import cpu_matmul
from fewshot.cuda.build import compiled_module
from fewshot.host_memory import keep_freed_memory

# (label, O, C, tiles): the Winograd layers of benchmarks/official_side_by_side.py's configs
SHAPES = [
    ("64 px small, 64 px layers (128 ch, batch 8)", 128, 128, 8 * 16 * 16),
    ("64 px small, 32 px layers (256 ch, batch 8)", 256, 256, 8 * 8 * 8),
    ("64 px small, 16 px layers (256 ch, batch 8)", 256, 256, 8 * 4 * 4),
    ("32 px, 32 px layers (64 ch, batch 16)", 64, 64, 16 * 8 * 8),
    ("32 px, 16 px layers (128 ch, batch 16)", 128, 128, 16 * 4 * 4),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    keep_freed_memory()
    torch.manual_seed(0)
    module = compiled_module("cpu")
    prefers, why = cpu_matmul.auto_prefers_avx512()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, capability "
          f"{torch.backends.cpu.get_cpu_capability()}, CPU {cpu_matmul._cpu_vendor_family()}; "
          f"auto: {'the AVX-512 kernel' if prefers else 'MKL'} ({why})")
    if module is None or not module.bmm_avx512_supported():
        print("cpu_matmul: the AVX-512 kernel cannot run here (no AVX-512 or no compiled CPU ops); nothing to compare")
        return
    print("\n| shape | product | MKL ms (GMAC/s) | AVX-512 kernel ms (GMAC/s) | kernel / MKL speed |")
    print("|---|---|---:|---:|---:|")
    for label, o, c, tiles in SHAPES:
        u, v, dm = torch.randn(36, o, c), torch.randn(36, c, tiles), torch.randn(36, o, tiles)
        for product, (a, b) in (("U @ V", (u, v)), ("dM @ V^T", (dm, v.mT)), ("U^T @ dM", (u.mT, dm))):
            macs = a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
            times = {"mkl": [], "avx512": []}
            for r in range(2):  # interleaved: each side first once
                order = ("mkl", "avx512") if r == 0 else ("avx512", "mkl")
                for name in order:
                    multiply = torch.bmm if name == "mkl" else module.bmm_avx512
                    times[name].append(best_seconds(functools.partial(multiply, a, b), args.repeats))
            mkl, own = min(times["mkl"]), min(times["avx512"])
            print(f"| {label} | {product} | {mkl * 1e3:.2f} ({macs / mkl / 1e9:.0f}) | {own * 1e3:.2f} "
                  f"({macs / own / 1e9:.0f}) | **{mkl / own:.2f}x** |", flush=True)
    a, b = torch.randn(1, 2048, 2048), torch.randn(1, 2048, 2048)
    mkl = best_seconds(functools.partial(torch.bmm, a, b), args.repeats)
    own = best_seconds(functools.partial(module.bmm_avx512, a, b), args.repeats)
    x, w = torch.randn(8, 256, 32, 32), torch.randn(256, 256, 3, 3)
    conv = best_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=1), args.repeats)
    print(f"\n2048^3: MKL {2048**3 / mkl / 1e9:.0f} GMAC/s, AVX-512 kernel {2048**3 / own / 1e9:.0f} GMAC/s; "
          f"oneDNN direct 3x3 convolution [8, 256, 32, 32] -> 256: {x.numel() * 256 * 9 / conv / 1e9:.0f} GMAC/s")


if __name__ == "__main__":
    main()
