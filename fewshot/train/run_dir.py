"""Run folders: ``<outdir>/NNNNN-<name>/`` with config, log, samples and checkpoints.

```
runs/00003-flowers100-ada/
  config.toml            the fully resolved config
  log.jsonl              one JSON line per tick
  metrics.jsonl          one line per metrics evaluation (when enabled)
  samples/reals.png      a grid of training images
  samples/fakes_<kimg>.png   G_ema on fixed latents, const noise
  checkpoints/snapshot-<nimg>.safetensors   full training state (resumable)
  final.safetensors      exported networks at the end
  best.safetensors       exported networks at the best metric (when enabled)
```
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import FewshotError

RUN_PATTERN = re.compile(r"^(\d{5})-(.+)$")
SNAPSHOT_GLOB = "snapshot-*.safetensors"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "run"


def new_run_dir(outdir: str | Path, name: str) -> Path:
    """Create the next numbered run folder."""
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FewshotError(f"cannot create output folder {outdir}: {exc.strerror or exc}") from None
    ids = [int(m.group(1)) for p in outdir.iterdir() if p.is_dir() and (m := RUN_PATTERN.match(p.name))]
    run_id = max(ids, default=-1) + 1
    while True:
        path = outdir / f"{run_id:05d}-{safe_name(name)}"
        try:
            path.mkdir()
            break
        except FileExistsError:  # another process took this number
            run_id += 1
    (path / "samples").mkdir()
    (path / "checkpoints").mkdir()
    return path


def list_snapshots(run_dir: Path) -> list[Path]:
    """Snapshots of a run, oldest first (names are zero-padded image counts)."""
    return sorted((run_dir / "checkpoints").glob(SNAPSHOT_GLOB))


def snapshot_path(run_dir: Path, cur_nimg: int) -> Path:
    return run_dir / "checkpoints" / f"snapshot-{cur_nimg:09d}.safetensors"


def latest_run(outdir: str | Path, name: str | None = None) -> Path:
    outdir = Path(outdir)
    runs = sorted(
        p for p in (outdir.iterdir() if outdir.is_dir() else [])
        if p.is_dir() and (m := RUN_PATTERN.match(p.name)) and (name is None or m.group(2) == safe_name(name))
        and list_snapshots(p)
    )
    if not runs:
        raise FewshotError(f"no run with a snapshot to resume in {outdir}" + (f" named {name!r}" if name else ""))
    return runs[-1]


def resolve_resume(resume: str, outdir: str | Path, name: str | None = None) -> tuple[Path, Path]:
    """``latest`` | a run folder | a snapshot file -> (run folder, snapshot file)."""
    if resume == "latest":
        run = latest_run(outdir, name)
        return run, list_snapshots(run)[-1]
    path = Path(resume)
    if path.is_dir():
        snaps = list_snapshots(path)
        if not snaps:
            raise FewshotError(f"{path} holds no snapshot to resume from (checkpoints/{SNAPSHOT_GLOB})")
        return path, snaps[-1]
    if path.is_file():
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return run, path
    raise FewshotError(f"cannot resume from {resume!r}: not 'latest', a run folder, or a snapshot file")


def prune_snapshots(run_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` snapshots."""
    snaps = list_snapshots(run_dir)
    for old in snaps[: max(len(snaps) - max(keep, 1), 0)]:
        try:
            old.unlink()
        except FileNotFoundError:
            pass
