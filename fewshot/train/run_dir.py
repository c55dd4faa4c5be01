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
  report.html            the run on one page (`fewshot report`; refreshed at each snapshot)
  transfer.txt           what is frozen, modulated and trained (the table a dry run prints)
  events.out.tfevents.*  TensorBoard's events (when the tensorboard package is installed)
```
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FewshotError

if TYPE_CHECKING:
    from ..checkpoint import Bundle

RUN_PATTERN = re.compile(r"^(\d{5})-(.+)$")
SNAPSHOT_GLOB = "snapshot-*.safetensors"
LOCK_NAME = ".lock"
# The files of a run folder: this module is the one place that names them.
CONFIG_NAME = "config.toml"
LOG_NAME = "log.jsonl"
METRICS_NAME = "metrics.jsonl"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
FINAL_NAME = "final.safetensors"
BEST_NAME = "best.safetensors"
EXPORT_NAMES = (BEST_NAME, FINAL_NAME)  # what a run folder stands for, in order of preference
PRIOR_BANK_NAME = "prior_bank.safetensors"  # DISP's priors of the training images
REPORT_NAME = "report.html"
TRANSFER_TABLE_NAME = "transfer.txt"
FAKES_PATTERN = re.compile(r"^fakes_(\d+)_(\d{3})\.png$")  # fakes_path's names, read back


def config_path(run_dir: Path) -> Path:
    return run_dir / CONFIG_NAME


def log_path(run_dir: Path) -> Path:
    return run_dir / LOG_NAME


def metrics_path(run_dir: Path) -> Path:
    return run_dir / METRICS_NAME


def reals_path(run_dir: Path) -> Path:
    return run_dir / SAMPLES_DIR / "reals.png"


def fakes_path(run_dir: Path, cur_nimg: int) -> Path:
    tag = f"{cur_nimg / 1000:08.3f}".replace(".", "_")
    return run_dir / SAMPLES_DIR / f"fakes_{tag}.png"


def list_fakes(run_dir: Path) -> list[tuple[float, Path]]:
    """The fixed-latent grids of a run as (kimg, path), oldest first."""
    found = []
    for path in (run_dir / SAMPLES_DIR).glob("fakes_*.png"):
        if match := FAKES_PATTERN.match(path.name):
            found.append((int(match.group(1)) + int(match.group(2)) / 1000, path))
    return sorted(found)


def report_path(run_dir: Path) -> Path:
    return run_dir / REPORT_NAME


def transfer_table_path(run_dir: Path) -> Path:
    return run_dir / TRANSFER_TABLE_NAME


def tfevents_dir(run_dir: Path) -> Path:
    """TensorBoard's event files go in the run folder itself: `tensorboard --logdir runs` names each run by it."""
    return run_dir


def final_path(run_dir: Path) -> Path:
    return run_dir / FINAL_NAME


def best_path(run_dir: Path) -> Path:
    return run_dir / BEST_NAME


def prior_bank_path(run_dir: Path) -> Path:
    return run_dir / PRIOR_BANK_NAME


def check_writable(folder: Path, what: str) -> None:
    """Refuse a folder the run could not write, before any image is decoded or network fetched."""
    import tempfile

    folder = folder.expanduser()
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent  # the nearest folder that exists is the one a mkdir would write into
    where = "" if probe == folder else f" (nothing can be created in {probe})"
    if not probe.is_dir():
        raise FewshotError(f"{what} {folder} cannot be written: {probe} is not a folder",
                           hint="choose a folder you can write, e.g. --outdir ~/runs")
    try:  # a real write: permissions, a read-only mount and a full disk all show here
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise FewshotError(f"{what} {folder} cannot be written{where}: {exc.strerror or exc}",
                           hint="choose a folder you can write, e.g. --outdir ~/runs") from None


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
    (path / SAMPLES_DIR).mkdir()
    (path / CHECKPOINTS_DIR).mkdir()
    return path


def lock_holder(run_dir: Path) -> int | None:
    """The pid of the process training ``run_dir`` now, or None (no lock, or not lockable here)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``<run>/.lock`` (an advisory lock, with the holder's pid inside) while this process writes the run.

    Two processes resuming one run would write snapshots of two diverging trainings under the same names;
    the second is refused with the first one's pid. The lock goes with the process, however it ends, and the
    file is removed when the run ends normally, so a finished run carries no stale lock. (A lock taken on a file
    that its holder had just removed is taken again on the new file.) Where ``fcntl`` is missing (Windows) runs
    are not locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = run_dir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise FewshotError(f"{run_dir} is being trained by another process" + (f" (pid {holder})" if holder else ""),
                               hint="let it finish, or stop it (Ctrl-C writes a snapshot), then resume") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and our lock
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        try:
            os.unlink(path)  # still holding the lock: nobody else can be using this file
        except OSError:
            pass
        os.close(fd)


def list_snapshots(run_dir: Path) -> list[Path]:
    """Snapshots of a run, oldest first (names are zero-padded image counts)."""
    return sorted((run_dir / CHECKPOINTS_DIR).glob(SNAPSHOT_GLOB))


def snapshot_path(run_dir: Path, cur_nimg: int) -> Path:
    return run_dir / CHECKPOINTS_DIR / f"snapshot-{cur_nimg:09d}.safetensors"


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


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file (log.jsonl, metrics.jsonl); none when it is missing."""
    import json

    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash
    return [r for r in out if isinstance(r, dict)]


def describe_run(run_dir: Path) -> dict[str, Any]:
    """What a run folder holds, read from its files without loading a tensor: recipe, progress (from the newest
    readable snapshot's header, else config.toml), the last tick line, the best metric and the files."""
    from ..checkpoint import read_header
    from ..config import tomllib  # tomli on Python 3.10

    snaps = list_snapshots(run_dir)
    config: dict[str, Any] = {}
    progress: dict[str, Any] = {}
    for snap in reversed(snaps):
        try:
            training = read_header(snap).training or {}
        except FewshotError:
            continue
        config, progress = training.get("config", {}), training.get("progress", {})
        break
    if config_path(run_dir).is_file():  # rewritten by a resume that raised --kimg: the run's target now
        try:
            config = {**config, **tomllib.loads(config_path(run_dir).read_text())}
        except (OSError, tomllib.TOMLDecodeError):
            pass

    def records(name: str) -> list[dict[str, Any]]:
        return read_records(run_dir / name)

    ticks = [r for r in records(LOG_NAME) if "tick" in r]  # besides ticks: stop events, messages
    sections = config.get("metrics")  # a [metrics] table, or (runs of earlier versions) flat keys
    metric = sections.get("best", "fid") if isinstance(sections, dict) else config.get("best_metric", "fid")
    scored = [r for r in records(METRICS_NAME) if isinstance(r.get(metric), (int, float))]
    best = min(scored, key=lambda r: r[metric]) if scored else None
    return {
        "path": str(run_dir),
        "preset": config.get("preset") or None,
        "data": config.get("data"),
        "base": config.get("base") or None,
        "base_note": config.get("base_note") or None,
        "target_kimg": config.get("kimg"),
        "done_kimg": progress["cur_nimg"] / 1000 if "cur_nimg" in progress else (ticks[-1].get("kimg") if ticks else 0),
        "last_tick": ticks[-1] if ticks else None,
        "best": {"metric": metric, "value": best[metric], "kimg": best.get("kimg")} if best else None,
        "training_now": lock_holder(run_dir),  # the pid of the process training it, if one is
        "snapshots": [p.name for p in snaps],
        "exports": [name for name in EXPORT_NAMES if (run_dir / name).is_file()],
    }


# ---------------------------------------------------------------------------------------------
# Resuming: which snapshot, which data


def load_snapshot(path: Path) -> Bundle:
    """A training snapshot's networks and state (FewshotError for anything else or an unreadable file)."""
    from ..checkpoint import load_bundle

    bundle = load_bundle(path, with_state=True)
    if not bundle.training or "config" not in bundle.training or "progress" not in bundle.training:
        raise FewshotError(f"{path} is not a training snapshot (no training state inside)")
    return bundle


def open_resume_point(resume: str, outdir: str, name: str | None,
                      echo: Callable[[str], None]) -> tuple[Path, Path, Bundle, list[Path]]:
    """The run folder, snapshot and its contents to resume from, and the unreadable snapshots passed over.

    For 'latest' or a run folder, an unreadable newest snapshot (a disk that filled up, a partial copy)
    does not strand the run: the one before it is used (the caller sets the bad ones aside once the resume
    goes ahead). A snapshot file named explicitly must itself be readable."""
    run_dir, snap = resolve_resume(resume, outdir, name)
    if Path(resume).is_file():
        return run_dir, snap, load_snapshot(snap), []
    candidates = list_snapshots(run_dir)[::-1]
    for index, path in enumerate(candidates):
        try:
            return run_dir, path, load_snapshot(path), candidates[:index]
        except FewshotError as exc:
            if index == len(candidates) - 1:
                raise
            echo(f"warning: {exc}; resuming from {candidates[index + 1].name}")
    raise FewshotError(f"{run_dir} holds no snapshot to resume from")  # not reached: the list is not empty


def _same_source(a: str, b: str) -> bool:
    from ..data import is_builtin_source  # numpy and torch: not at import (run_dir serves `fewshot info`)

    return a == b or (not is_builtin_source(a) and not is_builtin_source(b) and Path(a).resolve() == Path(b).resolve())


def resumed_data_source(original: str, given: str | None, resume: str,
                         echo: Callable[[str], None]) -> tuple[str, bool]:
    """The data a resumed run reads: its own, or, when that has moved, the place the user names (then True)."""
    from ..data import is_builtin_source

    original_exists = is_builtin_source(original) or Path(original).exists()
    if given is None or _same_source(given, original):
        if not original_exists:
            raise FewshotError(f"this run's data {original} no longer exists",
                               hint=f"give its new place: fewshot train NEW_PLACE --resume {resume}")
        return original, False
    if original_exists:
        raise FewshotError(f"this run trains on {original}, not {given}",
                           hint="resume without DATA (a run keeps its data), or start a new run with "
                                "--base <snapshot> to fine-tune on other images")
    if not is_builtin_source(given) and not Path(given).exists():
        raise FewshotError(f"data source {given} does not exist")
    echo(f"data: {original} no longer exists; reading this run's images from {given}")
    return given, True


def check_resumed_data(recorded: dict[str, Any] | None, now: dict[str, Any], source: str, moved: bool,
                        echo: Callable[[str], None]) -> None:
    """A resumed run continues exactly only on the images it started with: say so when they differ."""
    if not recorded or recorded.get("sha256") == now["sha256"]:
        return  # snapshots written before the record existed have nothing to compare
    change = f"{recorded.get('images')} -> {now['images']} images" if recorded.get("images") != now["images"] \
        else f"{now['images']} images, different pixels"
    message = f"the images in {source} differ from those this run started on ({change})"
    if moved:  # a new place holding other images is most likely the wrong folder
        raise FewshotError(message, hint="point DATA at the run's original images")
    echo(f"note: {message}; training goes on with them, so it does not continue exactly")
