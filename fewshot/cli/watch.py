"""Watching runs: ``fewshot report``, ``fewshot timelapse``, ``fewshot runs`` (fewshot.watch does the work)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .app import PANEL_TRAIN, app


def _run_folder(run: Path) -> Path:
    from ..errors import FewshotError
    from ..train import run_dir as layout

    if not run.is_dir():
        raise FewshotError(f"{run} is not a folder", hint="give a run folder, e.g. runs/00000-flowers-ada")
    if not (layout.config_path(run).is_file() or layout.log_path(run).is_file()):
        raise FewshotError(f"{run} is not a run folder (no config.toml or log.jsonl)",
                           hint="`fewshot runs OUTDIR` lists the run folders")
    return run


@app.command(
    rich_help_panel=PANEL_TRAIN,
    epilog="[bold]Examples[/bold]\n\n  fewshot report runs/00003-flowers-ada\n\n"
    "  fewshot report runs/00003-flowers-ada && xdg-open runs/00003-flowers-ada/report.html",
)
def report(run: Path = typer.Argument(..., help="A run folder.")) -> None:
    """Write RUN/report.html: curves, samples over time, config, what trains, checkpoints; one file, offline."""
    from ..watch.report import write_report

    typer.echo(f"wrote {write_report(_run_folder(run))}")


@app.command(
    rich_help_panel=PANEL_TRAIN,
    epilog="[bold]Examples[/bold]\n\n  fewshot timelapse runs/00003-flowers-ada --out progress.mp4\n\n"
    "  fewshot timelapse runs/00003-flowers-ada --out progress.gif --fps 8 --max-width 512",
)
def timelapse(
    run: Path = typer.Argument(..., help="A run folder."),
    out: Path = typer.Option(..., "--out", help="progress.mp4 (needs the video extra) or progress.gif."),
    fps: float = typer.Option(4.0, "--fps", help="Frames (grids) per second."),
    max_width: int = typer.Option(1024, "--max-width", help="Frames wider than this are scaled down (px)."),
) -> None:
    """The run's fixed-latent grids in order, one frame each, with the kimg stamped on every frame."""
    from ..watch.timelapse import write_timelapse

    path, frames = write_timelapse(_run_folder(run), out, fps=fps, max_width=max_width)
    typer.echo(f"wrote {path} ({frames} frames)")


@app.command(
    rich_help_panel=PANEL_TRAIN,
    epilog="[bold]Examples[/bold]\n\n  fewshot runs\n\n  fewshot runs ~/experiments --json",
)
def runs(
    outdir: Path = typer.Argument(Path("runs"), help="The folder holding the run folders (train's --outdir)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """A table of the runs in OUTDIR: preset, base, kimg done/target, state (training/stopped/finished), ETA."""
    from ..watch.runs import format_table, list_runs

    rows = list_runs(outdir)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no run folders in {outdir}")
        return
    for line in format_table(rows):
        typer.echo(line)
