"""The sliced Wasserstein distance of ProGAN (Karras et al., ICLR 2018, appendix D) on uint8 image sets.

Per image: a Laplacian pyramid (the 5x5 binomial filter of ``cv2.pyrDown`` / ``cv2.pyrUp``, mirrored borders)
from the full resolution down to 16 px, the last level being the low-pass residual. Per level: 7x7x3
neighbourhoods ("descriptors") at random positions, ``patches`` per image; each set's descriptors normalised per
colour channel by that set's own mean and standard deviation over all its descriptors and their 49 pixels. The
distance per level: ``repeats`` times, ``directions`` random unit vectors in the 147-d descriptor space, the 1-d
Wasserstein-1 distance of the two projected sets along each, averaged over the directions and the repeats; x 10^3
as ProGAN reports it. ProGAN's defaults: 128 patches, 128 directions x 4 repeats (the paper's "512
projections").

Two differences from ProGAN's numpy code, neither changing its value where that code applies:

* the sets may differ in size (ten training images against a thousand samples): the 1-d distance is then the
  exact integral of the difference of the two quantile functions (:func:`wasserstein_1d`), which for equal
  sizes is ProGAN's mean absolute difference of the sorted projections;
* every random draw comes from a ``torch.Generator`` seeded by the caller, and both sets draw their patch
  positions from the same stream, so a set measured against itself gives exactly 0 and two sets of equal size
  differ only by their pixels, not by where the patches fell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import FewshotError

PATCH = 7  # ProGAN's neighbourhood side
MIN_LEVEL = 16  # the coarsest pyramid level ProGAN measures
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16  # the 5x5 filter is its outer product (/256)


def pyramid_resolutions(resolution: int, min_level: int = MIN_LEVEL) -> list[int]:
    """The levels measured for square images of ``resolution`` px: halving down to ``min_level``."""
    levels = []
    while resolution >= min_level:
        levels.append(resolution)
        resolution //= 2
    return levels


def _blur(x: torch.Tensor, gain: float) -> torch.Tensor:
    """The 5x5 binomial filter (times ``gain``) per channel, borders mirrored without repeating the edge
    (``scipy.ndimage`` 'mirror', OpenCV's default BORDER_REFLECT_101)."""
    kernel = (_BINOMIAL[:, None] * _BINOMIAL[None, :] * gain).to(x.dtype)
    channels = x.shape[1]
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    return F.conv2d(padded, kernel.expand(channels, 1, 5, 5), groups=channels)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x, 1.0)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zeros between the samples, then the filter times 4 (the zeros carry no energy), cut to ``size``."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _blur(up, 4.0)[:, :, : size[0], : size[1]]


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """float32 levels of uint8 (or float) images ``[N, 3, H, W]``: band-pass levels, then the low-pass residual."""
    pyramid = [images.float()]
    for _ in range(1, levels):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1], pyramid[-2].shape[-2:])
    return pyramid


