"""The batched float32 matrix product of the CPU Winograd convolutions, with AVX-512 where MKL runs AVX2.

``batched_matmul(a, b)`` is ``torch.bmm(a, b)``. torch sends float32 ``bmm`` to MKL, which picks its kernels by
CPU vendor: on AMD CPUs it runs AVX2 even where the CPU has AVX-512. On a CPU that executes AVX-512 at full
width (AMD Zen 5) that is half the hardware's multiply-add rate: 2048^3 on one Zen 5 core, MKL 57 GMAC/s,
oneDNN's AVX-512 convolutions 130. There the product runs on the compiled ``bmm_avx512`` (cpu_gemm.cpp), 1.3-2x
MKL at the Winograd shapes (BENCHMARKS.md, #26 round 8; ``benchmarks/cpu_matmul.py``).

On Zen 4 (AVX-512 on 256-bit units: MKL's AVX2 is the same rate) and on Intel CPUs (where MKL runs AVX-512
itself), and under ``ONEDNN_MAX_CPU_ISA`` caps below AVX-512 (the AVX2 emulation), ``auto`` keeps MKL;
``FEWSHOT_CPU_MATMUL`` (auto, mkl, avx512) overrides. The choice is fixed by the hardware and the environment,
never by a timing, so a run that resumes on the same machine multiplies the same way and stays exact; and each
column panel of each batch entry of ``bmm_avx512`` is one thread's, so its result does not depend on the thread count.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from .. import settings

# Zen 5 (family 0x1A) is the first AMD core with 512-bit FMA units; earlier ones split AVX-512 in two halves.
_FIRST_FULL_WIDTH_AVX512_AMD_FAMILY = 26


@functools.lru_cache(maxsize=1)
def _cpu_vendor_family() -> tuple[str, int]:
    """(vendor_id, cpu family) from /proc/cpuinfo; ("", 0) where there is none (not Linux)."""
    vendor, family = "", 0
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return vendor, family
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "cpu family" and not family:
            family = int(value.strip()) if value.strip().isdigit() else 0
        if vendor and family:
            break
    return vendor, family


def _onednn_capped_below_avx512() -> bool:
    isa = settings.onednn_max_isa()
    return bool(isa) and not (isa.startswith("AVX512") or isa.startswith("AVX10") or isa in ("ALL", "DEFAULT"))


def _compiled_module():
    """The compiled CPU module when its ``bmm_avx512`` can run here, else None."""
    if settings.ops_choice() == "reference":
        return None
    from .build import compiled_module

    module = compiled_module("cpu")
    return module if module is not None and module.bmm_avx512_supported() else None


def auto_prefers_avx512() -> tuple[bool, str]:
    """Whether ``auto`` multiplies with ``bmm_avx512`` on this machine, and why (for ``fewshot doctor``)."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return False, "no AVX-512: MKL's kernels are as wide as the CPU"
    vendor, family = _cpu_vendor_family()
    if vendor != "AuthenticAMD":
        return False, "MKL runs AVX-512 on this CPU itself"
    if family < _FIRST_FULL_WIDTH_AVX512_AMD_FAMILY:
        return False, "this AMD CPU runs AVX-512 on 256-bit units, MKL's AVX2 rate"
    if _onednn_capped_below_avx512():
        return False, f"ONEDNN_MAX_CPU_ISA={settings.onednn_max_isa()} emulates a CPU without AVX-512"
    return True, "MKL runs AVX2 on this AMD CPU, whose AVX-512 is full width"


def avx512_module():
    """The compiled module whose ``bmm_avx512`` float32 Winograd products run on here, else None (MKL)."""
    choice = settings.cpu_matmul_choice()
    if choice == "mkl" or (choice == "auto" and not auto_prefers_avx512()[0]):
        return None
    return _compiled_module()


class _BatchedMatmulAVX512(torch.autograd.Function):
    """a @ b by ``bmm_avx512``; its backward is two more products (dA = dM b^T, dB = a^T dM) taken through
    ``batched_matmul`` again, so gradients of any order (R1's and path length's double backward) flow."""

    @staticmethod
    def forward(ctx, a, b, module):  # type: ignore[override]
        ctx.save_for_backward(a, b)
        return module.bmm_avx512(a, b)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        a, b = ctx.saved_tensors
        grad_a = batched_matmul(grad, b.mT) if ctx.needs_input_grad[0] else None
        grad_b = batched_matmul(a.mT, grad) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None


def batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm(a, b)`` for [P, m, k] x [P, k, n]: by ``bmm_avx512`` for float32 CPU tensors where
    ``avx512_module()`` says so, else torch's (MKL)."""
    if a.device.type == "cpu" and a.dtype == torch.float32 and b.dtype == torch.float32:
        module = avx512_module()
        if module is not None:
            return _BatchedMatmulAVX512.apply(a, b, module)
    return torch.bmm(a, b)
