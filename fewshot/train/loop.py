"""The training loop, readable top to bottom.

``train(config)`` = ``setup(config) -> Run`` (:mod:`fewshot.train.setup`: data, networks, transfer,
augmentation, regularizers, optimisers, resume) then ``run(Run)``, below:

  for every batch: the phases Gmain, Greg, Dmain, Dreg (lazy regularisation), G_ema, ADA p
  at every tick: a log line; at snapshot ticks: a sample grid, metrics, a resumable snapshot
  at the end: final.safetensors (exported networks)

Semantics follow stylegan2-ada-pytorch (docs/reference.md §2). Unlike it, a snapshot holds the whole training
state (optimisers, augmentation p and statistics, path-length mean, RNG states, counters), so ``--resume``
continues exactly where the run stopped.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import save_bundle
from ..config import TrainConfig
from ..errors import FewshotError
from ..watch.hooks import on_finish, on_snapshot, on_tick, watching
from . import distributed
from . import run_dir as layout
from .networks import lazy_opt_kwargs, render_fakes, save_grid
from .run import Progress, Run, TickStats, TrainingInterrupted
from .setup import Request, setup
from .stops import RunOutput, signal_name

__all__ = ["Progress", "TrainingInterrupted", "lazy_opt_kwargs", "run", "train"]


def train(
    cfg: TrainConfig,
    resume: str | None = None,
    dry_run: bool = False,
    aug_preview: Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    max_ticks: int | None = None,
    kimg_override: float | None = None,
    data_override: str | None = None,
    resume_request: dict[str, Any] | None = None,
    plan: bool = True,
) -> Path | None:
    """Run (or resume) a training run; returns the run folder (None for --dry-run / --aug-preview).

    On resume the snapshot's config wins; ``kimg_override`` trains longer and ``data_override`` names the
    run's data again (the same source, or its new place when the original is gone). ``resume_request`` holds
    the values the resuming command gave: those equal to the run's are accepted, others refused
    (:func:`fewshot.config.resumed_config`). ``plan`` times a warm-up step for the plan shown before training."""
    request = Request(resume=resume, dry_run=dry_run, aug_preview=aug_preview, progress=progress,
                      kimg_override=kimg_override, data_override=data_override, resume_request=resume_request,
                      plan=plan)
    with ExitStack() as held:  # the run folder's lock, released however the run ends
        held.enter_context(_process_torch_settings())
        built = setup(cfg, request, echo, held)
        if not isinstance(built, Run):
            return built  # a dry run or a preview (None), or a resumed run that had already finished
        return run(built, max_ticks=max_ticks, progress=progress)


def run(run: Run, max_ticks: int | None = None, progress: bool = True) -> Path | None:
    """Train ``run`` until its kimg (or ``max_ticks`` ticks), a stop, or an error; returns its folder."""
    cfg, hyper, state = run.cfg, run.hyper, run.progress
    total_nimg = int(cfg.kimg * 1000)
    clock = TickClock(start_elapsed=state.elapsed_sec)
    tick_stats = TickStats()
    bar = _progress_bar(total_nimg, state.cur_nimg, progress and run.is_main)
    with run.stop, watching(run):
        while state.cur_nimg < total_nimg:
            train_batch(run, tick_stats)
            if bar is not None:
                bar = _bar_call(bar, run.out, "update", hyper.batch)
            if run.is_main:
                run.out.check()  # a reader gone between writes (`| head`, a closed terminal) stops the run too

            # ---- Tick: the log line; at snapshot ticks the grid, the metrics and the snapshot.
            done = state.cur_nimg >= total_nimg
            tick_due = state.cur_nimg >= state.tick_start_nimg + cfg.tick_kimg * 1000
            stop_now = bool(run.stop) or distributed.any_flag(bool(run.stop), run.dist)
            if not (done or tick_due or stop_now):
                continue
            bar = end_tick(run, tick_stats, clock, bar, total_nimg)
            tick_stats = TickStats()
            last_tick = max_ticks is not None and state.cur_tick >= max_ticks
            if run.is_main and (done or stop_now or last_tick or (cfg.snap > 0 and state.cur_tick % cfg.snap == 0)):
                snapshot_tick(run, done)
            distributed.barrier(run.dist)
            if stop_now:
                raise stopped(run, bar)
            if last_tick:
                break
    if bar is not None:
        _bar_call(bar, run.out, "close")
    if run.is_main and state.cur_nimg >= total_nimg:
        with _writing(layout.FINAL_NAME, run.run_dir):
            final = _write_export(run, layout.final_path(run.run_dir))
        run.out(f"done: {state.cur_nimg / 1000:g} kimg; wrote {final}")
        on_finish(run)
    distributed.barrier(run.dist)
    return run.run_dir


def train_batch(run: Run, tick_stats: TickStats) -> None:
    """One batch: every phase whose interval divides the batch index, then G_ema, the counters, ADA's p and
    AdaFM's start gate."""
    state = run.progress
    real, real_c, phase_z, phase_c = run.draw(run.data_gen)
    for phase, z, gen_c in zip(run.phases, phase_z, phase_c, strict=True):
        if state.batch_idx % phase.interval == 0 and phase.active:
            run.step(phase, real, real_c, z, stats=tick_stats, gen_c=gen_c)
    run.update_ema()
    state.cur_nimg += run.hyper.batch
    state.batch_idx += 1
    distributed.sync_augment_stats(run.augment, run.dist)
    run.augment.update(run.hyper.batch)
    run.transfer.on_kimg(state.cur_nimg / 1000)


