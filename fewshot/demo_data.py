"""The built-in procedural data sets: ``demo`` (soft discs on gradients, the shipped demo base's source domain)
and ``demo:rings`` (neon rings on dark, the demo's target). No files, no download; deterministic."""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import FewshotError
from .imageset import DataSummary, ImageSet

_DEMO_PALETTE = np.array(
    [[230, 57, 70], [241, 250, 238], [168, 218, 220], [69, 123, 157], [29, 53, 87],
     [255, 183, 3], [42, 157, 143], [233, 196, 106], [244, 162, 97], [131, 56, 236]],
    dtype=np.float64,
) / 255.0
# The target domain's colours: dark backgrounds and saturated "neon" rings, none of them in the source palette,
# so a fine-tuned generator's change of domain shows in every pixel, not only in the shapes.
_NIGHT_PALETTE = np.array([[10, 12, 30], [30, 8, 44], [6, 30, 36], [22, 22, 22], [40, 14, 20]], dtype=np.float64) / 255.0
_NEON_PALETTE = np.array(
    [[255, 0, 110], [0, 245, 212], [255, 214, 10], [57, 255, 20], [255, 120, 0], [0, 170, 255]], dtype=np.float64,
) / 255.0

DEMO_SOURCE = "demo"  # the built-in source domain (discs); "demo:<domain>" names any built-in domain
DEMO_DOMAINS = {
    "discs": "one or two soft pastel discs on a two-colour gradient (the source domain of the shipped demo base)",
    "rings": "one or two bright neon rings on a dark, nearly flat background (the demo's target domain)",
}


def demo_domain(source: str | None) -> str | None:
    """The built-in domain a data source names (``demo`` = ``demo:discs``, ``demo:rings``), else None.

    An unknown ``demo:<name>`` is an error rather than a file path: a folder of that name is far less
    likely than a typo.
    """
    if source == DEMO_SOURCE:
        return "discs"
    if not source or not source.startswith(DEMO_SOURCE + ":"):
        return None
    domain = source[len(DEMO_SOURCE) + 1:]
    if domain not in DEMO_DOMAINS:
        raise FewshotError(f"unknown built-in data set {source!r}",
                           hint="built-in sets: " + ", ".join(f"demo:{name}" for name in DEMO_DOMAINS))
    return domain


def is_builtin_source(source: str | None) -> bool:
    """True for the sources that are no path: none given, or a built-in demo domain."""
    return not source or demo_domain(source) is not None


def _disc_image(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, resolution: int) -> np.ndarray:
    top, bottom = _DEMO_PALETTE[rng.choice(len(_DEMO_PALETTE), size=2, replace=False)]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ((xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle)) / math.sqrt(2) + 0.5
    image = top * (1 - ramp[..., None]) + bottom * ramp[..., None]
    for _ in range(rng.integers(1, 3)):
        colour = _DEMO_PALETTE[rng.integers(len(_DEMO_PALETTE))]
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        radius = rng.uniform(0.12, 0.3)
        # A soft disc: 1 inside, a smooth edge a tenth of the radius wide, 0 outside.
        distance = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        alpha = np.clip((radius - distance) / (0.1 * radius + 1.0 / resolution) + 0.5, 0, 1)[..., None]
        image = image * (1 - alpha) + colour * alpha
    return image


def _ring_image(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, resolution: int) -> np.ndarray:
    # The layout of the discs (one or two round objects about the middle), so a base trained on discs already
    # places them; what must change is the palette, the background and the hollow centre.
    dark, darker = _NIGHT_PALETTE[rng.choice(len(_NIGHT_PALETTE), size=2, replace=False)]
    image = dark * (1 - yy[..., None]) + darker * yy[..., None]  # a faint top-to-bottom shade
    for _ in range(rng.integers(1, 3)):
        colour = _NEON_PALETTE[rng.integers(len(_NEON_PALETTE))]
        cx, cy = rng.uniform(0.25, 0.75, size=2)
        radius = rng.uniform(0.18, 0.3)
        width = 0.4 * radius  # at least 2 px at 32 px, and a hole of at least 4 px across
        distance = np.abs(np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) - radius) - width / 2
        alpha = np.clip(0.5 - distance * resolution / 1.5, 0, 1)[..., None]  # a 1.5 px anti-aliased edge
        image = image * (1 - alpha) + colour * alpha
    return image


_DEMO_PAINTERS = {"discs": _disc_image, "rings": _ring_image}


def demo_images(n: int = 64, resolution: int = 32, seed: int = 0, domain: str = "discs") -> ImageSet:
    """A procedurally generated data set of one of the :data:`DEMO_DOMAINS`.

    ``discs`` (the data source ``demo``): one or two soft coloured discs on a two-colour gradient, the
    domain the shipped demo base was trained on. ``rings`` (``demo:rings``): one or two neon rings on a
    dark background, the target domain the demo fine-tunes that base to. Simple, smooth and varied
    enough that a tiny GAN shows visible progress in CPU minutes; no download needed. Deterministic in
    (n, resolution, seed, domain).
    """
    if domain not in _DEMO_PAINTERS:
        raise FewshotError(f"unknown demo domain {domain!r}", hint=f"choose from {', '.join(DEMO_DOMAINS)}")
    if n < 2:
        raise FewshotError(f"the demo set needs at least 2 images, got n={n}")
    if resolution < 4:
        raise FewshotError(f"the demo resolution must be at least 4, got {resolution}")
    rng = np.random.default_rng(seed)
    coords = (np.arange(resolution) + 0.5) / resolution
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    paint = _DEMO_PAINTERS[domain]
    out = np.stack([paint(rng, xx, yy, resolution) for _ in range(n)])
    images = torch.from_numpy((out * 255).round().clip(0, 255).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()
    folder = "demo" if domain == "discs" else f"demo-{domain}"
    names = [f"{folder}/{i:05d}.png" for i in range(n)]
    label = "" if domain == "discs" else f" {domain!r}"
    summary = DataSummary(source=f"built-in demo set{label} (seed {seed})", resolution=resolution, crop="center",
                          count=n, min_size=(resolution, resolution), max_size=(resolution, resolution))
    return ImageSet(images=images, names=names, summary=summary, mirror=False)
