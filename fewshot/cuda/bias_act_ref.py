"""Reference definition of the fused bias + activation + gain + clamp op.

This file *defines* what ``bias_act`` means; the compiled kernels must agree with it.
The semantics follow StyleGAN2: ``clamp(act(x + b) * gain, -clamp, clamp)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    name: str
    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float
    code: int  # identifier shared with the compiled kernels


def _linear(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return x


def _relu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.relu(x)


def _lrelu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.leaky_relu(x, alpha)


def _tanh(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.tanh(x)


def _sigmoid(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.sigmoid(x)


def _elu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.elu(x)


def _selu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.selu(x)


def _softplus(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.softplus(x)


def _swish(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.sigmoid(x) * x


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("linear", _linear, 0.0, 1.0, 1),
        Activation("relu", _relu, 0.0, math.sqrt(2), 2),
        Activation("lrelu", _lrelu, 0.2, math.sqrt(2), 3),
        Activation("tanh", _tanh, 0.0, 1.0, 4),
        Activation("sigmoid", _sigmoid, 0.0, 1.0, 5),
        Activation("elu", _elu, 0.0, 1.0, 6),
        Activation("selu", _selu, 0.0, 1.0, 7),
        Activation("softplus", _softplus, 0.0, 1.0, 8),
        Activation("swish", _swish, 0.0, math.sqrt(2), 9),
    ]
}


def resolve_args(
    act: str, alpha: float | None, gain: float | None, clamp: float | None
) -> tuple[Activation, float, float, float]:
    """Fill in the activation's defaults; clamp < 0 means 'no clamp'."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose from {sorted(ACTIVATIONS)}")
    spec = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


def bias_act_ref(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """``clamp(act(x + b) * gain)`` in plain PyTorch; b broadcasts along ``dim``."""
    spec, alpha, gain, clamp = resolve_args(act, alpha, gain, clamp)
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match dim {dim} of {tuple(x.shape)}")
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
