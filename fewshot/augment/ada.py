"""``ada``: the adaptive discriminator augmentation pipeline of Karras et al. (2020).

Each enabled op fires per sample with probability ``multiplier * p``; the constants are those of
the paper's code (docs/reference.md section 2). Stages, in order:

1. geometry: x-flip, 90-degree rotation, integer translation, isotropic scale, pre-rotation,
   anisotropic scale, post-rotation, fractional translation, composed into one inverse matrix per
   sample and executed once: reflect padding, 2x upsampling with the orthogonal sym6 wavelet,
   bilinear ``grid_sample``, and downsampling with the same (flipped) wavelet. Samples whose
   transform is a pure blit (flips, quarter turns, integer shifts only) skip the resampling and
   have their pixels moved exactly (reflecting at the border); the official code resamples them
   too, which blurs flipped or turned images slightly because sym6 is not symmetric.
2. colour: brightness, contrast, luma flip, hue rotation, saturation as one 4x4 matrix.
3. image-space filtering (a 4-band filter bank built from sym2), 4. additive noise, 5. cutout.

A stage whose per-sample transforms are all the identity is skipped, so ``p = 0`` returns the
input unchanged, bit for bit. Everything is built from differentiable PyTorch ops (pad, conv,
matmul) and a grid_sample with its own double backward (``grid_sample.py``: torch's CUDA one has
none), so gradients reach the input and double backward works on every device (R1 needs it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..cuda import downsample2d, setup_filter, upsample2d
from ..errors import FewshotError
from ..registry import augmentations, option
from .base import Augment
from .grid_sample import grid_sample_bilinear

# Low-pass decomposition filters of two Daubechies symlets (public wavelet constants).
SYM2 = [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025]
SYM6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148]

# Probability multipliers of each named pipeline (the official --augpipe choices).
_BLIT = ("xflip", "rotate90", "xint")
_GEOM = ("scale", "rotate", "aniso", "xfrac")
_COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
PIPELINES: dict[str, tuple[str, ...]] = {
    "blit": _BLIT,
    "geom": _GEOM,
    "color": _COLOR,
    "filter": ("imgfilter",),
    "noise": ("noise",),
    "cutout": ("cutout",),
    "bg": _BLIT + _GEOM,
    "bgc": _BLIT + _GEOM + _COLOR,
    "bgcf": _BLIT + _GEOM + _COLOR + ("imgfilter",),
    "bgcfn": _BLIT + _GEOM + _COLOR + ("imgfilter", "noise"),
    "bgcfnc": _BLIT + _GEOM + _COLOR + ("imgfilter", "noise", "cutout"),
}
OPS = _BLIT + _GEOM + _COLOR + ("imgfilter", "noise", "cutout")

# Strengths of the ops (official defaults).
DEFAULT_CONSTANTS: dict[str, float] = {
    "xint_max": 0.125,  # integer translation range, fraction of the image size
    "scale_std": 0.2,  # log2 std of isotropic scaling
    "rotate_max": 1.0,  # rotation range, 1 = full circle
    "aniso_std": 0.2,  # log2 std of anisotropic scaling
    "xfrac_std": 0.125,  # std of fractional translation, fraction of the image size
    "brightness_std": 0.2,
    "contrast_std": 0.5,  # log2
    "hue_max": 1.0,  # 1 = full circle
    "saturation_std": 1.0,  # log2
    "imgfilter_std": 1.0,  # log2 std of a band's amplification
    "noise_std": 0.1,
    "cutout_size": 0.5,  # side of the cutout square, fraction of the image size
}


def _filter_bank(lowpass: list[float], bands: int = 4) -> np.ndarray:
    """Rows: FIR filters splitting an image into ``bands`` octave bands that sum to a unit impulse."""
    lo = np.asarray(lowpass, dtype=np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)  # quadrature mirror: H(-z)
    lo2 = np.convolve(lo, lo[::-1]) / 2  # H(z) H(1/z) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = np.zeros((bands, 1))
    bank[0, 0] = 1.0
    for band in range(1, bands):
        # Dilate every filter by 2 (zeros between taps), smooth with lo2, and give this band hi2.
        dilated = np.zeros((bands, 2 * bank.shape[1] - 1))
        dilated[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in dilated])
        start = (bank.shape[1] - hi2.size) // 2
        bank[band, start : start + hi2.size] += hi2
    return bank


# -- per-sample homogeneous matrices, [B, 3, 3] or [B, 4, 4] --------------------------------


def _mat3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, e: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Rows ``[a b c; d e f; 0 0 1]`` from per-sample tensors."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, c, d, e, f, zero, zero, one], dim=-1).reshape(-1, 3, 3)


def _scale(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(sx)
    return _mat3(sx, zero, zero, zero, sy, zero)


def _translate(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    zero, one = torch.zeros_like(tx), torch.ones_like(tx)
    return _mat3(one, zero, tx, zero, one, ty)


def _rotate(theta: torch.Tensor) -> torch.Tensor:
    cos, sin, zero = torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)
    return _mat3(cos, -sin, zero, sin, cos, zero)


def _reflect_index(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a reflect padding (edge not repeated) by ``pad``, repeating the mirror as often as needed."""
    index = torch.arange(-pad, size + pad, device=device)
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index > size - 1, period - index, index)


