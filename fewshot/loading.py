"""Where a generator comes from and where it runs: checkpoint references, run folders, the device.

A reference is a file (a fewshot bundle or an official pickle), a run folder (its best, final or
newest checkpoint), or anything :func:`fewshot.hub.resolve_checkpoint` knows (names, URLs, hf://).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import FewshotError
from .pathkind import path_kind

if TYPE_CHECKING:  # only for type hints; fewshot.nets imports the ops
    from .nets import Generator

from .train.run_dir import CHECKPOINTS_DIR  # noqa: E402
from .train.run_dir import EXPORT_NAMES as RUN_FOLDER_CHOICES  # noqa: E402 - best, then final: the layout's owner says

# --------------------------------------------------------------------------------------------
# Device


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FewshotError("--device cuda was asked for, but no CUDA device is available", hint="use --device cpu")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise FewshotError(f"unknown device {name!r}; choose auto, cpu or cuda")


def prepare_device(device: torch.device) -> torch.device:
    """Process settings for generating on ``device``: on the CPU, keep freed memory for reuse
    (each batch frees and reallocates the same large tensors; see fewshot.host_memory)."""
    if device.type == "cpu":
        from .host_memory import keep_freed_memory

        keep_freed_memory()
    return device


# --------------------------------------------------------------------------------------------
# Loading


def _newest_snapshot(folder: Path) -> Path | None:
    snapshots = list(folder.glob("*.safetensors"))
    if not snapshots:
        return None

    # Snapshot names carry the image count (snapshot-000040); order by it, then by age.
    def key(p: Path) -> tuple[int, float]:
        digits = re.findall(r"\d+", p.stem)
        return (int(digits[-1]) if digits else -1, p.stat().st_mtime)

    return max(snapshots, key=key)


def resolve_run_folder(folder: Path) -> Path:
    """The checkpoint a run folder stands for: best, then final, then its newest snapshot."""
    for name in RUN_FOLDER_CHOICES:
        if (folder / name).is_file():
            return folder / name
    newest = _newest_snapshot(folder / CHECKPOINTS_DIR)
    if newest is not None:
        return newest
    raise FewshotError(
        f"{folder} is a folder without a checkpoint",
        hint="a run folder holds best.safetensors, final.safetensors or checkpoints/*.safetensors",
    )


def resolve_reference(ref: str | Path) -> Path:
    """A file, a run folder, or anything the hub resolver knows (names, URLs, hf://) -> a local file."""
    try:
        path = Path(ref).expanduser()
    except (RuntimeError, ValueError):  # ~user of an unknown user: no home folder to expand
        path = Path(ref)
    kind = path_kind(path)
    if kind == "file":
        return path
    if kind == "folder":
        return resolve_run_folder(path)
    from .hub import resolve_checkpoint  # deferred: only a reference that is no local path needs the hub

    return Path(resolve_checkpoint(str(ref)))


def load_generator(ref: str | Path, device: str | torch.device = "cpu") -> Generator:
    """A generator ready to sample (eval mode, no grads) from a bundle, a pickle, a run folder or a hub name.

    Uses ``G_ema`` when the checkpoint has it, else ``G``; the discriminator is not loaded from bundles.
    """
    from .checkpoint import detect_format, load_checkpoint, read_header

    device = resolve_device(device) if isinstance(device, str) else device
    path = resolve_reference(ref)
    names: tuple[str, ...] | None = None
    if detect_format(path) == "safetensors":
        specs = read_header(path).specs
        names = next(((n,) for n in ("G_ema", "G") if n in specs), None)
        if names is None:
            raise FewshotError(f"{path}: this checkpoint holds no generator (neither G_ema nor G)")
    bundle = load_checkpoint(path, names=names, device=str(device))
    generator = bundle.generator
    return generator.to(device).eval().requires_grad_(False)

