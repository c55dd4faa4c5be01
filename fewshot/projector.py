"""Projection: the w (or W+) of a generator whose image is closest to a target, as NVIDIA's projector.py finds it.

The recipe is the official one (stylegan2-ada-pytorch ``projector.py``), step for step:

* w statistics from 10000 latents ``RandomState(123).randn``: the start ``w_avg`` is their mean w (not the
  generator's tracked average) and ``w_std = sqrt(sum |w - w_avg|^2 / N)``;
* Adam (betas 0.9, 0.999) on w and on every ``noise_const`` map of the synthesis network, freshly drawn from
  the seed; the learning rate ``0.1 * rampup * rampdown`` with a cosine rampdown over the last 25% of the steps
  and a linear rampup over the first 5%; Gaussian noise of ``w_std * 0.05 * max(0, 1 - t / 0.75)^2`` added to w
  in each step's forward pass;
* loss: the LPIPS-VGG16 distance of synthesis and target (both area-downsampled to 256 px when larger;
  :mod:`fewshot.perceptual`, whose target embedding is computed once as the official target features are),
  plus ``1e5 *`` the noise regulariser (squared mean autocorrelation at a shift of one pixel, both axes, at
  every scale down to 8x8), and after each step every noise map is renormalised to zero mean, unit variance.

``wplus`` optimises one w per layer (``[1, num_ws, w_dim]``, each starting at ``w_avg``) instead of one w
broadcast to all of them. The result keeps each step's w (the progress video) and the optimised noise maps,
which :func:`save_projected_w` writes beside ``w`` (official tools read only ``w``), so rendering the file
again gives ``proj.png`` exactly.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .errors import FewshotError
from .synthesis import class_labels, inference_kwargs

if TYPE_CHECKING:
    from .nets import Generator
    from .perceptual import LPIPS

DISTANCE_RESOLUTION = 256  # synthesis and target are area-downsampled to this when larger (VGG's scale)
W_STATS_SEED = 123
NOISE_KEY = "noise."  # prefix of the optimised noise maps in projected_w.npz


@dataclass(frozen=True)
class ProjectSettings:
    """The official projector's knobs, with its defaults."""

    steps: int = 1000
    w_avg_samples: int = 10000
    initial_learning_rate: float = 0.1
    initial_noise_factor: float = 0.05
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    wplus: bool = False

    def check(self) -> ProjectSettings:
        if self.steps < 1:
            raise FewshotError(f"--steps must be at least 1, got {self.steps}")
        if self.w_avg_samples < 2:
            raise FewshotError(f"w statistics need at least 2 samples, got {self.w_avg_samples}")
        return self

    def learning_rate(self, step: int) -> float:
        """The ramped learning rate of a step (cosine rampdown, linear rampup)."""
        t = step / self.steps
        ramp = min(1.0, (1.0 - t) / self.lr_rampdown_length)
        ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
        ramp = ramp * min(1.0, t / self.lr_rampup_length)
        return self.initial_learning_rate * ramp

    def w_noise_scale(self, step: int, w_std: float) -> float:
        """In float32 (numpy's scalar arithmetic) as the official code computes it: see :func:`w_stats`."""
        t = step / self.steps
        return np.float32(w_std) * self.initial_noise_factor * max(0.0, 1.0 - t / self.noise_ramp_length) ** 2


@dataclass
class Projection:
    """What a projection found: ``w`` ``[1, num_ws, w_dim]``, the noise maps, the w of every step."""

    w: torch.Tensor
    noise: dict[str, torch.Tensor]
    w_steps: torch.Tensor  # [steps, num_ws, w_dim]
    distances: list[float] = field(default_factory=list)  # LPIPS distance of each step


# --------------------------------------------------------------------------------------------
# Pieces of the loop


@torch.no_grad()
def w_stats(G: Generator, samples: int = 10000, class_idx: int | None = None,
            batch: int = 10000) -> tuple[torch.Tensor, float]:
    """``(w_avg [1, 1, w_dim], w_std)`` of ``samples`` mapped latents ``RandomState(123).randn``.

    Computed as the official code computes them (the mapping on all samples in one batch by default, numpy
    float32 sums): Adam moves each component by about the learning rate whatever its gradient's size, so a
    start (or a w noise scale) that differs in the last bits takes another path; so reproduced, this loop
    follows the official one bit for bit on the same network (benchmarks/project.py). ``batch`` bounds the
    memory of the mapped ws ([batch, num_ws, w_dim] float32: 370 MB at 1024 px) at the price of that parity.
    """
    device = next(G.parameters()).device
    z_all = np.random.RandomState(W_STATS_SEED).randn(samples, G.z_dim)
    ws = []
    for start in range(0, samples, batch):  # a batch of [B, num_ws, w_dim] outputs at a time bounds memory
        z = torch.from_numpy(z_all[start:start + batch]).to(device=device, dtype=torch.float32)
        ws.append(G.mapping(z, class_labels(G, len(z), class_idx, device))[:, :1, :].cpu().numpy().astype(np.float32))
    w = np.concatenate(ws)  # [N, 1, C]
    w_avg = np.mean(w, axis=0, keepdims=True)
    w_std = float((np.sum((w - w_avg) ** 2) / samples) ** 0.5)
    return torch.from_numpy(w_avg), w_std


