"""Images to files: PNG/JPEG encoding on writer threads, grids and sheets, GIF/MP4/frame folders, output folders.

Images arrive as uint8 tensors ``[C, H, W]`` (or batches ``[N, C, H, W]``) from :mod:`fewshot.synthesis`;
every file is written atomically (a temporary file, then a rename), so an interrupted command leaves
no torn image for a later run to keep.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import FewshotError
from .synthesis import (
    DEFAULT_BATCH,
    Conditions,
    GridShape,
    check_choice,
    check_truncation,
    iter_sample_batches,
    make_grid,
    style_mix_cells,
)

if TYPE_CHECKING:  # only for type hints; fewshot.nets imports the ops
    from .nets import Generator

IMAGE_FORMATS = ("png", "jpg")
JPEG_QUALITY = 95


# --------------------------------------------------------------------------------------------
# Writing images


def _as_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    array = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3:
        raise FewshotError(f"expected a uint8 image [C, H, W], got {array.dtype} {tuple(array.shape)}")
    return np.ascontiguousarray(array.transpose(1, 2, 0))


def image_format(path: Path) -> str:
    """png or jpg from a file name; anything else is an error."""
    suffix = path.suffix.lower().lstrip(".")
    suffix = "jpg" if suffix == "jpeg" else suffix
    if suffix not in IMAGE_FORMATS:
        raise FewshotError(f"{path}: unknown image format {path.suffix or '(none)'!r}; use .png or .jpg")
    return suffix


def encode_image(hwc: np.ndarray, fmt: str) -> bytes:
    """PNG or JPEG bytes of an ``[H, W, C]`` uint8 array (C = 1 grayscale, 3 RGB)."""
    import io

    from PIL import Image

    if hwc.shape[2] == 1:
        pil = Image.fromarray(hwc[:, :, 0], "L")
    elif hwc.shape[2] == 3:
        pil = Image.fromarray(hwc, "RGB")
    else:
        raise FewshotError(f"cannot write an image with {hwc.shape[2]} channels (1 or 3 supported)")
    buffer = io.BytesIO()
    if fmt == "jpg":
        pil.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        pil.save(buffer, format="PNG")
    return buffer.getvalue()


def write_file(path: Path, data: bytes) -> None:
    """Write via a temp file and rename, so an interrupted run leaves no torn image to be kept later."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise FewshotError(f"cannot write {path}: {exc.strerror or exc}") from None


def default_writers() -> int:
    """Encoding threads for :class:`ImageWriter`: one per CPU core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


class ImageWriter:
    """Encodes and writes images on a few threads while the caller generates the next batch.

    PNG and JPEG encoding (zlib, libjpeg) release the GIL, so the threads run in parallel with each
    other and with the generator. That matters most on a GPU: a batch there takes milliseconds while
    one 1024 px PNG takes about a tenth of a second, and written one after the other the files, not
    the network, would set the pace of ``fewshot sample --n 50000``. ``writers=0`` encodes inline.

    Files are written atomically (:func:`write_file`). At most ``4 * writers`` images wait in memory
    (``submit`` then waits for the oldest). The first failure is raised, once, from ``submit`` or
    from leaving the ``with`` block; an exception or Ctrl-C in the caller cancels what has not started.
    ``written`` lists the files in submission order once the block is left.
    """

    def __init__(self, writers: int | None = None) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.writers = default_writers() if writers is None else int(writers)
        if self.writers < 0:
            raise FewshotError(f"--writers must be 0 or more, got {self.writers}")
        self._pool = ThreadPoolExecutor(self.writers, thread_name_prefix="fewshot-writer") if self.writers else None
        self._pending: deque = deque()
        self._max_pending = 4 * max(self.writers, 1)
        self.written: list[Path] = []

    @staticmethod
    def _write(image: torch.Tensor | np.ndarray, path: Path, fmt: str) -> Path:
        write_file(path, encode_image(_as_hwc(image), fmt))
        return path

    def submit(self, image: torch.Tensor | np.ndarray, path: Path, fmt: str) -> None:
        if self._pool is None:
            self.written.append(self._write(image, path, fmt))
            return
        while len(self._pending) >= self._max_pending:
            self.written.append(self._pending.popleft().result())
        self._pending.append(self._pool.submit(self._write, image, path, fmt))

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is None:
            return
        try:
            if exc_type is None:
                while self._pending:
                    self.written.append(self._pending.popleft().result())
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def save_image(image: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """One uint8 image ``[C, H, W]`` to a .png/.jpg file (format from the suffix)."""
    path = Path(path)
    fmt = image_format(path)
    ensure_writable_dir(path.parent)
    write_file(path, encode_image(_as_hwc(image), fmt))
    return path


def save_image_grid(images: torch.Tensor | np.ndarray, path: str | Path, grid: tuple[int, int]) -> Path:
    """Write ``[N, C, H, W]`` uint8 images as one grid image, ``grid = (cols, rows)``; .png or .jpg."""
    return save_image(make_grid(images, grid), path)


def ensure_writable_dir(folder: Path) -> Path:
    """Create ``folder`` if needed; fail with one line if it cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FewshotError(f"cannot write to {folder}: a file of that name exists") from None
    except OSError as exc:
        raise FewshotError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FewshotError(f"output folder {folder} is not writable")
    return folder


