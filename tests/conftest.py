"""Shared fixtures: tiny StyleGAN2 networks (32 px, few channels) that build in milliseconds.

``make_tiny_G`` / ``make_tiny_D`` give seeded networks whose zero-initialised tensors (biases,
noise strengths, w_avg) are filled with small random values, so numeric tests exercise every term.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

# Test tensors are tiny: a second intra-op thread buys nothing, and when the CPU is shared
# (CI runners, parallel jobs) OpenMP spin-waiting made a 32 px generator forward ~15x slower.
torch.set_num_threads(1)

TINY_G_KWARGS: dict[str, Any] = dict(
    z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
    mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 512, "channel_max": 64},
)
TINY_D_KWARGS: dict[str, Any] = dict(c_dim=0, img_resolution=32, img_channels=3, channel_base=512, channel_max=64)


def perturb_(net: nn.Module, seed: int = 0, scale: float = 0.1) -> nn.Module:
    """Add small seeded noise to every tensor except the resampling filters (in place)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
            if name.endswith("resample_filter") or not tensor.is_floating_point():
                continue
            tensor.add_(torch.randn(tensor.shape, generator=gen) * scale)
    return net


def make_tiny_G(seed: int = 0, perturb: bool = True, **overrides: Any) -> nn.Module:
    from fewshot.nets import Generator

    torch.manual_seed(seed)
    G = Generator(**{**TINY_G_KWARGS, **overrides})
    return perturb_(G, seed) if perturb else G


def make_tiny_D(seed: int = 0, perturb: bool = True, **overrides: Any) -> nn.Module:
    from fewshot.nets import Discriminator

    torch.manual_seed(seed)
    D = Discriminator(**{**TINY_D_KWARGS, **overrides})
    return perturb_(D, seed) if perturb else D


@pytest.fixture
def tiny_G() -> nn.Module:
    return make_tiny_G(0).eval()


@pytest.fixture
def tiny_D() -> nn.Module:
    return make_tiny_D(0).eval()


def straight_and_resumed(config_for: Callable[[str, float], Any], kimg: float = 0.016) -> tuple[Path, Path]:
    """Run folders of a run trained ``kimg`` straight and of one trained half, resumed, and trained to ``kimg``:
    ``config_for(name, kimg)`` gives each run's config. Exact resumption makes their final tensors equal."""
    from fewshot.train.loop import train

    quiet = dict(progress=False, echo=lambda m: None)
    straight = train(config_for("straight", kimg), **quiet)
    first = train(config_for("split", kimg / 2), **quiet)
    resumed = train(config_for("split", kimg / 2), resume=str(first), kimg_override=kimg, **quiet)
    return straight, resumed