def patch_positions(count: int, size: tuple[int, int], patches: int, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners ``[count, patches]`` (y, x) of neighbourhoods lying wholly inside a level of ``size``."""
    h, w = size
    y = torch.randint(0, h - PATCH + 1, (count, patches), generator=generator)
    x = torch.randint(0, w - PATCH + 1, (count, patches), generator=generator)
    return y, x


def gather_patches(level: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[N * patches, 3, 7, 7]`` neighbourhoods of ``level [N, 3, h, w]`` at corners ``y, x [N, patches]``."""
    n, c, h, w = level.shape
    # Flat index = the patch's corner + a fixed [3, 7, 7] template of offsets (channel planes, rows, columns).
    corner = torch.arange(n).view(n, 1) * (c * h * w) + y * w + x  # [N, P]
    template = (torch.arange(c).view(c, 1, 1) * (h * w) + torch.arange(PATCH).view(1, PATCH, 1) * w
                + torch.arange(PATCH).view(1, 1, PATCH)).flatten()
    index = corner[:, :, None] + template  # [N, P, 147]
    return level.reshape(-1)[index.reshape(-1)].view(-1, c, PATCH, PATCH)


def normalise_descriptors(desc: torch.Tensor) -> torch.Tensor:
    """Per colour channel: minus the set's mean, over its standard deviation (population, as numpy's), both over
    all descriptors and their pixels; flattened to ``[n, 147]``. A constant channel becomes zeros. In float32, in
    place (5000 images at 256 px hold ~0.4 GB of descriptors per level); torch's reductions sum in blocks, so
    the statistics of ~10^7 values keep ~1e-6 relative."""
    var, mean = torch.var_mean(desc, dim=(0, 2, 3), keepdim=True, correction=0)
    return desc.sub_(mean).div_(var.sqrt().clamp_min(1e-12)).flatten(1)


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row sorted. On the CPU by numpy, whose vectorised sort (x86-simd-sort) was measured 15-20x faster
    than ``torch.sort`` on 128 x 128k float32 projections; sorting is exact, so the result is the same."""
    if x.device.type != "cpu":
        return x.sort(dim=1).values
    rows = x.detach().contiguous().numpy().copy()
    rows.sort(axis=1)
    return torch.from_numpy(rows)


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, the Wasserstein-1 distance of the empirical distributions of ``a [K, n]`` and ``b [K, m]``.

    ``W1 = integral over u in (0, 1] of |Fa^-1(u) - Fb^-1(u)|``; both quantile functions are steps, constant
    between the breakpoints ``i/n`` and ``j/m``, so the integral is a sum over the merged breakpoints, taken in
    integers (``i*m`` and ``j*n`` over the common denominator ``n*m``) so that no breakpoint is misplaced by
    rounding. For ``n == m`` it is the mean of ``|sorted a - sorted b|``. (Rows, not columns: sorting along
    the contiguous dimension is several times faster.)"""
    n, m = a.shape[1], b.shape[1]
    a, b = sorted_rows(a), sorted_rows(b)
    if n == m:
        return (a - b).abs().mean(dim=1)
    points = torch.cat([torch.arange(1, n + 1) * m, torch.arange(1, m + 1) * n]).unique()  # sorted, ends at n*m
    widths = torch.diff(points, prepend=points.new_zeros(1)).to(a.dtype) / (n * m)
    ia = (points + m - 1) // m - 1  # the step of Fa^-1 on (previous point, this point]
    ib = (points + n - 1) // n - 1
    return ((a[:, ia] - b[:, ib]).abs() * widths).sum(dim=1)


def level_descriptors(images: torch.Tensor, levels: int, patches: int, generator: torch.Generator,
                      batch_size: int = 64) -> list[torch.Tensor]:
    """Normalised descriptors ``[N * patches, 147]`` per pyramid level of uint8 images, built a batch at a time
    (positions drawn for all images first, so they do not depend on the batch size)."""
    count, size = images.shape[0], images.shape[-1]
    positions = []
    for level in range(levels):
        side = -(-size // 2 ** level)
        positions.append(patch_positions(count, (side, side), patches, generator))
    parts: list[list[torch.Tensor]] = [[] for _ in range(levels)]
    for start in range(0, count, batch_size):
        pyramid = laplacian_pyramid(images[start:start + batch_size], levels)
        for level, (band, (y, x)) in enumerate(zip(pyramid, positions, strict=True)):
            parts[level].append(gather_patches(band, y[start:start + batch_size], x[start:start + batch_size]))
    return [normalise_descriptors(torch.cat(chunks)) for chunks in parts]


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: int, repeats: int,
                       generator: torch.Generator) -> float:
    """ProGAN's SWD of two descriptor sets ``[n, D]``, ``[m, D]``: the mean 1-d distance over ``repeats`` draws
    of ``directions`` random unit vectors (one draw in memory at a time)."""
    results = []
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=generator, dtype=torch.float64)
        dirs = (dirs / dirs.square().sum(dim=0, keepdim=True).sqrt()).float()
        results.append(float(wasserstein_1d(dirs.T @ a.T, dirs.T @ b.T).double().mean()))  # [directions, n]
    return sum(results) / len(results)


def swd(real: torch.Tensor, fake: torch.Tensor, patches: int = 128, directions: int = 128, repeats: int = 4,
        seed: int = 0, min_level: int = MIN_LEVEL) -> dict[int, float]:
    """SWD x 10^3 per pyramid level (keyed by its resolution) between two uint8 sets ``[N, 3, R, R]``."""
    if real.shape[1:] != fake.shape[1:]:
        raise FewshotError(f"SWD compares images of one size: {tuple(real.shape[1:])} vs {tuple(fake.shape[1:])}")
    resolution = int(real.shape[-1])
    levels = pyramid_resolutions(resolution, min_level)
    if not levels or real.shape[-2] != resolution:
        raise FewshotError(f"SWD needs square images of at least {min_level} px, got "
                           f"{real.shape[-1]}x{real.shape[-2]}", hint="measure at a larger resolution")
    # One stream for the positions of both sets (common random numbers, see the module doc), one for directions.
    real_desc = level_descriptors(real, len(levels), patches, torch.Generator().manual_seed(seed))
    fake_desc = level_descriptors(fake, len(levels), patches, torch.Generator().manual_seed(seed))
    dir_rng = torch.Generator().manual_seed(seed + 1)
    return {res: 1e3 * sliced_wasserstein(r, f, directions, repeats, dir_rng)
            for res, r, f in zip(levels, real_desc, fake_desc, strict=True)}
