"""A training run's parts and state, as :func:`fewshot.train.setup.setup` builds them.

The :class:`Run` owns the networks, the optimisers, the augmentation, the regularizers, the loss, the data and
every counter, and knows how to put all of it into a snapshot and take it out again (``--resume`` continues
exactly). :mod:`fewshot.train.loop` drives it batch by batch.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Hyper, TrainConfig
from ..data import sample_batch, sample_indexed_batch
from . import distributed
from .loss import StyleGAN2Loss
from .state import capture_rng, flatten, restore_rng, unflatten
from .stops import RunOutput, StopRequested, signal_name


@dataclass
class Phase:
    name: str  # Gmain | Greg | Dmain | Dreg
    module: nn.Module
    opt: torch.optim.Optimizer
    params: list[nn.Parameter]
    interval: int
    active: bool = True  # Greg without path length, Dreg without R1: skipped (their z are still drawn)


@dataclass
class Progress:
    """Counters that define where a run is; saved in every snapshot."""

    cur_nimg: int = 0
    batch_idx: int = 0
    cur_tick: int = 0
    tick_start_nimg: int = 0
    best_metric: float | None = None
    elapsed_sec: float = 0.0


@dataclass
class TickStats:
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for key, value in stats.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}


class TrainingInterrupted(Exception):
    """The run stopped on request (a signal, its output gone) after writing a snapshot."""

    def __init__(self, signum: int, snapshot: Path | None, exit_code: int | None = None) -> None:
        super().__init__(f"stopped by {signal_name(signum)}")
        self.signum = signum
        self.snapshot = snapshot
        self.exit_code = exit_code if exit_code is not None else 128 + signum


@dataclass
class Run:
    """Everything one training run holds; built by ``setup``, driven by ``fewshot.train.loop.run``."""

    cfg: TrainConfig
    hyper: Hyper
    dist: Any
    device: torch.device
    images: Any
    nets: dict[str, nn.Module]
    transfer: Any
    augment: nn.Module
    regularizers: dict[str, nn.Module]
    loss: StyleGAN2Loss
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    phases: list[Phase]
    disp_bank: Any
    data_record: dict[str, Any]
    out: RunOutput
    stop: StopRequested
    resolution: int
    run_dir: Path | None = None
    metric_extractors: dict[str, Any] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    data_gen: torch.Generator | None = None
    latents: torch.Tensor | None = None
    grid_priors: torch.Tensor | None = None
    watch: Any = None  # the TensorBoard writer while the loop runs (fewshot.watch.hooks)

    @property
    def G(self) -> nn.Module:
        return self.nets["G"]

    @property
    def D(self) -> nn.Module:
        return self.nets["D"]

    @property
    def G_ema(self) -> nn.Module:
        return self.nets["G_ema"]

    @property
    def is_main(self) -> bool:
        return self.dist.rank == 0

    @property
    def local_batch(self) -> int:
        return self.hyper.batch // self.dist.world_size

    # -- one batch ------------------------------------------------------------------------------
    def draw(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...],
                                                  tuple[torch.Tensor | None, ...]]:
        """One batch: reals with their conditions (DISP priors, one-hot class labels, else None) from ``gen``, a z
        per phase, and per phase the fakes' conditions (None: the reals', as DISP pairs them)."""
        labels = self.images.labels
        phase_c: tuple[torch.Tensor | None, ...] = (None,) * len(self.phases)
        if self.disp_bank is not None:  # each real comes with its own prior; fakes are conditioned on the same priors
            real, real_c = self.disp_bank.sample_batch(self.images, self.local_batch, gen)
            real, real_c = real.to(self.device), real_c.to(self.device)
        elif labels is not None:  # as official: a real's own label for D; fakes' labels from the data's distribution
            from .labels import draw_gen_labels, draw_labels

            real, indices = sample_indexed_batch(self.images, self.local_batch, gen)
            real, real_c = real.to(self.device), draw_labels(labels, indices).to(self.device)
            gen_c = draw_gen_labels(labels, len(self.phases) * self.local_batch, gen).to(self.device)
            phase_c = gen_c.split(self.local_batch)
        else:
            real, real_c = sample_batch(self.images, self.local_batch, gen).to(self.device), None
        all_z = torch.randn([len(self.phases) * self.local_batch, self.G.z_dim], device=self.device)
        return real, real_c, all_z.split(self.local_batch), phase_c

    def step(self, phase: Phase, real: torch.Tensor, real_c: torch.Tensor | None, z: torch.Tensor,
             stats: TickStats | None = None, step: bool = True, gen_c: torch.Tensor | None = None) -> None:
        """One phase over the batch, ``batch_gpu`` images at a time (gradient accumulation), then its optimiser
        step (gradients averaged over processes, non-finite entries replaced, as official). The fakes are
        conditioned on ``gen_c``, or on the reals' conditions when it is None (DISP)."""
        chunk = self.hyper.batch_gpu
        self.loss.batch_idx = self.progress.batch_idx
        self.loss.cur_nimg = self.progress.cur_nimg
        phase.opt.zero_grad(set_to_none=True)
        for p in phase.params:
            p.requires_grad_(True)
        c_chunks = real_c.split(chunk) if real_c is not None else [None] * math.ceil(real.shape[0] / chunk)
        gen_chunks = gen_c.split(chunk) if gen_c is not None else c_chunks
        for real_chunk, c_chunk, z_chunk, g_chunk in zip(real.split(chunk), c_chunks, z.split(chunk), gen_chunks,
                                                         strict=True):
            values = self.loss.accumulate_gradients(phase.name, real_chunk, c_chunk, z_chunk, g_chunk,
                                                    gain=phase.interval)
            if stats is not None:
                stats.add(values)
        for p in phase.params:
            p.requires_grad_(False)
        if not step:
            return
        distributed.average_gradients(phase.params, self.dist)
        for p in phase.params:
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
        phase.opt.step()

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema: beta = 0.5 ** (batch / ema_nimg), ema_nimg ramped up early in a run from scratch."""
        ema_nimg = self.hyper.ema_kimg * 1000
        if self.hyper.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.progress.cur_nimg * self.hyper.ema_rampup)
        ema_beta = 0.5 ** (self.hyper.batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.copy_(p.lerp(p_ema, ema_beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    # -- state ----------------------------------------------------------------------------------
    def exported(self) -> dict[str, nn.Module]:
        """The networks as plain StyleGAN2 modules (AdaFM folded into the weights)."""
        return {"G": self.transfer.export_generator(self.G), "G_ema": self.transfer.export_generator(self.G_ema),
                "D": self.D}

    def snapshot_payload(self) -> tuple[dict[str, torch.nn.Module], dict[str, Any], dict[str, torch.Tensor]]:
        """(networks, training record, state tensors) of a resumable snapshot: both optimisers, the augmentation
        and the loss buffers, every RNG, the counters, the images record, DISP's priors and adapted raw states."""
        tensors: dict[str, torch.Tensor] = {}
        training = {
            "config": self.cfg.to_dict(),
            "progress": self.progress.__dict__.copy(),
            "hyper": self.hyper.__dict__,
            "kimg": self.progress.cur_nimg / 1000,
            "augment_p": float(self.augment.p),
            "opt_G": flatten(self.opt_G.state_dict(), "opt_G", tensors),
            "opt_D": flatten(self.opt_D.state_dict(), "opt_D", tensors),
            "augment": flatten(self.augment.state_dict(), "augment", tensors),
            "loss": flatten(self.loss.state_dict(), "loss", tensors),
            "rng": flatten(capture_rng(self.data_gen), "rng", tensors),
            "data": self.data_record,  # what a resume checks its images against
        }
        self.add_disp_payload(training, tensors)
        states = {name: getattr(reg, "training_state", dict)() for name, reg in self.regularizers.items()}
        regs = {name: state for name, state in states.items() if state}
        if regs:  # anchors, a D head: what a regularizer needs to continue exactly
            training["regularizers"] = flatten(regs, "regularizers", tensors)
        exported = self.exported()
        for name, net in self.nets.items():
            if exported[name] is not net:  # adapted nets (AdaFM) keep their raw state for resume
                for key, value in net.state_dict().items():
                    tensors[f"net.{name}.{key}"] = value
        return exported, training, tensors

    def export_payload(self, metrics: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(training record, state tensors) of an exported bundle (final / best): config, kimg, p, metrics."""
        training: dict[str, Any] = {"config": self.cfg.to_dict(), "kimg": self.progress.cur_nimg / 1000,
                                    "augment_p": float(self.augment.p)}
        if metrics:
            training["metrics"] = metrics
        tensors: dict[str, torch.Tensor] = {}
        self.add_disp_payload(training, tensors)
        return training, tensors

    def add_disp_payload(self, training: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """A DISP bundle carries its prior bank, so sampling needs no extractor; a class-conditional one says its
        classes (count, source, names from folders), for `info` and `sample --class`."""
        if self.images.labels is not None:
            training["labels"] = self.images.labels.record()
        if self.disp_bank is not None:
            from ..disp.bank import BANK_STATE_KEY

            training["disp"] = self.disp_bank.meta()
            tensors[BANK_STATE_KEY] = self.disp_bank.priors

    def restore(self, bundle: Any) -> None:
        """Optimisers, augmentation, loss buffers, RNGs and counters from a snapshot (the networks are loaded as
        they are built)."""
        training, tensors = bundle.training, bundle.state_tensors
        self.opt_G.load_state_dict(unflatten(training["opt_G"], tensors))
        self.opt_D.load_state_dict(unflatten(training["opt_D"], tensors))
        self.augment.load_state_dict(unflatten(training["augment"], tensors))
        self.loss.load_state_dict(unflatten(training["loss"], tensors))
        restore_rng(unflatten(training["rng"], tensors), self.data_gen)
        for name, state in unflatten(training.get("regularizers", {}), tensors).items():
            self.regularizers[name].load_training_state(state)
        for key, value in training["progress"].items():
            setattr(self.progress, key, value)

    def interrupted(self, snapshot: Path | None) -> TrainingInterrupted:
        return TrainingInterrupted(self.stop.signum or signal.SIGTERM, snapshot)