def _reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Like ``F.pad(mode='reflect')`` but also for ``pad >= size`` (index_select is twice differentiable)."""
    rows = _reflect_index(x.shape[2], pad, x.device)
    cols = _reflect_index(x.shape[3], pad, x.device)
    return x.index_select(2, rows).index_select(3, cols)


def _const3(rows: list[list[float]], device: torch.device) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32, device=device)


class AdaPipeline(torch.nn.Module):
    """The stochastic ADA transform at strength ``p`` (the parent's buffer is passed per call)."""

    def __init__(self, pipeline: str = "bgc", **overrides: float) -> None:
        super().__init__()
        if pipeline not in PIPELINES:
            raise FewshotError(f"unknown ADA pipeline {pipeline!r}", hint=f"choose one of: {', '.join(PIPELINES)}")
        self.pipeline = pipeline
        self.multipliers = {op: (1.0 if op in PIPELINES[pipeline] else 0.0) for op in OPS}
        self.constants = dict(DEFAULT_CONSTANTS)
        self.imgfilter_bands = [1.0, 1.0, 1.0, 1.0]
        for key, value in overrides.items():
            if key in self.multipliers:
                self.multipliers[key] = float(value)
            elif key in self.constants:
                self.constants[key] = float(value)
            elif key == "imgfilter_bands":
                self.imgfilter_bands = [float(v) for v in value]  # type: ignore[union-attr]
                if len(self.imgfilter_bands) != 4:
                    raise FewshotError("imgfilter_bands needs 4 entries")
            else:
                raise FewshotError(f"unknown ADA option {key!r}",
                                   hint=f"ops: {', '.join(OPS)}; constants: {', '.join(DEFAULT_CONSTANTS)}")
        self.register_buffer("geom_filter", setup_filter(SYM6), persistent=False)
        self.register_buffer("filter_bank", torch.as_tensor(_filter_bank(SYM2), dtype=torch.float32), persistent=False)

    # Draw per-sample values, keeping each only where a coin with probability `prob` says so.
    @staticmethod
    def _gate(values: torch.Tensor, prob: torch.Tensor | float, neutral: float) -> torch.Tensor:
        keep = torch.rand([values.shape[0]] + [1] * (values.ndim - 1), device=values.device) < prob
        return torch.where(keep, values, torch.full_like(values, neutral))

    def forward(self, images: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise FewshotError(f"augmentation expects NCHW images, got shape {tuple(images.shape)}")
        if images.shape[1] not in (1, 3):
            raise FewshotError(f"ADA supports 1 or 3 channels, got {images.shape[1]}")
        p = p.to(images.device, torch.float32)
        images = self._geometry(images, p)
        images = self._colour(images, p)
        images = self._image_filter(images, p)
        images = self._corruptions(images, p)
        return images

    # -- 1. geometry -------------------------------------------------------------------------

    def _geometry_matrix(self, batch: int, width: int, height: int, p: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Inverse transform per sample (output pixel -> input pixel, centred pixel coordinates)."""
        m, k = self.multipliers, self.constants
        inv = torch.eye(3, device=device).expand(batch, 3, 3)
        rand = lambda *shape: torch.rand(*shape, device=device)  # noqa: E731
        randn = lambda *shape: torch.randn(*shape, device=device)  # noqa: E731

        if m["xflip"] > 0:
            flip = self._gate(torch.floor(rand(batch) * 2), m["xflip"] * p, 0.0)
            inv = inv @ _scale(1 - 2 * flip, torch.ones_like(flip))
        if m["rotate90"] > 0:
            quarter = self._gate(torch.floor(rand(batch) * 4), m["rotate90"] * p, 0.0).long()
            # Exact cosines/sines of quarter turns, so these stay recognisable as pixel blits.
            cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=device)[quarter]
            sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=device)[quarter]
            zero = torch.zeros_like(cos)
            inv = inv @ _mat3(cos, -sin, zero, sin, cos, zero)
        if m["xint"] > 0:
            shift = self._gate((rand(batch, 2) * 2 - 1) * k["xint_max"], m["xint"] * p, 0.0)
            inv = inv @ _translate(-torch.round(shift[:, 0] * width), -torch.round(shift[:, 1] * height))
        if m["scale"] > 0:
            s = self._gate(torch.exp2(randn(batch) * k["scale_std"]), m["scale"] * p, 1.0)
            inv = inv @ _scale(1 / s, 1 / s)
        # Pre- and post-rotation each fire with 1 - sqrt(1 - p) so that "either" fires with p.
        p_rot = 1 - torch.sqrt((1 - m["rotate"] * p).clamp(0, 1))
        if m["rotate"] > 0:
            theta = self._gate((rand(batch) * 2 - 1) * math.pi * k["rotate_max"], p_rot, 0.0)
            inv = inv @ _rotate(theta)
        if m["aniso"] > 0:
            s = self._gate(torch.exp2(randn(batch) * k["aniso_std"]), m["aniso"] * p, 1.0)
            inv = inv @ _scale(1 / s, s)
        if m["rotate"] > 0:
            theta = self._gate((rand(batch) * 2 - 1) * math.pi * k["rotate_max"], p_rot, 0.0)
            inv = inv @ _rotate(theta)
        if m["xfrac"] > 0:
            shift = self._gate(randn(batch, 2) * k["xfrac_std"], m["xfrac"] * p, 0.0)
            inv = inv @ _translate(-shift[:, 0] * width, -shift[:, 1] * height)
        return inv

    def _geometry(self, images: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if not any(self.multipliers[op] > 0 for op in _BLIT + _GEOM):
            return images
        batch, channels, height, width = images.shape
        device = images.device
        inv = self._geometry_matrix(batch, width, height, p, device)
        eye = torch.eye(3, device=device)
        if bool((inv == eye).all()):
            return images  # every sample drew the identity: nothing to do

        # Flips, quarter turns and integer shifts map pixel centres onto pixel centres: move those
        # pixels exactly. (Resampling would blur flipped/turned images slightly, because the sym6
        # filter is not symmetric.) Only the other samples go through the resampling path.
        blit, source_index = self._blit_indices(inv, width, height)
        if bool(blit.all()):
            return self._apply_blit(images, source_index)
        if not bool(blit.any()):
            return self._resample(images, inv)
        out = self._apply_blit(images, source_index)
        others = (~blit).nonzero().flatten()
        return out.index_copy(0, others, self._resample(images.index_select(0, others), inv.index_select(0, others)))

    @staticmethod
    def _blit_indices(inv: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Which samples are pure pixel permutations, and for each output pixel its flat source index.

        Out-of-image sources are reflected (no edge repeat), as the resampling path's padding does.
        """
        device = inv.device
        cx, cy = (width - 1) / 2, (height - 1) / 2
        ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32) - cy,
                                torch.arange(width, device=device, dtype=torch.float32) - cx, indexing="ij")
        centred = torch.stack([xs.flatten(), ys.flatten(), torch.ones_like(xs.flatten())])  # [3, HW]
        source = (inv @ centred)[:, :2, :] + torch.tensor([cx, cy], device=device).view(1, 2, 1)  # [B, 2, HW]
        rounded = source.round()
        blit = ((source - rounded).abs() < 1e-4).flatten(1).all(dim=1)
        blit &= ((inv[:, :2, :2].round() - inv[:, :2, :2]).abs() < 1e-6).flatten(1).all(dim=1)

        def reflect(index: torch.Tensor, size: int) -> torch.Tensor:
            if size == 1:
                return torch.zeros_like(index)
            period = 2 * (size - 1)
            index = index.remainder(period)
            return torch.where(index > size - 1, period - index, index)

        sx = reflect(rounded[:, 0].long(), width)
        sy = reflect(rounded[:, 1].long(), height)
        return blit, sy * width + sx  # [B, HW]

    @staticmethod
    def _apply_blit(images: torch.Tensor, source_index: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = images.shape
        index = source_index[:, None, :].expand(batch, channels, -1)
        # gather is linear in the images, so first and second derivatives are exact.
        return images.reshape(batch, channels, height * width).gather(2, index).reshape(batch, channels, height, width)

    def _resample(self, images: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
        """Apply general inverse transforms: reflect-pad, 2x wavelet upsampling, bilinear sampling, downsampling."""
        batch, channels, height, width = images.shape
        device = images.device

        # Pad enough (reflecting the image) that every output pixel and the filter taps around it
        # read real content; the amount is the extent of the transformed corners plus the filter.
        cx, cy = (width - 1) / 2, (height - 1) / 2
        corners = _const3([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]], device)
        moved = (inv @ corners)[:, :2, :]  # [B, xy, 4]
        moved = moved.permute(1, 0, 2).reshape(2, -1)  # [xy, B*4]
        taps_pad = len(SYM6) // 4
        need = torch.cat([-moved, moved]).amax(dim=1)  # [x0, y0, x1, y1] in centred coordinates
        need = need + torch.tensor([taps_pad * 2 - cx, taps_pad * 2 - cy] * 2, device=device)
        limit = torch.tensor([width - 1, height - 1] * 2, device=device, dtype=need.dtype)
        need = torch.minimum(need.clamp(min=0), limit)  # reflect padding must stay below the size
        pad_x0, pad_y0, pad_x1, pad_y1 = (int(v) for v in need.ceil().tolist())
        images = F.pad(images, [pad_x0, pad_x1, pad_y0, pad_y1], mode="reflect")
        half = lambda v: torch.full([batch], float(v), device=device)  # noqa: E731
        # The padded image's centre moved; express the transform about the new centre.
        inv = _translate(half((pad_x0 - pad_x1) / 2), half((pad_y0 - pad_y1) / 2)) @ inv

        # Work at twice the resolution so bilinear sampling does not alias.
        images = upsample2d(images, self.geom_filter.to(images.dtype), up=2)
        two, one_half = half(2), half(0.5)
        inv = _scale(two, two) @ inv @ _scale(one_half, one_half)
        inv = _translate(-one_half, -one_half) @ inv @ _translate(one_half, one_half)

        # Output canvas: the input plus the filter margin, at 2x; normalise to grid_sample's [-1, 1].
        out_h, out_w = (height + taps_pad * 2) * 2, (width + taps_pad * 2) * 2
        inv = _scale(half(2 / images.shape[3]), half(2 / images.shape[2])) @ inv @ _scale(half(out_w / 2), half(out_h / 2))
        grid = F.affine_grid(inv[:, :2, :].to(images.dtype), [batch, channels, out_h, out_w], align_corners=False)
        images = grid_sample_bilinear(images, grid)

        # Back to the input resolution, cropping the margin (negative padding crops).
        return downsample2d(images, self.geom_filter.to(images.dtype), down=2, padding=-taps_pad * 2, flip_filter=True)

    # -- 2. colour ---------------------------------------------------------------------------

    def _colour(self, images: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        m, k = self.multipliers, self.constants
        if not any(m[op] > 0 for op in _COLOR):
            return images
        batch, channels, height, width = images.shape
        device = images.device
        eye4 = torch.eye(4, device=device)
        colour = eye4.expand(batch, 4, 4)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)  # the grey axis
        luma_outer = torch.outer(luma, luma)

        if m["brightness"] > 0:
            b = self._gate(torch.randn(batch, device=device) * k["brightness_std"], m["brightness"] * p, 0.0)
            shift = eye4.repeat(batch, 1, 1)
            shift[:, :3, 3] = b[:, None]
            colour = shift @ colour
        if m["contrast"] > 0:
            c = self._gate(torch.exp2(torch.randn(batch, device=device) * k["contrast_std"]), m["contrast"] * p, 1.0)
            scale = torch.diag_embed(torch.stack([c, c, c, torch.ones_like(c)], dim=-1))
            colour = scale @ colour
        if m["lumaflip"] > 0:
            flip = self._gate(torch.floor(torch.rand(batch, 1, 1, device=device) * 2), m["lumaflip"] * p, 0.0)
            colour = (eye4 - 2 * luma_outer * flip) @ colour  # Householder reflection across the grey plane
        if m["hue"] > 0 and channels > 1:
            theta = self._gate((torch.rand(batch, device=device) * 2 - 1) * math.pi * k["hue_max"], m["hue"] * p, 0.0)
            colour = self._rotation_about(luma[:3], theta) @ colour
        if m["saturation"] > 0 and channels > 1:
            s = self._gate(torch.exp2(torch.randn(batch, 1, 1, device=device) * k["saturation_std"]), m["saturation"] * p, 1.0)
            colour = (luma_outer + (eye4 - luma_outer) * s) @ colour

        if bool((colour == eye4).all()):
            return images
        colour = colour.to(images.dtype)
        flat = images.reshape(batch, channels, height * width)
        if channels == 3:
            flat = colour[:, :3, :3] @ flat + colour[:, :3, 3:]
        else:  # grayscale: average the RGB rows' effect on a grey pixel
            rows = colour[:, :3, :].mean(dim=1, keepdim=True)
            flat = flat * rows[:, :, :3].sum(dim=2, keepdim=True) + rows[:, :, 3:]
        return flat.reshape(batch, channels, height, width)

    @staticmethod
    def _rotation_about(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Homogeneous 4x4 rotations by ``theta`` about the unit ``axis`` (Rodrigues' formula)."""
        batch = theta.shape[0]
        cross = torch.zeros(3, 3, device=theta.device)
        cross[0, 1], cross[0, 2], cross[1, 2] = -axis[2], axis[1], -axis[0]
        cross = cross - cross.t()
        sin, cos = torch.sin(theta)[:, None, None], torch.cos(theta)[:, None, None]
        rot3 = cos * torch.eye(3, device=theta.device) + sin * cross + (1 - cos) * torch.outer(axis, axis)
        out = torch.eye(4, device=theta.device).repeat(batch, 1, 1)
        out[:, :3, :3] = rot3
        return out

    # -- 3. image-space filtering ----------------------------------------------------------

    def _image_filter(self, images: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        m, k = self.multipliers, self.constants
        if m["imgfilter"] <= 0:
            return images
        batch, channels, height, width = images.shape
        device = images.device
        bands = self.filter_bank.shape[0]
        expected_power = torch.tensor([10.0, 1.0, 1.0, 1.0], device=device) / 13  # a 1/f spectrum
        gains = torch.ones(batch, bands, device=device)
        for band, strength in enumerate(self.imgfilter_bands):
            amp = self._gate(torch.exp2(torch.randn(batch, device=device) * k["imgfilter_std"]),
                             m["imgfilter"] * p * strength, 1.0)
            band_gain = torch.ones(batch, bands, device=device)
            band_gain[:, band] = amp
            # Keep the expected power constant so the image's overall energy does not drift.
            band_gain = band_gain / (expected_power * band_gain.square()).sum(dim=-1, keepdim=True).sqrt()
            gains = gains * band_gain
        if bool((gains == 1).all()):
            return images
        taps = (gains @ self.filter_bank.to(device)).to(images.dtype)  # [B, T]
        taps = taps[:, None, :].expand(batch, channels, -1).reshape(batch * channels, 1, -1)
        half = self.filter_bank.shape[1] // 2
        x = images.reshape(1, batch * channels, height, width)
        x = _reflect_pad(x, half)  # the bank is 43 taps wide: wider than small images
        x = F.conv2d(x, taps[:, :, None, :], groups=batch * channels)  # horizontal pass
        x = F.conv2d(x, taps[:, :, :, None], groups=batch * channels)  # vertical pass
        return x.reshape(batch, channels, height, width)

    # -- 4-5. corruptions -----------------------------------------------------------------------

    def _corruptions(self, images: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        m, k = self.multipliers, self.constants
        batch, channels, height, width = images.shape
        device = images.device
        if m["noise"] > 0:
            sigma = self._gate(torch.randn(batch, 1, 1, 1, device=device).abs() * k["noise_std"], m["noise"] * p, 0.0)
            if bool((sigma != 0).any()):
                images = images + torch.randn_like(images) * sigma.to(images.dtype)
        if m["cutout"] > 0:
            size = self._gate(torch.full([batch, 1, 1], k["cutout_size"], device=device), m["cutout"] * p, 0.0)
            centre = torch.rand(batch, 2, 1, 1, device=device)
            xs = (torch.arange(width, device=device).view(1, 1, -1) + 0.5) / width
            ys = (torch.arange(height, device=device).view(1, -1, 1) + 0.5) / height
            inside = ((xs - centre[:, 0]).abs() < size / 2) & ((ys - centre[:, 1]).abs() < size / 2)
            if bool(inside.any()):
                images = images * (~inside).unsqueeze(1).to(images.dtype)
        return images


@dataclass(frozen=True)
class AdaOptions:
    pipeline: str = option("bgc", "ADA pipeline: which transform groups run (the official names: "
                           + ", ".join(PIPELINES) + ").")
    ops: dict[str, float] = option(default_factory=dict, help="Overrides of single op multipliers or strengths, "
                                   "e.g. {xflip = 0, scale_std = 0.1}, as the official AugmentPipe takes them.")

    def __post_init__(self) -> None:
        if self.pipeline not in PIPELINES:
            raise FewshotError(f"unknown ADA pipeline {self.pipeline!r}", hint=f"choose one of: {', '.join(PIPELINES)}")


@augmentations.register("ada", options=AdaOptions, help="adaptive discriminator augmentation (StyleGAN2-ADA)")
class AdaAugment(Augment):
    """ADA: the ``pipeline`` (default ``bgc``) at the adaptive strength ``p``.

    Extra keyword arguments override single op multipliers (``xflip=0``) or strengths
    (``scale_std=0.1``), as the official AugmentPipe does.
    """

    adaptive = True

    def __init__(
        self, p: float = 0.0, target: float = 0.6, ada_kimg: float = 500, interval: int = 4,
        pipeline: str = "bgc", ops: dict[str, float] | None = None,
    ) -> None:
        super().__init__(p=p, target=target, ada_kimg=ada_kimg, interval=interval)
        self.pipe = AdaPipeline(pipeline, **(ops or {}))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pipe(images, self.p)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pipeline={self.pipe.pipeline}"
