"""Pictures from a generator: seeded samples with truncation, latent walks, style-mixing sheets.

The latent of seed ``s`` is drawn as NVIDIA's ``generate.py`` draws it,
``numpy.random.RandomState(s).randn(1, z_dim)``, and images are quantised as it quantises them,
``(img * 127.5 + 128).clamp(0, 255)`` to uint8, so the same network and seed give the same picture.

Everything here works on batches: a batch of seeds is one forward pass, never a loop of single
images. Results are uint8 tensors ``[N, C, H, W]`` on the CPU; writers turn them into files.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from .errors import FewshotError

if TYPE_CHECKING:  # only for type hints; fewshot.nets imports the ops
    from .nets import Generator

NOISE_MODES = ("const", "random", "none")
IMAGE_FORMATS = ("png", "jpg")
SPACES = ("w", "z")
METHODS = ("lerp", "slerp")
PSI_RANGE = (-2.0, 2.0)
MAX_SEED = 2**32 - 1  # RandomState accepts seeds in [0, 2**32)
JPEG_QUALITY = 95
RUN_FOLDER_CHOICES = ("best.safetensors", "final.safetensors")
DEFAULT_BATCH = 16
# seeds -> c [len(seeds), c_dim]: per-seed conditions other than class labels (DISP priors, fewshot.disp).
Conditions = Callable[[Sequence[int]], torch.Tensor]


# --------------------------------------------------------------------------------------------
# Parsing user input


def parse_seeds(text: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``: comma-separated seeds and inclusive ranges, order kept.

    Duplicates are kept (a user asking for seed 5 twice gets it twice); every seed must fit
    ``RandomState`` (0 to 2**32 - 1).
    """
    text = (text or "").strip()
    if not text:
        raise FewshotError("no seeds given", hint="use e.g. --seeds 0-63,100")
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if match is None:
            raise FewshotError(
                f"malformed seed list {text!r}: {part!r} is not a seed or a range",
                hint="write seeds as 0-63,100 (non-negative integers, ranges inclusive)",
            )
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) is not None else start
        if stop < start:
            raise FewshotError(f"malformed seed range {part!r}: the end is before the start")
        if stop > MAX_SEED:
            raise FewshotError(f"seed {stop} is too large (seeds go from 0 to {MAX_SEED})")
        if len(seeds) + (stop - start + 1) > 10_000_000:
            raise FewshotError(f"seed list {text!r} asks for more than 10 million images")
        seeds.extend(range(start, stop + 1))
    return seeds


class GridShape(NamedTuple):
    rows: int
    cols: int

    @property
    def cells(self) -> int:
        return self.rows * self.cols


