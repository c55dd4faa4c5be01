"""The plan a run shows before it starts: how long, how much disk, how much memory.

The time comes from a warm-up step: one batch of every phase (Gmain, Greg, Dmain, Dreg), timed on the real
networks and data, then undone. No optimiser steps; the buffers the phases update (G's w_avg, the path-length
mean, the augmentation's statistics) are restored and the RNGs forked, so the run that follows is the run that
would have followed without the plan (``tests/test_train.py`` holds the two equal).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

DAY = 86400.0


@dataclass(frozen=True)
class StepEstimate:
    phase_seconds: dict[str, float]  # one batch of each phase
    sec_per_kimg: float  # lazy phases amortised over their intervals
    peak_memory_mb: float


def format_duration(seconds: float) -> str:
    """1d 4h | 3h 12m | 4m 05s | 12s: two units at most, enough to plan a day around."""
    seconds = max(float(seconds), 0.0)
    if not math.isfinite(seconds):
        return "unknown"
    days, rest = divmod(int(round(seconds)), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_bytes(n: float) -> str:
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def snapshot_bytes(nets: dict[str, nn.Module], trainable: Sequence[nn.Parameter]) -> int:
    """What a snapshot holds, to within its header: every network's state and Adam's two moments per trainable
    tensor."""
    return sum(tensor_bytes(net.state_dict().values()) for net in nets.values()) + 2 * tensor_bytes(trainable)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    except (ImportError, OSError):
        return 0.0


def _save_buffers(module: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor | None]]:
    """Every buffer with its owner. Buffers, not state_dict: some change shape (APA's stored fakes), and the
    phases change nothing else (no optimiser step runs)."""
    saved = []
    for owner in module.modules():
        for name, value in owner._buffers.items():
            saved.append((owner, name, None if value is None else value.detach().clone()))
    return saved


def estimate_step(phases: Sequence[Any], run_phase: Callable[..., None], draw_batch: Callable[[], tuple[Any, Any, Any]],
                  stateful: Sequence[nn.Module], batch: int, chunk: int, device: torch.device) -> StepEstimate:
    """Time one batch of every phase without changing the run.

    ``run_phase(phase, real, conditions, z, step=False)`` runs one phase's forward/backward over the batch's
    chunks; ``draw_batch()`` gives (reals, conditions, a z per phase); phases not ``active`` are left out; ``stateful`` are the modules whose buffers
    the phases update (G, D, the augmentation, the loss). The first ``chunk`` images of each phase run once
    untimed, so one-time costs (kernel builds, first allocations, kept weight transforms) do not count."""
    saved = [item for module in stateful for item in _save_buffers(module)]
    cuda_devices = [device] if device.type == "cuda" else []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds: dict[str, float] = {}
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            real, conditions, zs = draw_batch()
            active = [(phase, z) for phase, z in zip(phases, zs, strict=True) if phase.active]
            for phase, z in active:  # warm: one chunk per phase
                run_phase(phase, real[:chunk], None if conditions is None else conditions[:chunk], z[:chunk],
                          step=False)
            for phase, z in active:
                _sync(device)
                start = time.perf_counter()
                run_phase(phase, real, conditions, z, step=False)
                _sync(device)
                seconds[phase.name] = time.perf_counter() - start
    finally:
        for phase in phases:
            for p in phase.params:
                p.grad = None
        with torch.no_grad():
            for owner, name, value in saved:
                current = owner._buffers.get(name)
                if value is not None and current is not None and current.shape == value.shape:
                    current.copy_(value)  # in place: whatever holds the buffer keeps holding it
                else:
                    setattr(owner, name, value)
    per_batch = sum(seconds[phase.name] / phase.interval for phase in phases if phase.active)
    return StepEstimate(seconds, per_batch * 1000 / batch, _peak_memory_mb(device))


def plan_lines(*, images: int, resolution: int, kimg_left: float, batch: int, estimate: StepEstimate | None,
               snapshot_size: int, export_size: int, keep: int, device: torch.device) -> list[str]:
    """The plan, a few lines: what, how long, how much disk and memory; a plain warning past a day."""
    batches = math.ceil(kimg_left * 1000 / batch)
    lines = [f"plan: {images} images at {resolution} px, {kimg_left:g} kimg to go ({batches:,} batches of {batch})"]
    if estimate is not None:
        eta = estimate.sec_per_kimg * kimg_left
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in estimate.phase_seconds.items())
        lines.append(f"  time: ~{estimate.sec_per_kimg:.1f} s/kimg from a timed warm-up step ({phases}) "
                     f"-> ETA {format_duration(eta)}")
        lines.append(f"  memory: peak ~{format_bytes(estimate.peak_memory_mb * 2**20)} "
                     f"({'GPU' if device.type == 'cuda' else 'process'}, measured in the warm-up step)")
    lines.append(f"  disk: snapshot ~{format_bytes(snapshot_size)} x {keep} kept, final.safetensors "
                 f"~{format_bytes(export_size)} -> up to ~{format_bytes(snapshot_size * keep + 2 * export_size)}")
    if estimate is not None and estimate.sec_per_kimg * kimg_left > DAY:
        eta = estimate.sec_per_kimg * kimg_left
        affordable = max(DAY / estimate.sec_per_kimg, 0.001)
        lines.append(f"  note: this run needs about {format_duration(eta)} on this {device.type.upper()} - more than a "
                     f"day. About --kimg {affordable:.3g} fits in a day; a GPU, fewer images per step or a smaller "
                     f"network are faster.")
    return lines
