"""The runs of an output folder at a glance: ``fewshot runs [OUTDIR]``.

A run's state comes from its folder alone:

* **training**: a live process holds ``.lock`` (run_dir.run_lock writes its pid there; the lock goes with the
  process, so a killed run never looks alive);
* **finished**: ``final.safetensors`` is there and the run reached its kimg (a resume may have raised it);
* **stopped**: neither; the cause is the last ``{"event": "stop"}`` of ``log.jsonl`` when one came after the last
  tick (a signal, a closed terminal), else the run ended without saying why (killed, crashed, out of memory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import FewshotError
from ..train import run_dir as layout


def run_state(run_dir: Path, described: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"state": "training" | "finished" | "stopped", "pid": ..., "cause": ...}`` of one run folder."""
    described = described or layout.describe_run(run_dir)
    target = described["target_kimg"]
    reached = not isinstance(target, (int, float)) or float(described["done_kimg"] or 0) >= float(target) - 1e-9
    if layout.FINAL_NAME in described["exports"] and reached:  # (a resume that raised --kimg is not finished)
        return {"state": "finished", "pid": None, "cause": None}
    pid = described["training_now"]
    cause = None
    for record in reversed(layout.read_records(layout.log_path(run_dir))):
        if "tick" in record:
            break  # ticks after the last stop: that stop was resumed from
        if record.get("event") == "stop":
            cause = str(record.get("cause") or "a stop request")
            break
    # A stop recorded by this very process (its report, written on the way out, while it still holds the lock)
    # is a stop; another process holding the lock after a stop line is a resume that has not ticked yet.
    if pid is not None and not (cause and pid == os.getpid()):
        return {"state": "training", "pid": pid if pid > 0 else None, "cause": None}
    return {"state": "stopped", "pid": None, "cause": cause or "no stop recorded (killed or crashed)"}


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """One row of the table: the run's recipe, progress, state, last losses, best metric and ETA."""
    described = layout.describe_run(run_dir)
    state = run_state(run_dir, described)
    tick = described["last_tick"] or {}
    target, done = described["target_kimg"], described["done_kimg"] or 0.0
    eta = None
    if state["state"] != "finished" and isinstance(tick.get("sec_per_kimg"), (int, float)) and target:
        eta = tick["sec_per_kimg"] * max(float(target) - float(done), 0.0)
    return {
        "name": run_dir.name, "path": str(run_dir), "preset": described["preset"], "base": described["base"],
        "done_kimg": float(done), "target_kimg": target, **state,
        "loss_G": tick.get("loss_G"), "loss_D": tick.get("loss_D"), "best": described["best"], "eta_sec": eta,
    }


def list_runs(outdir: Path) -> list[dict[str, Any]]:
    """A row per run folder (``NNNNN-name``) of ``outdir``, in number order."""
    if not outdir.is_dir():
        raise FewshotError(f"{outdir} is not a folder", hint="give the --outdir of your runs (default: runs)")
    folders = sorted(p for p in outdir.iterdir() if p.is_dir() and layout.RUN_PATTERN.match(p.name))
    return [summarize_run(p) for p in folders]


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"


def state_text(row: dict[str, Any]) -> str:
    if row["state"] == "training":
        return f"training (pid {row['pid']})" if row["pid"] else "training (another process)"
    if row["state"] == "stopped":
        return f"stopped: {row['cause']}"
    return "finished"


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as aligned text columns."""
    titles = ("name", "preset", "base", "kimg", "state", "loss_G", "loss_D", "best", "eta")
    cells = []
    for row in rows:
        best = row["best"]
        target = row["target_kimg"]
        cells.append((
            row["name"], row["preset"] or "-", row["base"] or "scratch",
            f"{row['done_kimg']:g}/{target:g}" if isinstance(target, (int, float)) else f"{row['done_kimg']:g}/?",
            state_text(row), _number(row["loss_G"]), _number(row["loss_D"]),
            f"{best['metric']} {best['value']:.4g} @{best['kimg']}" if best else "-",
            format_duration(row["eta_sec"]),
        ))
    widths = [max(len(t), *(len(c[i]) for c in cells)) if cells else len(t) for i, t in enumerate(titles)]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in (titles, *cells)]