def parse_grid(text: str) -> GridShape:
    """``"4x8"`` -> ``GridShape(rows=4, cols=8)`` (rows first, as in "RxC")."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text or "")
    if match is None:
        raise FewshotError(f"malformed grid {text!r}", hint="write a grid as ROWSxCOLS, e.g. 8x8")
    rows, cols = int(match.group(1)), int(match.group(2))
    if rows < 1 or cols < 1:
        raise FewshotError(f"grid {text!r} must have at least one row and one column")
    if rows * cols > 65536:
        raise FewshotError(f"grid {text!r} has more than 65536 cells")
    return GridShape(rows, cols)


def check_psi(psi: float) -> float:
    if not (math.isfinite(psi) and PSI_RANGE[0] <= psi <= PSI_RANGE[1]):
        raise FewshotError(
            f"truncation psi {psi} is outside [{PSI_RANGE[0]:g}, {PSI_RANGE[1]:g}]",
            hint="psi 1 means no truncation, 0.7 is typical, 0 gives the average image",
        )
    return float(psi)


def check_choice(value: str, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise FewshotError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


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
    newest = _newest_snapshot(folder / "checkpoints")
    if newest is not None:
        return newest
    raise FewshotError(
        f"{folder} is a folder without a checkpoint",
        hint="a run folder holds best.safetensors, final.safetensors or checkpoints/*.safetensors",
    )


def resolve_reference(ref: str | Path) -> Path:
    """A file, a run folder, or anything the hub resolver knows (names, URLs, hf://) -> a local file."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return resolve_run_folder(path)
    try:
        from . import hub
    except ImportError:
        hub = None
    resolver = getattr(hub, "resolve_checkpoint", None)
    if resolver is None:
        raise FewshotError(
            f"no such checkpoint file or folder: {ref}",
            hint="give a .safetensors bundle, an official .pkl or a run folder",
        )
    return Path(resolver(str(ref)))


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


# --------------------------------------------------------------------------------------------
# Latents


def seed_latent(seed: int, z_dim: int, trunc_z: float | None = None) -> np.ndarray:
    """The official latent of a seed, ``RandomState(seed).randn(1, z_dim)`` (float64, shape [1, z_dim]).

    With ``trunc_z`` (BigGAN's truncation trick) components with ``|z| > trunc_z`` are redrawn from
    the same RandomState until all lie inside: the same seed always gives the same latent, and the
    components that were already inside are those of the untruncated latent.
    """
    rng = np.random.RandomState(seed)
    z = rng.randn(1, z_dim)
    if trunc_z is not None:
        if not (math.isfinite(trunc_z) and trunc_z > 0):
            raise FewshotError(f"--trunc-z must be a positive threshold, got {trunc_z}")
        outside = np.abs(z) > trunc_z
        while outside.any():
            z[outside] = rng.randn(int(outside.sum()))
            outside = np.abs(z) > trunc_z
    return z


def seed_latents(seeds: Sequence[int], z_dim: int, trunc_z: float | None = None) -> torch.Tensor:
    """``[len(seeds), z_dim]`` float32 latents, row i the official latent of ``seeds[i]``."""
    if trunc_z is not None and trunc_z < 0.05:
        # Below this, redrawing needs thousands of tries per component: almost surely a typo.
        raise FewshotError(f"--trunc-z {trunc_z} is too small (use a threshold of at least 0.05; 0.5-2 is typical)")
    if z_dim == 0:
        return torch.zeros([len(seeds), 0])
    rows = [seed_latent(s, z_dim, trunc_z) for s in seeds]
    return torch.from_numpy(np.concatenate(rows, axis=0)).to(torch.float32)


def class_labels(G: Generator, count: int, class_idx: int | None, device: torch.device | None = None) -> torch.Tensor:
    """One-hot labels for a conditional generator (``[count, c_dim]``), empty for an unconditional one."""
    c_dim = int(G.c_dim)
    device = device or next(G.parameters()).device
    labels = torch.zeros([count, c_dim], device=device)
    if c_dim == 0:
        if class_idx is not None:
            raise FewshotError("--class was given, but this generator is unconditional")
        return labels
    if class_idx is None:
        raise FewshotError(f"this generator is conditional ({c_dim} classes): choose one with --class")
    if not 0 <= class_idx < c_dim:
        raise FewshotError(f"--class {class_idx} is out of range (this generator has classes 0-{c_dim - 1})")
    labels[:, class_idx] = 1
    return labels


def _check_truncation(G: Generator, psi: float, trunc_cutoff: int | None) -> None:
    check_psi(psi)
    if trunc_cutoff is not None and not 0 <= trunc_cutoff <= G.num_ws:
        raise FewshotError(f"--trunc-cutoff {trunc_cutoff} is out of range (this generator has {G.num_ws} ws)")
    if psi != 1 and not hasattr(G.mapping, "w_avg"):
        raise FewshotError("this generator tracks no average w, so it cannot be truncated (use --psi 1)")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 on the CPU, quantised exactly as the official tools do."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu()


def _device_of(G: Generator) -> torch.device:
    return next(G.parameters()).device


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextlib.contextmanager
def _seeded_noise(noise_mode: str, seed: int, device: torch.device) -> Iterator[None]:
    """Random noise comes from torch's global RNG: seed it (and restore it after) so the same call
    gives the same bytes. Other noise modes draw nothing."""
    if noise_mode != "random":
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------------------------
# Sampling


def seed_conditions(
    G: Generator, seeds: Sequence[int], class_idx: int | None = None, conditions: Conditions | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """The c of each seed: ``conditions(seeds)`` when given (DISP priors, ``fewshot.disp``), else class labels."""
    if conditions is None:
        return class_labels(G, len(seeds), class_idx, device)
    if class_idx is not None:
        raise FewshotError("--class is for class-conditional generators; this one is conditioned on priors")
    return conditions(list(seeds)).to(device or _device_of(G))


def seeds_to_ws(
    G: Generator, seeds: Sequence[int], psi: float = 1.0, trunc_cutoff: int | None = None,
    trunc_z: float | None = None, class_idx: int | None = None, conditions: Conditions | None = None,
) -> torch.Tensor:
    """``[N, num_ws, w_dim]``: mapped (and truncated) ws of the seeds' official latents, one batch."""
    device = _device_of(G)
    z = seed_latents(seeds, G.z_dim, trunc_z).to(device)
    c = seed_conditions(G, seeds, class_idx, conditions, device)
    with torch.no_grad():
        return G.mapping(z, c, truncation_psi=psi, truncation_cutoff=trunc_cutoff)


def inference_kwargs(device: torch.device) -> dict[str, bool]:
    """Synthesis keyword arguments for inference on ``device`` (pass them to ``G(...)`` or ``G.synthesis(...)``).

    On the CPU the non-fused modulated conv (scale activations, one shared-weight conv, scale by the
    demodulation), whatever the batch: one large GEMM per layer instead of a grouped conv over per-sample
    weights (2.5-4x faster from batch 2 on), and with shared weights their Winograd transforms and
    demodulation sums are computed once and kept (``fewshot.cuda.derived``): 17% faster than the official
    fused forward even for a single image (benchmarks/sample.py). CUDA keeps the official fused default.
    Both paths compute the same function (agreement ~1e-6).
    """
    return {"fused_modconv": False} if device.type == "cpu" else {}


def synthesize(G: Generator, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
    """``G.synthesis`` tuned for inference batches (see :func:`inference_kwargs`)."""
    with torch.no_grad():
        return G.synthesis(ws, noise_mode=noise_mode, **inference_kwargs(ws.device))


def iter_sample_batches(
    G: Generator,
    seeds: Sequence[int],
    psi: float = 1.0,
    trunc_cutoff: int | None = None,
    trunc_z: float | None = None,
    noise_mode: str = "const",
    batch_size: int = DEFAULT_BATCH,
    class_idx: int | None = None,
    progress: bool = False,
    conditions: Conditions | None = None,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield ``(seeds, uint8 images [B, C, H, W])`` for the seeds, ``batch_size`` per forward pass."""
    _check_truncation(G, psi, trunc_cutoff)
    check_choice(noise_mode, NOISE_MODES, "noise mode")
    if batch_size < 1:
        raise FewshotError(f"--batch must be at least 1, got {batch_size}")
    seeds = list(seeds)
    device = _device_of(G)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds), unit="img", desc="sampling", leave=False, disable=None)
    try:
        for batch in _chunks(seeds, batch_size):
            batch = list(batch)
            ws = seeds_to_ws(G, batch, psi, trunc_cutoff, trunc_z, class_idx, conditions)
            with _seeded_noise(noise_mode, batch[0], device):
                images = synthesize(G, ws, noise_mode)
            yield batch, to_uint8(images)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()


def generate_images(G: Generator, seeds: Sequence[int], **kwargs: Any) -> torch.Tensor:
    """All images of the seeds as one uint8 tensor ``[N, C, H, W]`` (see :func:`iter_sample_batches`)."""
    batches = [images for _, images in iter_sample_batches(G, seeds, **kwargs)]
    if not batches:
        return torch.zeros([0, G.img_channels, G.img_resolution, G.img_resolution], dtype=torch.uint8)
    return torch.cat(batches)


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


def make_grid(images: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Tile ``[N, C, H, W]`` uint8 images row by row into one ``[C, rows*H, cols*W]`` array.

    ``grid`` is ``(cols, rows)`` as in the official training code's ``grid_size``; cells past N stay black.
    """
    array = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim != 4 or array.dtype != np.uint8:
        raise FewshotError(f"expected uint8 images [N, C, H, W], got {array.dtype} {tuple(array.shape)}")
    cols, rows = int(grid[0]), int(grid[1])
    n, channels, height, width = array.shape
    if cols < 1 or rows < 1:
        raise FewshotError(f"grid {cols}x{rows} (cols x rows) must have at least one cell")
    if n > cols * rows:
        raise FewshotError(f"{n} images do not fit a grid of {cols} columns x {rows} rows")
    canvas = np.zeros([rows * cols, channels, height, width], dtype=np.uint8)
    canvas[:n] = array
    # [rows, cols, C, H, W] -> [C, rows, H, cols, W] -> [C, rows*H, cols*W]
    canvas = canvas.reshape(rows, cols, channels, height, width).transpose(2, 0, 3, 1, 4)
    return canvas.reshape(channels, rows * height, cols * width)


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
    _check_truncation(G, psi, trunc_cutoff)
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
# Interpolation


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation along the last dimension (falls back to lerp for parallel vectors).

    Gaussian latents live near a sphere; slerp keeps in-between latents at a typical norm, where
    lerp would pass through the low-density middle and give washed-out frames.
    """
    a_unit = a / a.norm(dim=-1, keepdim=True).clamp_min(eps)
    b_unit = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)
    cos = (a_unit * b_unit).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-6
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, torch.full_like(sin, 1 - t), torch.sin((1 - t) * omega) / safe_sin)
    wb = torch.where(parallel, torch.full_like(sin, t), torch.sin(t * omega) / safe_sin)
    return wa * a + wb * b


def interpolation_path(keyframes: torch.Tensor, steps: int, method: str = "lerp", loop: bool = False) -> torch.Tensor:
    """Frames between consecutive keyframes (``[K, ...]`` -> ``[F, ...]``), ``steps`` per segment.

    Without ``loop``: ``(K-1)*steps + 1`` frames, ending on the last keyframe. With ``loop``: ``K*steps``
    frames, the last segment going back towards the first keyframe, so the frame after the last is
    the first and a repeating animation has no seam and no doubled frame.
    """
    check_choice(method, METHODS, "interpolation method")
    if steps < 1:
        raise FewshotError(f"--steps must be at least 1, got {steps}")
    count = keyframes.shape[0]
    if count < 2:
        raise FewshotError("an interpolation needs at least two keyframes (seeds)")
    blend = slerp if method == "slerp" else lerp
    frames = []
    for segment in range(count if loop else count - 1):
        start, end = keyframes[segment], keyframes[(segment + 1) % count]
        for step in range(steps):
            frames.append(blend(start, end, step / steps))
    if not loop:
        frames.append(keyframes[-1])
    return torch.stack(frames)


def walk_frame_count(num_keyframes: int, steps: int, loop: bool) -> int:
    return num_keyframes * steps if loop else (num_keyframes - 1) * steps + 1


def iter_walk_frames(
    G: Generator,
    seeds: Sequence[int],
    steps: int = 60,
    space: str = "w",
    method: str | None = None,
    loop: bool = False,
    psi: float = 1.0,
    trunc_cutoff: int | None = None,
    grid: GridShape | None = None,
    noise_mode: str = "const",
    batch_size: int = DEFAULT_BATCH,
    class_idx: int | None = None,
    progress: bool = False,
    conditions: Conditions | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the frames of a latent walk through the seeds, each a uint8 image ``[C, H', W']``.

    With a ``grid`` of T = rows*cols tiles, every tile walks its own consecutive run of
    ``len(seeds) / T`` seeds (the layout of StyleGAN3's gen_video.py) and each frame is the grid.
    ``method`` defaults to slerp in z and lerp in w.
    """
    check_choice(space, SPACES, "latent space")
    method = method or ("slerp" if space == "z" else "lerp")
    check_choice(method, METHODS, "interpolation method")
    _check_truncation(G, psi, trunc_cutoff)
    check_choice(noise_mode, NOISE_MODES, "noise mode")
    if batch_size < 1:
        raise FewshotError(f"--batch must be at least 1, got {batch_size}")
    grid = grid or GridShape(1, 1)
    seeds = list(seeds)
    tiles = grid.cells
    if len(seeds) % tiles != 0 or len(seeds) < 2 * tiles:
        raise FewshotError(
            f"a {grid.rows}x{grid.cols} walk needs a multiple of {tiles} seeds, at least {2 * tiles} "
            f"(two keyframes per tile), got {len(seeds)}"
        )
    num_keyframes = len(seeds) // tiles
    device = _device_of(G)
    # seeds[tile * K + k] is keyframe k of tile `tile`; keyframes become [K, tiles, ...].
    order = [seeds[tile * num_keyframes + k] for k in range(num_keyframes) for tile in range(tiles)]
    if space == "z":
        keyframes = seed_latents(order, G.z_dim).to(device).reshape(num_keyframes, tiles, G.z_dim)
    else:
        keyframes = seeds_to_ws(G, order, psi, trunc_cutoff, class_idx=class_idx, conditions=conditions)
        keyframes = keyframes.reshape(num_keyframes, tiles, G.num_ws, G.w_dim)
    path = interpolation_path(keyframes, steps, method, loop)  # [F, tiles, ...]
    c_path = None
    if space == "z" and conditions is not None:  # each keyframe's prior, walked linearly alongside its z
        key_c = seed_conditions(G, order, None, conditions, device).reshape(num_keyframes, tiles, -1)
        c_path = interpolation_path(key_c, steps, "lerp", loop).reshape(-1, key_c.shape[-1])
    num_frames = path.shape[0]
    flat = path.reshape(num_frames * tiles, *path.shape[2:])
    frames_per_batch = max(1, batch_size // tiles)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_frames, unit="frame", desc="rendering", leave=False, disable=None)
    try:
        for first in range(0, num_frames, frames_per_batch):
            chunk = flat[first * tiles : (first + frames_per_batch) * tiles]
            with _seeded_noise(noise_mode, seeds[0] + first, device), torch.no_grad():
                if space == "z":
                    c = (class_labels(G, chunk.shape[0], class_idx, device) if c_path is None
                         else c_path[first * tiles : first * tiles + chunk.shape[0]])
                    ws = G.mapping(chunk, c, truncation_psi=psi, truncation_cutoff=trunc_cutoff)
                else:
                    ws = chunk
                images = to_uint8(synthesize(G, ws, noise_mode))
            for frame in images.reshape(-1, tiles, *images.shape[1:]):
                yield torch.from_numpy(make_grid(frame, (grid.cols, grid.rows))) if tiles > 1 else frame[0]
            if bar is not None:
                bar.update(images.shape[0] // tiles)
    finally:
        if bar is not None:
            bar.close()


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
# Style mixing


def parse_styles(text: str, num_ws: int) -> list[int]:
    """A style-layer list (``0-6``) checked against the generator's ``num_ws``."""
    try:
        styles = parse_seeds(text)
    except FewshotError as exc:
        raise FewshotError(exc.message.replace("seed", "style layer"), hint=f"layers go from 0 to {num_ws - 1}") from None
    bad = [s for s in styles if s >= num_ws]
    if bad:
        raise FewshotError(f"style layer {bad[0]} is out of range (this generator has layers 0-{num_ws - 1})")
    return sorted(set(styles))


def style_mix_sheet(
    G: Generator,
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    styles: Sequence[int],
    psi: float = 1.0,
    noise_mode: str = "const",
    batch_size: int = DEFAULT_BATCH,
    class_idx: int | None = None,
    conditions: Conditions | None = None,
) -> np.ndarray:
    """The sheet of the official style_mixing.py as uint8 ``[C, (R+1)*H, (C+1)*W]``.

    Top-left cell black; column seeds' images along the top, row seeds' images down the left;
    cell (r, c) renders row seed r's ws with the ``styles`` layers taken from column seed c.
    Truncation (psi around w_avg) applies to every layer before mixing, as in the official tool.
    """
    _check_truncation(G, psi, None)
    check_choice(noise_mode, NOISE_MODES, "noise mode")
    row_seeds, col_seeds = list(row_seeds), list(col_seeds)
    if not row_seeds or not col_seeds:
        raise FewshotError("a style-mixing sheet needs at least one row seed and one column seed")
    styles = sorted(set(styles))
    if any(not 0 <= s < G.num_ws for s in styles):
        raise FewshotError(f"style layers must lie in 0-{G.num_ws - 1}")
    unique = list(dict.fromkeys(row_seeds + col_seeds))
    ws = seeds_to_ws(G, unique, psi, None, class_idx=class_idx, conditions=conditions)
    w_of = {seed: ws[i] for i, seed in enumerate(unique)}

    # Render order: column headers, then row headers, then cells row by row; one batched pass.
    all_ws = [w_of[s] for s in col_seeds] + [w_of[s] for s in row_seeds]
    for row in row_seeds:
        for col in col_seeds:
            mixed = w_of[row].clone()
            mixed[styles] = w_of[col][styles]
            all_ws.append(mixed)
    stacked = torch.stack(all_ws)
    device = _device_of(G)
    outputs = []
    with _seeded_noise(noise_mode, unique[0], device), torch.no_grad():
        for chunk in _chunks(stacked, batch_size):
            outputs.append(to_uint8(synthesize(G, chunk, noise_mode)))
    images = torch.cat(outputs)
    n_rows, n_cols = len(row_seeds), len(col_seeds)
    blank = torch.zeros_like(images[0])
    cells = [blank] + list(images[:n_cols])
    row_headers = images[n_cols : n_cols + n_rows]
    mixed_cells = images[n_cols + n_rows :]
    for r in range(n_rows):
        cells.append(row_headers[r])
        cells.extend(mixed_cells[r * n_cols : (r + 1) * n_cols])
    return make_grid(torch.stack(cells), (n_cols + 1, n_rows + 1))
