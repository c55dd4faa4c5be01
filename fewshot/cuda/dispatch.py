"""The one point where the networks reach the elementwise/resampling ops.

``bias_act``, ``upfirdn2d`` and ``filtered_lrelu`` route to a compiled kernel when one is available for the
tensor's device and dtype and ``FEWSHOT_OPS`` allows it, and to the plain-PyTorch reference
otherwise. The build happens on first use and is tried once per process (see :mod:`.build`).
"""

from __future__ import annotations

import math
from types import ModuleType

import torch

from .bias_act_ref import bias_act_ref
from .filtered_lrelu_ref import filtered_lrelu_ref
from .upfirdn2d_ref import Padding, Scale, upfirdn2d_ref

# The CPU kernels are compiled for float32/float64 only (half precision on the CPU is rare and
# would double the build time); CUDA kernels also take float16 and bfloat16.
_KERNEL_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
}


def _kernel_module(x: torch.Tensor) -> ModuleType | None:
    """The compiled module for ``x``, or None when the reference must run."""
    from .build import compiled_module

    if x.dtype not in _KERNEL_DTYPES.get(x.device.type, ()):
        return None
    return compiled_module(x.device.type)


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """``clamp(act(x + b) * gain, -clamp, clamp)``; see :func:`bias_act_ref` for the definition."""
    module = _kernel_module(x)
    if module is None:
        return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    from .bias_act_compiled import bias_act_compiled

    return bias_act_compiled(module, x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scale = 1,
    down: Scale = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample, pad, FIR-filter, downsample; see :func:`upfirdn2d_ref` for the definition."""
    # Gradients with respect to the filter are not compiled (the networks' filters are fixed buffers).
    module = None if (f is not None and f.requires_grad) else _kernel_module(x)
    if module is None:
        return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    from .upfirdn2d_compiled import upfirdn2d_compiled

    return upfirdn2d_compiled(module, x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    flip_filter: bool = False,
) -> torch.Tensor:
    """StyleGAN3's bias + upsample + leaky ReLU + clamp + downsample; see :func:`filtered_lrelu_ref`."""
    # As for upfirdn2d, gradients with respect to the filters are not compiled (StyleGAN3's are fixed buffers).
    filter_grad = any(f is not None and f.requires_grad for f in (fu, fd))
    module = None if filter_grad else _kernel_module(x)
    if module is None:
        return filtered_lrelu_ref(x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                                  clamp=clamp, flip_filter=flip_filter)
    from .filtered_lrelu_compiled import filtered_lrelu_compiled

    return filtered_lrelu_compiled(module, x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                                   clamp=clamp, flip_filter=flip_filter)
