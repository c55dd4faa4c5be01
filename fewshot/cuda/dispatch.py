"""The one point where the networks reach the elementwise/resampling ops.

``bias_act`` and ``upfirdn2d`` route to a compiled kernel when one is available for the
tensor's device and the ops choice allows it, and to the plain-PyTorch reference otherwise.
"""

from __future__ import annotations

import torch

from .bias_act_ref import bias_act_ref
from .upfirdn2d_ref import Padding, Scale, upfirdn2d_ref


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
    return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


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
    return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
