"""Which dtype a block of the networks computes in: the reduced-precision layers of ``num_fp16_res``.

On CUDA those blocks run float16, as in the official code. On the CPU they run float32 unless training asked
for bfloat16 there (``cpu_bf16``): oneDNN then runs the convolutions at twice the float32 multiply-add rate on
CPUs with bfloat16 dot products (AVX512-BF16, AMX), and the compiled element-wise ops compute in float32 on
upcast copies. bfloat16 keeps float32's range, so unlike float16 it needs no pre-normalised weights, but its
8-bit significand rounds each value to ~0.4%, ten times float16's rounding: a speed option, off by default.
"""

from __future__ import annotations

import torch
from torch import nn

# ONEDNN_MAX_CPU_ISA values at or above oneDNN's first ISA with bfloat16 dot products (avx512_core_bf16).
_BF16_ISAS = {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512",
              "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL", "DEFAULT"}


def native_bf16() -> tuple[bool, str]:
    """Whether this CPU runs oneDNN's bfloat16 kernels natively, and if not, why (for an error line).

    Without the instructions oneDNN emulates them about a hundred times slower than float32."""
    from .. import settings

    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return False, "this CPU has no bfloat16 dot-product instructions (AVX512-BF16 or AMX)"
    isa = settings.onednn_max_isa()
    if isa and isa not in _BF16_ISAS:
        return False, f"ONEDNN_MAX_CPU_ISA={isa} holds oneDNN below its bfloat16 kernels"
    return True, ""


def block_dtype(use_fp16: bool, force_fp32: bool, device: torch.device, cpu_half: torch.dtype | None) -> torch.dtype:
    """The dtype of a block marked ``use_fp16``: float16 on CUDA, ``cpu_half`` (if set) on the CPU."""
    if not use_fp16 or force_fp32:
        return torch.float32
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_half is not None:
        return cpu_half
    return torch.float32


def set_cpu_half(module: nn.Module, dtype: torch.dtype | None) -> int:
    """Make the ``use_fp16`` blocks of ``module`` compute in ``dtype`` on the CPU (None: float32 again).

    A runtime setting: parameters, ``state_dict`` and checkpoints are unchanged. Returns the blocks set."""
    count = 0
    for block in module.modules():
        if getattr(block, "use_fp16", False) and hasattr(block, "cpu_half"):
            block.cpu_half = dtype
            count += 1
    return count