# ---------------------------------------------------------------------------------------------
# Ticks


class TickClock:
    """Wall time of the current tick and of the run across sessions (resumes add to it)."""

    def __init__(self, start_elapsed: float) -> None:
        self.start_elapsed = start_elapsed
        self.session_start = self.tick_start = time.time()


def end_tick(run: Run, stats: TickStats, clock: TickClock, bar: Any, total_nimg: int) -> Any:
    """Log the tick (log.jsonl, the terminal, the bar) and start the next one; returns the bar (None once gone)."""
    state = run.progress
    means = stats.means()
    _check_finite(means, state, run.run_dir)
    now = time.time()
    tick_nimg = state.cur_nimg - state.tick_start_nimg
    state.elapsed_sec = clock.start_elapsed + (now - clock.session_start)
    sec_per_kimg = (now - clock.tick_start) / max(tick_nimg / 1000, 1e-8)
    record = {
        "tick": state.cur_tick, "kimg": round(state.cur_nimg / 1000, 3),
        "sec_per_tick": round(now - clock.tick_start, 3), "sec_per_kimg": round(sec_per_kimg, 3),
        **{k: round(v, 5) for k, v in means.items()},
        **{f"aug_{k}": round(v, 5) for k, v in run.augment.stats().items()},
        "lr_g": run.hyper.lr_g, "lr_d": run.hyper.lr_d, "pl_mean": round(float(run.loss.pl_mean), 5),
        "mem_mb": _memory_mb(run.device), "time": round(state.elapsed_sec, 1),
    }
    record["eta_sec"] = round(record["sec_per_kimg"] * max(total_nimg - state.cur_nimg, 0) / 1000, 1)
    if run.dist.enabled:
        record["ranks_in_sync"] = distributed.params_in_sync([run.G, run.D], run.dist)
        if not record["ranks_in_sync"]:
            raise FewshotError("data-parallel ranks hold different weights; stopping")
    if run.is_main:
        with layout.log_path(run.run_dir).open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        on_tick(run, record)
        bar = _report(bar, run.out, record)
        if bar is not None:
            bar = _bar_call(bar, run.out, "set_postfix", G=f"{means.get('loss_G', 0):.3f}",
                            D=f"{means.get('loss_D', 0):.3f}", p=f"{float(run.augment.p):.3f}")
    state.cur_tick += 1
    state.tick_start_nimg = state.cur_nimg
    clock.tick_start = now
    return bar


def snapshot_tick(run: Run, done: bool) -> None:
    """The sample grid, the metrics when due, the snapshot (also when an evaluation fails), the best export."""
    state, run_dir = run.progress, run.run_dir
    grid = layout.fakes_path(run_dir, state.cur_nimg)
    with _writing(f"the sample grid at {state.cur_nimg / 1000:g} kimg", run_dir):
        save_grid(render_fakes(run.G_ema, run.latents, run.hyper.batch_gpu, run.grid_priors), grid,
                  run.cfg.sample_grid)
    try:
        metrics = _maybe_metrics(run, done)
    except BaseException:  # a failed evaluation does not cost the training since the last snapshot
        _write_snapshot(run)
        raise
    with _writing(f"the snapshot at {state.cur_nimg / 1000:g} kimg", run_dir):
        _write_snapshot(run)
    layout.prune_snapshots(run_dir, run.cfg.keep)
    if metrics is not None:
        _maybe_best(run, metrics)
    on_snapshot(run, grid, metrics)


def stopped(run: Run, bar: Any) -> TrainingInterrupted:
    """The stop a signal or a lost output asked for: said on the terminal and in the log, as an exception."""
    if bar is not None:
        _bar_call(bar, run.out, "close")
    snap_path = layout.snapshot_path(run.run_dir, run.progress.cur_nimg) if run.run_dir else None
    interrupted = run.interrupted(snap_path)
    if run.is_main:
        kimg = run.progress.cur_nimg / 1000
        run.out.record({"event": "stop", "cause": signal_name(interrupted.signum), "kimg": round(kimg, 3),
                        "snapshot": str(snap_path), "exit_code": interrupted.exit_code})
        on_finish(run)  # the report says stopped, and why
        run.out.err(f"stopped by {signal_name(interrupted.signum)} at {kimg:g} kimg; wrote {snap_path}; continue "
                    f"with `fewshot train --resume {run.run_dir}` (or --resume latest)")
    return interrupted


# ---------------------------------------------------------------------------------------------
# Writing: snapshots, exports, metrics


def _write_snapshot(run: Run) -> Path:
    networks, training, tensors = run.snapshot_payload()
    path = layout.snapshot_path(run.run_dir, run.progress.cur_nimg)
    save_bundle(path, networks, provenance={"run": run.run_dir.name, "base": run.cfg.base}, training=training,
                state_tensors=tensors)
    return path


