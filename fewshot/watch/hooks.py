"""What the training loop calls to be watched: at the start, at each tick, at each snapshot.

Watching never costs a run: a missing tensorboard package is one line at the start, and a report or an event
that cannot be written is one warning line, never a stop. Nothing here draws a random number or touches a
network, so a watched run trains exactly as an unwatched one (tests/test_tick_parity.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import settings
from ..train import run_dir as layout


@contextmanager
def watching(run: Any) -> Iterator[None]:
    """Open the run's event writer (main process only) and write the frozen/modulated/trained table once;
    close the writer however the run ends."""
    run.watch = None
    if not run.is_main or run.run_dir is None:
        yield
        return
    table = layout.transfer_table_path(run.run_dir)
    if not table.exists():
        _warn_on_error(run, "the transfer table", lambda: table.write_text(run.transfer.describe(run.G, run.D) + "\n"))
    if settings.tensorboard_events():  # FEWSHOT_TENSORBOARD=0: off (the benchmark's baseline)
        from .tfevents import EventWriter, tensorboard_missing

        missing = tensorboard_missing()
        if missing:
            run.out(missing)
        else:
            # A resume drops the events logged after its snapshot (TensorBoard purges steps >= purge_step).
            purge = run.progress.cur_nimg + 1 if run.progress.cur_nimg > 0 else None
            run.watch = _warn_on_error(run, "TensorBoard events",
                                       lambda: EventWriter(layout.tfevents_dir(run.run_dir), purge_step=purge))
            reals = layout.reals_path(run.run_dir)
            if run.watch is not None and purge is None and reals.is_file():
                _warn_on_error(run, "TensorBoard events", lambda: run.watch.image(reals, 0, "Samples/reals"))
    try:
        yield
    finally:
        if run.watch is not None:
            _warn_on_error(run, "TensorBoard events", run.watch.close)
            run.watch = None


def on_tick(run: Any, record: dict[str, Any]) -> None:
    """The tick's log line, as TensorBoard scalars."""
    if getattr(run, "watch", None) is not None:
        _warn_on_error(run, "TensorBoard events", lambda: run.watch.tick(record, run.progress.cur_nimg))


def on_snapshot(run: Any, grid: Path, metrics: dict[str, Any] | None) -> None:
    """The grid and the metrics to TensorBoard; the report page rewritten."""
    step = run.progress.cur_nimg
    if getattr(run, "watch", None) is not None:
        _warn_on_error(run, "TensorBoard events", lambda: run.watch.image(grid, step))
        if metrics:
            _warn_on_error(run, "TensorBoard events", lambda: run.watch.metrics(metrics, step))
    on_finish(run)


def on_finish(run: Any) -> None:
    """The report page rewritten (at each snapshot, and once final.safetensors is there to link)."""
    from .report import write_report

    _warn_on_error(run, "the report", lambda: write_report(run.run_dir))


def _warn_on_error(run: Any, what: str, action: Any) -> Any:
    try:
        return action()
    except Exception as exc:  # noqa: BLE001 - watching must not stop training
        run.out(f"warning: could not write {what}: {type(exc).__name__}: {exc}")
        return None