@contextlib.contextmanager
def output_folder(folder: str | Path) -> Iterator[Path]:
    """:func:`ensure_writable_dir`, undone if what follows fails: a failed command leaves no empty folder."""
    folder = Path(folder)
    created: list[Path] = []  # the folders this call makes, deepest first
    probe = folder
    while not probe.exists() and probe.parent != probe:
        created.append(probe)
        probe = probe.parent
    ensure_writable_dir(folder)
    try:
        yield folder
    except BaseException:
        for path in created:
            try:
                path.rmdir()  # only if empty: nothing written is ever removed
            except OSError:
                break
        raise


# --------------------------------------------------------------------------------------------
# The sample command


@dataclass
class SampleReport:
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    grid: Path | None = None
    grid_kept: bool = False


def seed_filename(seed: int, fmt: str = "png") -> str:
    """``seed0042.png``, the official generate.py naming."""
    return f"seed{seed:04d}.{fmt}"


def sample_to_folder(
    G: Generator,
    seeds: Sequence[int],
    outdir: str | Path,
    psi: float = 1.0,
    trunc_cutoff: int | None = None,
    trunc_z: float | None = None,
    noise_mode: str = "const",
    grid: GridShape | None = None,
    write_files: bool = True,
    batch_size: int = DEFAULT_BATCH,
    fmt: str = "png",
    overwrite: bool = False,
    class_idx: int | None = None,
    progress: bool | None = None,
    conditions: Conditions | None = None,
    writers: int | None = None,
) -> SampleReport:
    """Per-seed files ``seed0042.png`` and/or one ``grid.png`` (first rows*cols seeds) in ``outdir``.

    Existing files are kept (and their seeds not generated again) unless ``overwrite``. ``writers``:
    encoding threads (:class:`ImageWriter`; default one per core up to 8, 0 = inline).
    """
    check_choice(fmt, IMAGE_FORMATS, "image format")
    check_truncation(G, psi, trunc_cutoff)
    seeds = list(seeds)
    if not seeds:
        raise FewshotError("no seeds to sample")
    if grid is not None and grid.cells > len(seeds):
        raise FewshotError(f"a {grid.rows}x{grid.cols} grid needs {grid.cells} seeds, but only {len(seeds)} were given")
    if grid is None and not write_files:
        raise FewshotError("nothing to write: ask for per-seed files or a grid")
    outdir = ensure_writable_dir(Path(outdir))
    report = SampleReport()

    files_wanted: dict[int, Path] = {}
    if write_files:
        for seed in dict.fromkeys(seeds):  # duplicates write one file
            path = outdir / seed_filename(seed, fmt)
            if path.exists() and not overwrite:
                report.kept.append(path)
            else:
                files_wanted[seed] = path
    grid_path = outdir / f"grid.{fmt}" if grid is not None else None
    grid_seeds: list[int] = []
    if grid_path is not None:
        if grid_path.exists() and not overwrite:
            report.grid, report.grid_kept = grid_path, True
        else:
            grid_seeds = seeds[: grid.cells]

    todo = list(dict.fromkeys([s for s in seeds if s in files_wanted] + grid_seeds))
    if progress is None:
        progress = len(todo) > 4 * batch_size
    grid_images: dict[int, torch.Tensor] = {}
    needed_for_grid = set(grid_seeds)
    with ImageWriter(writers) as writer:  # encodes this batch while the generator runs the next
        for batch_seeds, images in iter_sample_batches(
            G, todo, psi=psi, trunc_cutoff=trunc_cutoff, trunc_z=trunc_z, noise_mode=noise_mode,
            batch_size=batch_size, class_idx=class_idx, progress=progress, conditions=conditions,
        ):
            for seed, image in zip(batch_seeds, images, strict=True):
                if seed in files_wanted:
                    writer.submit(image, files_wanted[seed], fmt)
                if seed in needed_for_grid:
                    grid_images[seed] = image
    report.written = writer.written
    if grid_seeds:
        stacked = torch.stack([grid_images[s] for s in grid_seeds])
        report.grid = save_image_grid(stacked, grid_path, (grid.cols, grid.rows))
    return report


# --------------------------------------------------------------------------------------------
# Animations


def animation_kind(out: str | Path) -> str:
    """``gif``, ``mp4``, ``frames`` (a folder) or ``png`` (a strip), from the --out path."""
    text = str(out)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir() or path.suffix == "":
        return "frames"
    suffix = path.suffix.lower()
    if suffix in (".gif", ".mp4", ".png"):
        return suffix[1:]
    raise FewshotError(f"unknown output {path.name!r}: use a .gif, an .mp4, a .png strip or a folder for frames")


