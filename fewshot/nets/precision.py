"""Which precision a block of the networks computes in: the reduced-precision layers of ``num_fp16_res``.

On CUDA those blocks run float16, as in the official code. On the CPU they run float32, unless training asked
for bfloat16 there (``cpu_bf16``): then their direct convolutions (the strided and transposed ones, 1x1 and
small maps) take bfloat16 operands, which oneDNN multiplies at twice the float32 rate on CPUs with bfloat16 dot
products (AVX512-BF16, AMX), and return float32. Activations, the Winograd convolutions and the element-wise
ops stay float32, so only those convolutions' inputs and weights are rounded. bfloat16's 8-bit significand
rounds them to within 0.2%, eight times float16's rounding: a speed option, off by default.
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


def block_dtype(use_fp16: bool, force_fp32: bool, device: torch.device) -> torch.dtype:
    """The activation dtype of a block: float16 for a ``use_fp16`` block on CUDA, else float32."""
    return torch.float16 if use_fp16 and not force_fp32 and device.type == "cuda" else torch.float32


def cpu_conv_dtype(block: nn.Module, device: torch.device, force_fp32: bool) -> torch.dtype | None:
    """The dtype of the block's direct CPU convolutions (``cpu_half`` of a ``use_fp16`` block), else None."""
    if block.use_fp16 and not force_fp32 and device.type == "cpu":
        return block.cpu_half
    return None


def set_cpu_half(module: nn.Module, dtype: torch.dtype | None) -> int:
    """Make the direct convolutions of the ``use_fp16`` blocks of ``module`` run in ``dtype`` on the CPU (None:
    float32 again).

    A runtime setting: parameters, ``state_dict`` and checkpoints are unchanged. Returns the blocks set."""
    count = 0
    for block in module.modules():
        if getattr(block, "use_fp16", False) and hasattr(block, "cpu_half"):
            block.cpu_half = dtype
            count += 1
    return count