def _write_export(run: Run, path: Path, metrics: dict[str, Any] | None = None) -> Path:
    training, tensors = run.export_payload(metrics)
    return save_bundle(path, run.exported(), provenance={"run": path.parent.name, "base": run.cfg.base},
                       training=training, state_tensors=tensors or None)


def _maybe_metrics(run: Run, done: bool) -> dict | None:
    section = run.cfg.metrics
    if not section.names:
        return None
    if not done and (section.every <= 0 or run.progress.cur_tick % section.every != 0):
        return None
    from ..metrics import compute_metrics

    generator = run.transfer.export_generator(run.G_ema)
    if run.disp_bank is not None:  # metrics draw z only: the wrapper draws the priors (mixup / GMM)
        from ..disp.sample import PriorSampledGenerator

        generator = PriorSampledGenerator(generator, run.disp_bank, seed=run.cfg.seed)
    result = compute_metrics(generator, run.images.images, metrics=section.names, n_fake=section.n,
                             device=str(run.device), progress=False, extractors=run.metric_extractors,
                             options=section.options, sheets_dir=run.run_dir)  # e.g. copies.png, the latest
    record = {"kimg": round(run.progress.cur_nimg / 1000, 3), **result}
    with layout.metrics_path(run.run_dir).open("a") as fh:
        fh.write(json.dumps(record, default=float) + "\n")
    run.out("metrics: " + ", ".join(f"{k}={v}" for k, v in result.items() if isinstance(v, (int, float))))
    return result


def _maybe_best(run: Run, metrics: dict) -> None:
    best = run.cfg.metrics.best
    from ..registry import metrics as metric_registry

    reports = metric_registry.get(best).extra.get("reports") or (best,)
    value = metrics.get(reports[0])  # the metric's headline value
    if isinstance(value, dict):
        value = value.get("mean")
    if value is None:
        return
    if run.progress.best_metric is None or value < run.progress.best_metric:
        run.progress.best_metric = float(value)
        _write_export(run, layout.best_path(run.run_dir), metrics=metrics)
        run.out(f"new best {best}={value:.3f} -> {layout.BEST_NAME}")


@contextmanager
def _writing(what: str, run_dir: Path) -> Iterator[None]:
    """A write that fails (a full disk, a folder gone) stops the run with one line that says what failed and
    which snapshot the run can resume from: snapshots are written atomically, so the earlier ones are whole."""
    try:
        yield
    except OSError as exc:
        snaps = layout.list_snapshots(run_dir)
        hint = (f"{snaps[-1].name} is intact: free some space, then `fewshot train --resume {run_dir}`" if snaps
                else "no snapshot was written yet: free some space and start the run again")
        raise FewshotError(f"could not write {what}: {exc.strerror or exc}", hint=hint) from None


# ---------------------------------------------------------------------------------------------
# Small helpers


@contextmanager
def _process_torch_settings() -> Iterator[None]:
    """A run sets process-wide torch switches (deterministic algorithms, cuDNN autotuning, TF32); a program that
    calls train() gets its own settings back when the run ends."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[2:]


def _check_finite(means: dict[str, float], state: Progress, run_dir: Path | None) -> None:
    bad = [k for k, v in means.items() if not math.isfinite(v)]
    if bad:
        snaps = layout.list_snapshots(run_dir) if run_dir else []
        last = f"last good checkpoint: {snaps[-1]}" if snaps else "no checkpoint was written yet"
        raise FewshotError(f"training diverged at {state.cur_nimg / 1000:.1f} kimg ({', '.join(bad)} not finite); "
                           f"{last}", hint="lower the learning rate or gamma, then --resume")


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return 0.0


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="img", unit_scale=True, dynamic_ncols=True, desc="train",
                disable=None)  # off when stderr is not a terminal (log files): the tick lines say the same


def _bar_call(bar: Any, out: RunOutput, method: str, *args: Any, **kwargs: Any) -> Any:
    """A progress-bar call that survives a terminal gone away: the bar is dropped (returns None), the run goes on."""
    try:
        getattr(bar, method)(*args, **kwargs)
        return bar
    except OSError:
        out.mark_gone(2)
        return None


def _report(bar: Any, echo: Callable[[str], None], record: dict[str, Any]) -> Any:
    from .plan import format_duration

    parts = [f"tick {record['tick']}", f"kimg {record['kimg']:.3f}", f"sec/kimg {record['sec_per_kimg']:.1f}"]
    for key in ("loss_G", "loss_D", "loss_reg", "r1_penalty", "pl_penalty", "aug_p"):
        if key in record:
            parts.append(f"{key} {record[key]:.4g}")  # .4g: the Reg-DGM term is often ~1e-5
    parts.append(f"eta {format_duration(record['eta_sec'])}")
    line = "  ".join(parts)
    if bar is not None:
        try:
            bar.write(line)  # tqdm.write: to stdout, around the bar
            return bar
        except OSError:  # stdout's reader is gone: the run's output says so and stops the run after this tick
            pass
    echo(line)
    return bar