def _check_fps(fps: float) -> float:
    if not (math.isfinite(fps) and 0 < fps <= 240):
        raise FewshotError(f"--fps must be between 0 and 240, got {fps}")
    return fps


def strip_image(frames: Sequence[torch.Tensor]) -> np.ndarray:
    """Frames side by side in one row ``[C, H, F*W]``."""
    if not frames:
        raise FewshotError("no frames for a strip")
    return make_grid(torch.stack(list(frames)), (len(frames), 1))


def write_gif(frames: Sequence[torch.Tensor], path: Path, fps: float) -> Path:
    """An endlessly looping GIF (loop=0). GIF delays are in 10 ms units, so fps is rounded to that."""
    import io

    from PIL import Image

    _check_fps(fps)
    ensure_writable_dir(path.parent)
    pictures = [Image.fromarray(_as_hwc(f)[:, :, 0] if f.shape[0] == 1 else _as_hwc(f)) for f in frames]
    duration = max(20, int(round(100.0 / fps)) * 10)
    buffer = io.BytesIO()
    # disposal 1 keeps each full frame; Pillow still merges identical consecutive frames into one.
    pictures[0].save(
        buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=duration, loop=0, disposal=1,
    )
    write_file(path, buffer.getvalue())
    return path


def write_mp4(frames: Iterable[torch.Tensor], path: Path, fps: float) -> Path:
    """H.264 MP4 through imageio-ffmpeg (the optional ``video`` extra)."""
    _check_fps(fps)
    try:
        import imageio_ffmpeg
    except ImportError:
        raise FewshotError(
            "writing MP4 needs imageio-ffmpeg, which is not installed",
            hint="pip install 'fewshot[video]' (or imageio-ffmpeg), or write a .gif or a frames folder",
        ) from None
    ensure_writable_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    writer = None
    try:
        for frame in frames:
            hwc = _as_hwc(frame)
            if hwc.shape[2] == 1:
                hwc = np.repeat(hwc, 3, axis=2)
            if writer is None:
                writer = imageio_ffmpeg.write_frames(
                    str(tmp), (hwc.shape[1], hwc.shape[0]), fps=fps, codec="libx264", pix_fmt_in="rgb24",
                    pix_fmt_out="yuv420p", quality=8, macro_block_size=2, ffmpeg_log_level="error",
                )
                writer.send(None)  # start the encoder
            writer.send(np.ascontiguousarray(hwc))
        if writer is None:
            raise FewshotError("no frames to write")
        writer.close()
        writer = None
        os.replace(tmp, path)
    except OSError as exc:
        raise FewshotError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return path


def write_frames(frames: Iterable[torch.Tensor], folder: Path, writers: int | None = None) -> list[Path]:
    """Numbered PNGs ``frame00000.png`` ... in ``folder``, encoded on ``writers`` threads (:class:`ImageWriter`)."""
    ensure_writable_dir(folder)
    with ImageWriter(writers) as writer:
        for index, frame in enumerate(frames):
            writer.submit(frame, folder / f"frame{index:05d}.png", "png")
    return writer.written


def strip_path_for(out: Path, kind: str) -> Path:
    """Where ``--strip`` puts its PNG next to an animation: walk.gif -> walk-strip.png, frames/ -> frames/strip.png."""
    if kind == "frames":
        return out / "strip.png"
    return out.with_name(f"{out.stem}-strip.png")


# --------------------------------------------------------------------------------------------
# Style-mixing sheet


def style_mix_sheet(
    G: Generator, row_seeds: Sequence[int], col_seeds: Sequence[int], styles: Sequence[int], **kwargs: Any
) -> np.ndarray:
    """The sheet of the official style_mixing.py as uint8 ``[C, (R+1)*H, (C+1)*W]``: the cells of
    :func:`fewshot.synthesis.style_mix_cells` (black corner, column seeds on top, row seeds down the left),
    which takes the keyword arguments (psi, noise_mode, batch_size, class_idx, conditions)."""
    row_seeds, col_seeds = list(row_seeds), list(col_seeds)
    cells = style_mix_cells(G, row_seeds, col_seeds, styles, **kwargs)
    return make_grid(cells, (len(col_seeds) + 1, len(row_seeds) + 1))


# --------------------------------------------------------------------------------------------
# One row per class


def class_grid(G: Generator, seeds: Sequence[int], classes: Sequence[int], path: str | Path,
               **kwargs: Any) -> Path:
    """A grid of a class-conditional generator: row i is class ``classes[i]``, column j seed ``seeds[j]`` (the same
    latent down a column, so the rows differ by class only). ``kwargs`` go to
    :func:`fewshot.synthesis.iter_sample_batches` (psi, trunc_cutoff, trunc_z, noise_mode, batch_size)."""
    rows = [torch.cat([images for _, images in iter_sample_batches(G, list(seeds), class_idx=k, **kwargs)])
            for k in classes]
    return save_image_grid(torch.cat(rows), path, (len(seeds), len(classes)))