def noise_buffers(G: Generator) -> dict[str, torch.Tensor]:
    """The synthesis network's constant noise maps by name (``b8.conv0.noise_const`` ...)."""
    return {name: buf for name, buf in G.synthesis.named_buffers() if name.endswith("noise_const")}


def noise_regularization(buffers: Iterable[torch.Tensor]) -> torch.Tensor | float:
    """Sum over maps and scales (down to 8x8) of the squared mean products with the map rolled by one pixel."""
    total: torch.Tensor | float = 0.0
    for buf in buffers:
        noise = buf[None, None]
        while True:
            total = total + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            total = total + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


def distance_images(images_255: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 255] as LPIPS takes them: area-downsampled to 256 px when larger, then [-1, 1], 3
    channels. The official loop hands [0, 255] images to its VGG, which rescales them; taking the same round
    trip (rather than the generator's [-1, 1] output as it is) keeps this loop bit for bit on the official one's
    path: Adam's steps are near the learning rate whatever a gradient's size, so its last bits steer it."""
    if images_255.shape[2] > DISTANCE_RESOLUTION:
        images_255 = F.interpolate(images_255, size=(DISTANCE_RESOLUTION, DISTANCE_RESOLUTION), mode="area")
    images = images_255 / 127.5 - 1
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def target_tensor(target: np.ndarray | torch.Tensor, G: Generator) -> torch.Tensor:
    """A uint8 ``[C, R, R]`` target checked against the generator (grayscale generators: luminance)."""
    target = torch.as_tensor(np.asarray(target))
    if target.dtype != torch.uint8 or target.ndim != 3:
        raise FewshotError(f"a target is a uint8 image [C, H, W], got {target.dtype} {tuple(target.shape)}")
    if G.img_channels == 1 and target.shape[0] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        target = (target.float() * weights).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    want = (G.img_channels, G.img_resolution, G.img_resolution)
    if tuple(target.shape) != want:
        raise FewshotError(f"the target is {tuple(target.shape)}, the generator draws {want}")
    return target


# --------------------------------------------------------------------------------------------
# The loop


def project(G: Generator, target: np.ndarray | torch.Tensor, lpips: LPIPS, settings: ProjectSettings | None = None,
            seed: int = 303, class_idx: int | None = None, progress: bool = False) -> Projection:
    """Project a uint8 ``[C, R, R]`` target into G's w space (see the module docstring for the recipe)."""
    settings = (settings or ProjectSettings()).check()
    device = next(G.parameters()).device
    target = target_tensor(target, G)
    G = copy.deepcopy(G).eval().requires_grad_(False)  # its noise maps are optimised in place
    w_avg, w_std = w_stats(G, settings.w_avg_samples, class_idx)
    buffers = noise_buffers(G)
    rng = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        target_features = lpips.embed(distance_images(target[None].to(device).float()))
        for buf in buffers.values():
            buf.copy_(torch.randn(buf.shape, generator=rng, device=device))
    for buf in buffers.values():
        buf.requires_grad_(True)
    w_opt = w_avg.to(device).repeat([1, G.num_ws if settings.wplus else 1, 1]).requires_grad_(True)
    optimizer = torch.optim.Adam([w_opt, *buffers.values()], betas=(0.9, 0.999), lr=settings.initial_learning_rate)
    w_steps = torch.zeros([settings.steps, G.num_ws, G.w_dim])
    distances: list[float] = []
    kwargs = inference_kwargs(device)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=settings.steps, unit="step", desc="projecting", leave=False, disable=None)
    try:
        for step in range(settings.steps):
            for group in optimizer.param_groups:
                group["lr"] = settings.learning_rate(step)
            scale = settings.w_noise_scale(step, w_std)
            w_noise = torch.randn(w_opt.shape, generator=rng, device=device) * scale
            ws = (w_opt + w_noise).expand(1, G.num_ws, G.w_dim)
            synth = G.synthesis(ws, noise_mode="const", **kwargs)
            dist = (target_features - lpips.embed(distance_images((synth + 1) * (255 / 2)))).square().sum()
            loss = dist + noise_regularization(buffers.values()) * settings.regularize_noise_weight
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            w_steps[step] = w_opt.detach()[0].expand(G.num_ws, G.w_dim).cpu()
            distances.append(float(dist.detach()))
            with torch.no_grad():
                for buf in buffers.values():
                    buf -= buf.mean()
                    buf *= buf.square().mean().rsqrt()
            if bar is not None:
                bar.set_postfix(dist=f"{distances[-1]:.3f}", refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    noise = {name: buf.detach().cpu().clone() for name, buf in buffers.items()}
    return Projection(w=w_steps[-1:].clone(), noise=noise, w_steps=w_steps, distances=distances)


# --------------------------------------------------------------------------------------------
# Rendering a w with given noise maps, and the projected_w.npz file


@contextlib.contextmanager
def noise_maps(G: Generator, noise: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """G's constant noise maps replaced by ``noise`` (matching names and shapes) while the block runs."""
    if not noise:
        yield
        return
    buffers = noise_buffers(G)
    if set(noise) != set(buffers) or any(noise[k].shape != buffers[k].shape for k in buffers):
        raise FewshotError("the stored noise maps do not fit this generator's layers",
                           hint="a projection renders through networks of the same architecture")
    kept = {name: buf.detach().clone() for name, buf in buffers.items()}
    try:
        with torch.no_grad():
            for name, buf in buffers.items():
                buf.copy_(noise[name].to(buf.device))
        yield
    finally:
        with torch.no_grad():
            for name, buf in buffers.items():
                buf.copy_(kept[name])


def save_projected_w(path: str | Path, w: torch.Tensor, noise: dict[str, torch.Tensor] | None = None) -> Path:
    """The official ``projected_w.npz`` (key ``w``, float32 ``[1, num_ws, w_dim]``), plus the noise maps."""
    import io

    from .image_output import write_file as atomic_write_bytes

    arrays = {"w": w.detach().cpu().float().numpy()}
    arrays.update({NOISE_KEY + name: buf.cpu().float().numpy() for name, buf in (noise or {}).items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_projected_w(path: str | Path, G: Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(ws [N, num_ws, w_dim], noise maps)`` of a ``projected_w.npz`` (ours or the official tools'); a w of
    ``[N, 1, w_dim]`` or ``[w_dim]`` is broadcast to every layer. No pickles are read."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "w" not in npz.files:
                raise FewshotError(f"{path} has no array 'w'", hint="a projected_w.npz holds w [N, num_ws, w_dim]")
            w = np.asarray(npz["w"], dtype=np.float32)
            noise = {k[len(NOISE_KEY):]: torch.from_numpy(np.asarray(npz[k], dtype=np.float32))
                     for k in npz.files if k.startswith(NOISE_KEY)}
    except (OSError, ValueError, EOFError) as exc:
        reason = "not an .npz of arrays" if "pickle" in str(exc) else exc
        raise FewshotError(f"cannot read {path} as an .npz of ws: {reason}") from None
    ws = torch.from_numpy(w)
    if ws.ndim == 1:
        ws = ws[None, None]
    elif ws.ndim == 2:
        ws = ws[None]
    if ws.ndim != 3 or ws.shape[2] != G.w_dim or ws.shape[1] not in (1, G.num_ws) or ws.shape[0] < 1:
        raise FewshotError(f"{path}: w has shape {tuple(w.shape)}; this generator takes [N, {G.num_ws}, {G.w_dim}]")
    if not torch.isfinite(ws).all():
        raise FewshotError(f"{path}: w holds NaN or infinite values")
    return ws.expand(-1, G.num_ws, -1).contiguous(), noise


def truncate_ws(G: Generator, ws: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
    """ws pulled towards G's own ``w_avg`` by ``psi`` (the first ``cutoff`` layers only, when given)."""
    if psi == 1:
        return ws
    w_avg = G.mapping.w_avg.to(ws.device)
    out = ws.clone()
    layers = slice(None) if cutoff is None else slice(0, cutoff)
    out[:, layers] = w_avg.lerp(ws[:, layers], psi)
    return out


def render_ws(G: Generator, ws: torch.Tensor, noise: dict[str, torch.Tensor] | None = None,
              noise_mode: str = "const", batch: int = 16) -> torch.Tensor:
    """uint8 images ``[N, C, H, W]`` of ws ``[N, num_ws, w_dim]``; ``noise`` replaces the constant noise maps
    (``noise_mode`` const only: random and none draw or use no stored maps)."""
    from .synthesis import synthesize, to_uint8

    device = next(G.parameters()).device
    out = []
    with noise_maps(G, noise if noise_mode == "const" else None):
        for start in range(0, ws.shape[0], batch):
            out.append(to_uint8(synthesize(G, ws[start:start + batch].to(device), noise_mode)))
    return torch.cat(out)
