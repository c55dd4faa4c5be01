"""Sampling helpers for DISP checkpoints: the bank of a bundle, priors for seeds, prior walks, and a
wrapper that makes a DISP generator look unconditional (for metrics, which draw z only)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import FewshotError
from .bank import PriorBank, read_bundle_bank
from .priors import expand_image_paths, fit_gmm, image_priors, mixup, prior_source


def checkpoint_bank(path: str | Path) -> PriorBank | None:
    """The prior bank of a safetensors bundle; None for other formats or bundles without one."""
    from ..checkpoint import detect_format

    if detect_format(path) != "safetensors":
        return None
    return read_bundle_bank(path)


def conditions_for(
    G: nn.Module, bank: PriorBank | None, prior: Sequence[str] | None, *, index: int | None = None,
    components: int = 8, weights_path: str | Path | None = None, device: torch.device | str = "cpu",
) -> Callable[[Sequence[int]], torch.Tensor] | None:
    """``seeds -> priors`` for ``generate``'s sampling functions, or None for an unconditional G.

    ``prior`` is ``None`` (the bank's default: mixup, or gmm above 1000 images), ``["mixup"]``,
    ``["gmm"]``, ``["bank"]`` (with ``index``) or image files/folders (their priors, image ``seed mod n``).
    """
    c_dim = int(getattr(G, "c_dim", 0))
    if bank is None:
        if prior or index is not None:
            raise FewshotError("--prior / --prior-index need a DISP checkpoint (a bundle with a prior bank); "
                               "this one has none")
        return None
    if c_dim != bank.dim:
        raise FewshotError(f"the generator takes {c_dim}-d conditions but the prior bank holds {bank.dim}-d priors")
    items = list(prior or [])
    if len(items) == 1 and items[0] in ("mixup", "gmm", "bank"):
        return prior_source(bank, items[0], index=index, components=components)
    if not items:
        return prior_source(bank, None, index=index, components=components)
    if any(item in ("mixup", "gmm", "bank") for item in items):
        raise FewshotError("--prior takes one of mixup, gmm, bank, or image files (not a mixture of them)")
    paths = expand_image_paths(items)
    rows = image_priors(paths, bank, int(G.img_resolution), weights_path, device)
    return prior_source(bank, "image", image_prior_rows=rows)


def walk_keyframe_priors(bank: PriorBank, items: Sequence[str], G: nn.Module,
                         weights_path: str | Path | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Keyframe priors for a prior walk: bank indices (``0,5,9``) or image files, in order."""
    rows: list[torch.Tensor] = []
    for item in items:
        text = str(item).strip()
        if text.isdigit():
            index = int(text)
            if index >= len(bank):
                raise FewshotError(f"prior index {index} is out of range (the bank has rows 0-{len(bank) - 1})")
            rows.append(bank.priors[index].cpu().float()[None])
        else:
            rows.append(image_priors(expand_image_paths([text]), bank, int(G.img_resolution), weights_path, device))
    priors = torch.cat(rows)
    if priors.shape[0] < 2:
        raise FewshotError("a prior walk needs at least two keyframe priors")
    return priors


def iter_prior_walk_frames(
    G: nn.Module, keyframes: torch.Tensor, seed: int = 0, steps: int = 60, loop: bool = False, psi: float = 1.0,
    trunc_cutoff: int | None = None, noise_mode: str = "const", batch_size: int = 16,
) -> Iterator[torch.Tensor]:
    """Frames (uint8 ``[C, H, W]``) of a walk between priors with the latent of ``seed`` held fixed.

    The priors are interpolated linearly (mixup is linear too); each frame is mapped with the same z.
    """
    from ..synthesis import interpolation_path, seed_latents, seeded_noise, synthesize, to_uint8

    device = next(G.parameters()).device
    path = interpolation_path(keyframes.to(device), steps, "lerp", loop)  # [F, d]
    z = seed_latents([seed], G.z_dim).to(device)
    for first in range(0, path.shape[0], batch_size):
        c = path[first:first + batch_size]
        with seeded_noise(noise_mode, seed + first, device), torch.no_grad():
            ws = G.mapping(z.expand(c.shape[0], -1), c, truncation_psi=psi, truncation_cutoff=trunc_cutoff)
            images = to_uint8(synthesize(G, ws, noise_mode))
        yield from images


class PriorSampledGenerator(nn.Module):
    """A DISP generator seen as unconditional: ``forward(z, c)`` ignores ``c`` and draws priors itself
    (mixup, or a GMM above 1000 images) from a seeded generator, so metrics code that knows only z works."""

    def __init__(self, G: nn.Module, bank: PriorBank, mode: str | None = None, seed: int = 0,
                 components: int = 8) -> None:
        super().__init__()
        self.G = G
        self.bank = bank
        self.mode = mode or ("mixup" if bank.num_images <= 1000 else "gmm")
        self.rng = torch.Generator().manual_seed(seed)
        self.gmm = fit_gmm(bank.priors, min(components, len(bank))) if self.mode == "gmm" else None
        for name in ("z_dim", "w_dim", "img_resolution", "img_channels", "num_ws", "mapping", "synthesis"):
            if hasattr(G, name) and not isinstance(getattr(G, name), nn.Module):
                setattr(self, name, getattr(G, name))
        self.c_dim = 0

    def draw(self, count: int) -> torch.Tensor:
        if self.gmm is not None:
            return self.gmm.sample(count, self.rng)
        return mixup(self.bank, count, self.rng).priors

    def forward(self, z: torch.Tensor, c: Any = None, **kwargs: Any) -> torch.Tensor:
        priors = self.draw(z.shape[0]).to(z.device)
        return self.G(z, priors, **kwargs)
