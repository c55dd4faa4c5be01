"""Data parallelism over processes (``torchrun --nproc_per_node N -m fewshot train ...``).

As in the official code, gradients are averaged explicitly after each phase rather than through
a DDP wrapper: the four phases (Gmain, Greg, Dmain, Dreg) reuse the same networks with different
losses, which DDP's one-forward-one-backward model does not fit. Rank 0 broadcasts its
initial weights and alone writes files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as tdist
from torch import nn

from .. import settings


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env() -> DistInfo:
    rank, world, local = settings.distributed_env()
    if world <= 1:
        return DistInfo()
    if not tdist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        tdist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local)


def shutdown() -> None:
    """Tear the process group down before the interpreter exits. Left to exit-time destructors, gloo's worker
    threads can be destroyed while still joinable, and the process aborts ("terminate called without an active
    exception") after the run has finished."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def broadcast_modules(modules: list[nn.Module], dist: DistInfo) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if not dist.enabled:
        return
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            tdist.broadcast(tensor.data, src=0)


def average_gradients(params: list[nn.Parameter], dist: DistInfo) -> None:
    if not dist.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    tdist.all_reduce(flat)
    flat /= dist.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def sync_augment_stats(augment: nn.Module, dist: DistInfo) -> None:
    """Sum the ADA sign statistics over ranks so every rank adapts p identically."""
    if not dist.enabled or not hasattr(augment, "stat_buffers"):
        return
    for buf in augment.stat_buffers():
        tdist.all_reduce(buf)


def any_flag(flag: bool, dist: DistInfo) -> bool:
    """True on every rank if any rank raised the flag (e.g. received SIGTERM)."""
    if not dist.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    tdist.all_reduce(t)
    return bool(t.item() > 0)


def broadcast_path(path: Path | None, dist: DistInfo) -> Path | None:
    if not dist.enabled:
        return path
    box = [str(path) if path is not None else None]
    tdist.broadcast_object_list(box, src=0)
    return Path(box[0]) if box[0] else None


def barrier(dist: DistInfo) -> None:
    if dist.enabled:
        tdist.barrier()


def params_in_sync(modules: list[nn.Module], dist: DistInfo) -> bool:
    """Whether every rank holds the same weights (a float64 checksum compared across ranks)."""
    if not dist.enabled:
        return True
    total = torch.zeros([], dtype=torch.float64)
    for module in modules:
        for p in module.parameters():
            total += p.detach().double().cpu().sum() + p.detach().double().cpu().square().sum()
    if tdist.get_backend() == "nccl":  # nccl only moves device tensors
        total = total.cuda()
    gathered = [torch.zeros_like(total) for _ in range(dist.world_size)]
    tdist.all_gather(gathered, total)
    return all(bool(g == gathered[0]) for g in gathered)
