"""Tensors computed from a network weight alone, kept while the weight is unchanged (inference).

Sampling recomputes the same functions of the same weights for every batch: the Winograd transform
``U(W)`` of each 3x3 filter bank (4x the filter's size, a pass over it per call), the demodulation's
``sum_k W^2`` and the transposed convolutions' ``[in, out, k, k]`` weight layout. ``derived(weight, tag,
compute)`` computes them once and returns the kept result while ``weight`` is the same parameter at the same
version (torch bumps ``_version`` on every in-place change).

What is kept, and when:
- only ``nn.Parameter`` weights (a per-sample modulated weight is a new tensor every call), and never one
  that autograd differentiates at that moment (grad enabled and ``requires_grad``): a network being trained
  computes its transforms afresh, while a frozen one (the Reg-DGM extractor, through which gradients flow
  to the fakes, not to its weights) computes them once for the whole run;
- a weight found changed since its entry was made (G_ema between two sample grids, G or D seen frozen in
  the other network's phase and then updated) is marked as changing and no longer kept, so a training run
  holds no stale copies;
- an entry lives as long as its parameter (a weak reference drops it).

The price is memory while sampling: ``U(W)`` is 36/9 = 4x its filter bank (120-170 MB for the 64 px and
1024 px generators, whose 512-channel 3x3 layers at 8-64 px are most of it), and the upsampling convolutions
keep a contiguous transposed copy of their weights (33 MB for the 64 px generator).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import nn

_CHANGING = -1  # the version recorded for a weight seen to change: compute, never keep
_KEPT: dict[tuple[int, str], tuple[weakref.ReferenceType, int, torch.Tensor | None]] = {}


def derived(weight: torch.Tensor, tag: str, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``compute(weight)``, reused while ``weight`` is unchanged (parameters autograd does not differentiate)."""
    if not isinstance(weight, nn.Parameter) or (torch.is_grad_enabled() and weight.requires_grad):
        return compute(weight)
    key = (id(weight), tag)
    kept = _KEPT.get(key)
    if kept is not None and kept[0]() is weight:
        if kept[1] == weight._version:
            return kept[2]
        _KEPT[key] = (kept[0], _CHANGING, None)
        return compute(weight)
    value = compute(weight)
    _KEPT[key] = (weakref.ref(weight, lambda _ref, key=key: _KEPT.pop(key, None)), weight._version, value)
    return value


def kept_count() -> int:
    """How many derived tensors are held now (diagnostics and tests)."""
    return sum(1 for _, version, value in _KEPT.values() if value is not None)
