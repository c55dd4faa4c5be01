"""Images from a generator, as tensors: seeded latents, truncation, conditions, batches, latent walks, style mixing.

The latent of seed ``s`` is drawn as NVIDIA's ``generate.py`` draws it,
``numpy.random.RandomState(s).randn(1, z_dim)``, and images are quantised as it quantises them,
``(img * 127.5 + 128).clamp(0, 255)`` to uint8, so the same network and seed give the same picture.

Everything here works on batches: a batch of seeds is one forward pass, never a loop of single
images. Results are uint8 tensors ``[N, C, H, W]`` on the CPU; :mod:`fewshot.image_output` writes
them to files and :mod:`fewshot.loading` finds and loads the generator.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from .errors import FewshotError

if TYPE_CHECKING:  # only for type hints; fewshot.nets imports the ops
    from .nets import Generator

NOISE_MODES = ("const", "random", "none")
SPACES = ("w", "z")
METHODS = ("lerp", "slerp")
PSI_RANGE = (-2.0, 2.0)
DEFAULT_BATCH = 16
# seeds -> c [len(seeds), c_dim]: per-seed conditions other than class labels (DISP priors, fewshot.disp).
Conditions = Callable[[Sequence[int]], torch.Tensor]


# --------------------------------------------------------------------------------------------
# Checking arguments (the commands run the same checks before a checkpoint loads)


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


def check_truncation(G: Generator, psi: float, trunc_cutoff: int | None) -> None:
    """psi in range, the cutoff within the generator's ws, and a w_avg to truncate towards unless psi is 1."""
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
def seeded_noise(noise_mode: str, seed: int, device: torch.device) -> Iterator[None]:
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


def synthesize(
    G: Generator, ws: torch.Tensor, noise_mode: str = "const", input_transforms: torch.Tensor | None = None
) -> torch.Tensor:
    """``G.synthesis`` tuned for inference batches (see :func:`inference_kwargs`); ``input_transforms``
    (``[N, 3, 3]``, StyleGAN3 only) moves each sample's Fourier input (:mod:`fewshot.equivariance`)."""
    extra = {} if input_transforms is None else {"input_transforms": input_transforms}
    with torch.no_grad():
        return G.synthesis(ws, noise_mode=noise_mode, **inference_kwargs(ws.device), **extra)


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
    check_truncation(G, psi, trunc_cutoff)
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
            with seeded_noise(noise_mode, batch[0], device):
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
# Layout: tiles of a grid (walks render one; fewshot.image_output writes them)


class GridShape(NamedTuple):
    """Rows x columns of tiles: a sample grid, or walks side by side."""

    rows: int
    cols: int

    @property
    def cells(self) -> int:
        return self.rows * self.cols


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
    frame_transforms: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the frames of a latent walk through the seeds, each a uint8 image ``[C, H', W']``.

    With a ``grid`` of T = rows*cols tiles, every tile walks its own consecutive run of
    ``len(seeds) / T`` seeds (the layout of StyleGAN3's gen_video.py) and each frame is the grid.
    ``method`` defaults to slerp in z and lerp in w. ``frame_transforms`` (``[frames, 3, 3]``, StyleGAN3)
    gives every frame its input transform: a pan or rotation along the walk (:mod:`fewshot.equivariance`).
    """
    check_choice(space, SPACES, "latent space")
    method = method or ("slerp" if space == "z" else "lerp")
    check_choice(method, METHODS, "interpolation method")
    check_truncation(G, psi, trunc_cutoff)
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
    if frame_transforms is not None and tuple(frame_transforms.shape) != (num_frames, 3, 3):
        raise FewshotError(f"frame_transforms must be [{num_frames}, 3, 3] for this walk, "
                           f"got {tuple(frame_transforms.shape)}")
    flat = path.reshape(num_frames * tiles, *path.shape[2:])
    frames_per_batch = max(1, batch_size // tiles)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_frames, unit="frame", desc="rendering", leave=False, disable=None)
    try:
        for first in range(0, num_frames, frames_per_batch):
            chunk = flat[first * tiles : (first + frames_per_batch) * tiles]
            with seeded_noise(noise_mode, seeds[0] + first, device), torch.no_grad():
                if space == "z":
                    c = (class_labels(G, chunk.shape[0], class_idx, device) if c_path is None
                         else c_path[first * tiles : first * tiles + chunk.shape[0]])
                    ws = G.mapping(chunk, c, truncation_psi=psi, truncation_cutoff=trunc_cutoff)
                else:
                    ws = chunk
                transforms = None
                if frame_transforms is not None:  # one per frame, shared by its tiles
                    transforms = frame_transforms[first : first + frames_per_batch].repeat_interleave(tiles, dim=0)
                images = to_uint8(synthesize(G, ws, noise_mode, transforms))
            for frame in images.reshape(-1, tiles, *images.shape[1:]):
                yield torch.from_numpy(make_grid(frame, (grid.cols, grid.rows))) if tiles > 1 else frame[0]
            if bar is not None:
                bar.update(images.shape[0] // tiles)
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------------------------
# Style mixing


def style_mix_cells(
    G: Generator,
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    styles: Sequence[int],
    psi: float = 1.0,
    noise_mode: str = "const",
    batch_size: int = DEFAULT_BATCH,
    class_idx: int | None = None,
    conditions: Conditions | None = None,
) -> torch.Tensor:
    """The cells of the official style_mixing.py sheet, uint8 ``[(R+1)*(C+1), C, H, W]`` row by row.

    Top-left cell black; column seeds' images along the top, row seeds' images down the left;
    cell (r, c) renders row seed r's ws with the ``styles`` layers taken from column seed c.
    Truncation (psi around w_avg) applies to every layer before mixing, as in the official tool.
    :func:`fewshot.image_output.style_mix_sheet` tiles them into the sheet.
    """
    check_truncation(G, psi, None)
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
    with seeded_noise(noise_mode, unique[0], device), torch.no_grad():
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
    return torch.stack(cells)
