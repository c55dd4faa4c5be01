"""StyleGAN3 generator (alias-free, Karras et al. 2021): the T (translation) and R (rotation) configs.

Constructor arguments, attribute names and the ``state_dict`` layout (buffers included: ``w_avg``,
``magnitude_ema``, ``up_filter``/``down_filter``, ``transform``, ``freqs``, ``phases``) match NVIDIA's
``training/networks_stylegan3.py``, so official weights load key for key and a seed gives the official
image. The arithmetic follows the paper and the published definitions; the code is ours.

What differs from StyleGAN2 (fewshot.nets.generator): the synthesis starts from Fourier features of a
continuous grid, whose rotation and translation come from w (and from ``synthesis.input.transform``,
which users set to pan or rotate the output); every layer is a modulated conv followed by
``filtered_lrelu`` (upsample, leaky ReLU, low-pass, downsample), with no noise and no skip connections;
``num_ws = num_layers + 2`` (the input and every layer including ToRGB read their own w).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cuda import filtered_lrelu
from ..registry import networks
from .layers import FullyConnectedLayer, normalize_2nd_moment
from .stylegan3_filters import design_lowpass_filter, layer_schedule, resampling_padding

NOISE_MODES = ("random", "const", "none")  # accepted as the official code accepts them; StyleGAN3 has no noise


def _fully_connected(
    in_features: int, out_features: int, activation: str = "linear", lr_multiplier: float = 1,
    weight_init: float = 1, bias_init: float | list[float] = 0,
) -> FullyConnectedLayer:
    """A dense layer initialised as StyleGAN3's: weight ``randn * (weight_init / lr_mul)``, bias ``bias_init /
    lr_mul``, with StyleGAN2's runtime arithmetic (gains ``lr_mul / sqrt(in)`` and ``lr_mul``). The raw draw is
    scaled in one multiplication, as the official code does, so a seed gives its starting weights bit for bit."""
    layer = FullyConnectedLayer(in_features, out_features, activation=activation)  # weight = the raw randn
    layer.weight_gain = lr_multiplier / math.sqrt(in_features)
    layer.bias_gain = lr_multiplier
    with torch.no_grad():
        layer.weight.mul_(weight_init / lr_multiplier)
        layer.bias.copy_(torch.as_tensor(bias_init, dtype=torch.float32).expand(out_features) / lr_multiplier)
    return layer


class MappingNetwork(nn.Module):
    """z (and an embedded condition c), each normalised, -> w through ``num_layers`` dense lrelu layers."""

    def __init__(
        self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2, lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.998,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        self.embed = _fully_connected(c_dim, w_dim) if c_dim > 0 else None
        for idx in range(num_layers):
            in_features = z_dim + (w_dim if c_dim > 0 else 0) if idx == 0 else w_dim
            layer = _fully_connected(in_features, w_dim, activation="lrelu", lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1,
        truncation_cutoff: int | None = None, update_emas: bool = False,
    ) -> torch.Tensor:
        """``[N, num_ws, w_dim]``; ``update_emas`` moves ``w_avg`` towards this batch's mean w (training)."""
        x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            x = torch.cat([x, normalize_2nd_moment(self.embed(c.to(torch.float32)))], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x


class SynthesisInput(nn.Module):
    """Fourier features of a continuous grid, rotated and translated per sample by an affine of w.

    ``transform`` (a 3x3 buffer, identity by default) is the *inverse* of a user's rotation/translation of the
    output image: gen_images.py's ``--rotate/--translate`` set it, and so do ``fewshot sample`` and
    ``fewshot interpolate``.
    """

    def __init__(self, w_dim: int, channels: int, size: int | list[int], sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = np.broadcast_to(np.asarray(size), [2])  # [width, height]
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth

        # Frequencies drawn uniformly from a disc of radius `bandwidth` (Gaussian direction, radius reshaped).
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        phases = torch.rand([channels]) - 0.5

        self.weight = nn.Parameter(torch.randn([channels, channels]))
        # Starts as the identity transform: rotation (cos, sin) = (1, 0), translation (0, 0).
        self.affine = _fully_connected(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def sample_transforms(self, w: torch.Tensor, user: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, 3, 3]``: w's rotation, then its translation, then the user transform (all inverse, wrt. the image):
        ``user`` (``[N, 3, 3]``, one per sample: a pan over the frames of a video) or else the ``transform`` buffer."""
        t = self.affine(w)  # (r_cos, r_sin, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)  # a pure rotation: (cos, sin) of unit length
        batch = w.shape[0]
        rotation = torch.eye(3, device=w.device).unsqueeze(0).repeat([batch, 1, 1])
        rotation[:, 0, 0] = t[:, 0]
        rotation[:, 0, 1] = -t[:, 1]
        rotation[:, 1, 0] = t[:, 1]
        rotation[:, 1, 1] = t[:, 0]
        translation = torch.eye(3, device=w.device).unsqueeze(0).repeat([batch, 1, 1])
        translation[:, 0, 2] = -t[:, 2]
        translation[:, 1, 2] = -t[:, 3]
        user = self.transform.unsqueeze(0) if user is None else user.to(device=w.device, dtype=torch.float32)
        return rotation @ translation @ user

    def forward(self, w: torch.Tensor, transforms: torch.Tensor | None = None) -> torch.Tensor:
        """Features ``[N, C, H, W]``; ``transforms`` (``[N, 3, 3]``, optional) replaces the buffer per sample."""
        transforms = self.sample_transforms(w, transforms)
        freqs = self.freqs.unsqueeze(0)  # [1, C, 2]
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)  # translation -> phase
        freqs = freqs @ transforms[:, :2, :2]  # rotation -> frequency

        # A user transform can push frequencies past the bandwidth: fade them out before the sampling limit.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)

        width, height = int(self.size[0]), int(self.size[1])
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = 0.5 * width / self.sampling_rate
        theta[1, 1] = 0.5 * height / self.sampling_rate
        grid = nn.functional.affine_grid(theta.unsqueeze(0), [1, 1, height, width], align_corners=False)

        # [N, H, W, C]: sin(2 pi (<grid, freq> + phase)), damped, then the learned channel mixing.
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (np.pi * 2))
        x = x * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, channels={self.channels}, size={list(self.size)}, "
                f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}")


def modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, padding: int, demodulate: bool,
    input_gain: torch.Tensor, fused: bool = True,
) -> torch.Tensor:
    """StyleGAN3's modulated conv: weight and styles pre-normalised to unit RMS (so fp16 cannot overflow),
    modulate, demodulate per output channel, scale the input by ``input_gain``.

    ``fused`` runs one grouped conv over per-sample weights (the official path); otherwise the styles and
    gain scale the activations, one conv with the shared weight runs, and the demodulation scales its output:
    the same function (agreement ~1e-6 in float32), much faster on the CPU for batches.
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    if not fused:
        scales = styles * input_gain.expand(batch, in_channels)  # what multiplies each input channel
        y = nn.functional.conv2d(x * scales.to(x.dtype).reshape(batch, -1, 1, 1), weight.to(x.dtype), padding=padding)
        if demodulate:  # sum_{i,k} (W[o,i,k] s[n,i])^2 = sum_i s[n,i]^2 sum_k W[o,i,k]^2
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
            y = y * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        return y
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(batch, -1, 1, 1, 1)
    w = w * input_gain.expand(batch, in_channels).reshape(batch, 1, -1, 1, 1)
    y = nn.functional.conv2d(
        x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, in_channels, kh, kw).to(x.dtype), padding=padding, groups=batch
    )
    return y.reshape(batch, -1, *y.shape[2:])


class SynthesisLayer(nn.Module):
    """Modulated conv, then bias + upsample + leaky ReLU + low-pass + downsample (``filtered_lrelu``).

    The conv's input is divided by the running RMS of what the layer has seen (``magnitude_ema``), so
    activations stay O(1) without normalisation layers. With ``is_torgb`` this is the ToRGB layer: a 1x1 conv
    without demodulation and a linear, unresampled output.
    """

    def __init__(
        self, w_dim: int, is_torgb: bool, is_critically_sampled: bool, use_fp16: bool,
        in_channels: int, out_channels: int, in_size: int | list[int], out_size: int | list[int],
        in_sampling_rate: float, out_sampling_rate: float, in_cutoff: float, out_cutoff: float,
        in_half_width: float, out_half_width: float,
        conv_kernel: int = 3, filter_size: int = 6, lrelu_upsampling: int = 2, use_radial_filters: bool = False,
        conv_clamp: float | None = 256, magnitude_ema_beta: float = 0.999,
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2])
        self.out_size = np.broadcast_to(np.asarray(out_size), [2])
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        # The nonlinearity runs at `lrelu_upsampling` x the higher rate, so its new harmonics can be filtered out.
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.in_cutoff = in_cutoff
        self.out_cutoff = out_cutoff
        self.in_half_width = in_half_width
        self.out_half_width = out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = _fully_connected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = int(np.rint(self.tmp_sampling_rate / in_sampling_rate))
        self.down_factor = int(np.rint(self.tmp_sampling_rate / out_sampling_rate))
        if in_sampling_rate * self.up_factor != self.tmp_sampling_rate or \
                out_sampling_rate * self.down_factor != self.tmp_sampling_rate:
            raise ValueError("sampling rates must be integer ratios of the lrelu sampling rate")
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        # Critically sampled layers have no room for a radial filter's wider transition band.
        self.down_radial = use_radial_filters and not is_critically_sampled
        self.register_buffer("up_filter", design_lowpass_filter(
            self.up_taps, in_cutoff, in_half_width * 2, self.tmp_sampling_rate))
        self.register_buffer("down_filter", design_lowpass_filter(
            self.down_taps, out_cutoff, out_half_width * 2, self.tmp_sampling_rate, radial=self.down_radial))
        self.padding = resampling_padding(self.in_size, self.out_size, self.conv_kernel, self.up_factor,
                                          self.down_factor, self.up_taps, self.down_taps)

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", force_fp32: bool = False,
        update_emas: bool = False, fused_modconv: bool | None = None,
    ) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        expected = (self.in_channels, int(self.in_size[1]), int(self.in_size[0]))
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"{type(self).__name__} expects [N, {expected[0]}, {expected[1]}, {expected[2]}], "
                             f"got {tuple(x.shape)}")
        if update_emas:
            magnitude = x.detach().to(torch.float32).square().mean()
            self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()

        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel**2))
        use_fp16 = self.use_fp16 and not force_fp32 and x.device.type == "cuda"
        dtype = torch.float16 if use_fp16 else torch.float32
        # Training and CUDA keep the official grouped conv; CPU inference asks for the shared-weight one.
        fused = True if fused_modconv is None else bool(fused_modconv)
        x = modulated_conv2d(x.to(dtype), self.weight, styles, padding=self.conv_kernel - 1,
                             demodulate=not self.is_torgb, input_gain=input_gain, fused=fused)
        gain = 1 if self.is_torgb else np.sqrt(2)
        slope = 1 if self.is_torgb else 0.2
        return filtered_lrelu(x, fu=self.up_filter, fd=self.down_filter, b=self.bias.to(x.dtype), up=self.up_factor,
                              down=self.down_factor, padding=self.padding, gain=gain, slope=slope, clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, is_torgb={self.is_torgb}, is_critically_sampled={self.is_critically_sampled}, "
                f"use_fp16={self.use_fp16}, in_sampling_rate={self.in_sampling_rate:g}, "
                f"out_sampling_rate={self.out_sampling_rate:g}, in_cutoff={self.in_cutoff:g}, "
                f"out_cutoff={self.out_cutoff:g}, in_size={list(self.in_size)}, out_size={list(self.out_size)}, "
                f"in_channels={self.in_channels}, out_channels={self.out_channels}")


class SynthesisNetwork(nn.Module):
    """ws ``[N, num_layers + 2, w_dim]`` -> image: Fourier input, ``num_layers`` layers, ToRGB, output scale."""

    def __init__(
        self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768, channel_max: int = 512,
        num_layers: int = 14, num_critical: int = 2, first_cutoff: float = 2, first_stopband: float = 2**2.1,
        last_stopband_rel: float = 2**0.3, margin_size: int = 10, output_scale: float = 0.25, num_fp16_res: int = 4,
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        if num_layers <= num_critical:
            raise ValueError(f"num_layers ({num_layers}) must exceed num_critical ({num_critical})")
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res

        plan = layer_schedule(img_resolution, img_channels, channel_base, channel_max, num_layers, num_critical,
                              first_cutoff, first_stopband, last_stopband_rel, margin_size)
        self.input = SynthesisInput(w_dim=w_dim, channels=int(plan.channels[0]), size=int(plan.sizes[0]),
                                    sampling_rate=plan.sampling_rates[0], bandwidth=plan.cutoffs[0])
        self.layer_names: list[str] = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim, is_torgb=idx == num_layers, is_critically_sampled=idx >= num_layers - num_critical,
                use_fp16=bool(plan.sampling_rates[idx] * 2**num_fp16_res > img_resolution),
                in_channels=int(plan.channels[prev]), out_channels=int(plan.channels[idx]),
                in_size=int(plan.sizes[prev]), out_size=int(plan.sizes[idx]),
                in_sampling_rate=int(plan.sampling_rates[prev]), out_sampling_rate=int(plan.sampling_rates[idx]),
                in_cutoff=plan.cutoffs[prev], out_cutoff=plan.cutoffs[idx],
                in_half_width=plan.half_widths[prev], out_half_width=plan.half_widths[idx], **layer_kwargs,
            )
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def layers(self) -> list[SynthesisLayer]:
        """The synthesis layers in order, ToRGB last (``ws[:, 1 + i]`` drives layer i; ``ws[:, 0]`` the input)."""
        return [getattr(self, name) for name in self.layer_names]

    def forward(self, ws: torch.Tensor, input_transforms: torch.Tensor | None = None, **layer_kwargs: Any) -> torch.Tensor:
        """The image of each ws; ``input_transforms`` (``[N, 3, 3]``, fewshot's addition) gives each sample its own
        input transform instead of ``input.transform``, so frames of a pan or rotation render in one batch."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        if input_transforms is not None and tuple(input_transforms.shape) != (ws.shape[0], 3, 3):
            raise ValueError(f"input_transforms must be [{ws.shape[0]}, 3, 3], got {tuple(input_transforms.shape)}")
        ws_list = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws_list[0], input_transforms)
        for layer, w in zip(self.layers(), ws_list[1:], strict=True):
            x = layer(x, w, **layer_kwargs)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, num_layers={self.num_layers}, num_critical={self.num_critical}, "
                f"margin_size={self.margin_size}, num_fp16_res={self.num_fp16_res}")


@networks.register("StyleGAN3Generator", help="StyleGAN3 generator, configs T and R (official state_dict layout)")
class StyleGAN3Generator(nn.Module):
    """``G(z, c) = synthesis(mapping(z, c))``, built as ``training.networks_stylegan3.Generator`` is.

    ``mapping_kwargs`` go to the mapping network; every other keyword to the synthesis network and its layers
    (``channel_base``, ``channel_max``, ``conv_kernel``, ``use_radial_filters``, ``magnitude_ema_beta``,
    ``num_fp16_res``, ``conv_clamp``, ...). StyleGAN3-R is ``conv_kernel=1, use_radial_filters=True`` with twice
    StyleGAN3-T's ``channel_base`` and ``channel_max``.
    """

    def __init__(
        self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
        mapping_kwargs: dict[str, Any] | None = None, **synthesis_kwargs: Any,
    ) -> None:
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        self.init_kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                img_channels=img_channels, mapping_kwargs=mapping_kwargs, **synthesis_kwargs)
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(
        self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1,
        truncation_cutoff: int | None = None, update_emas: bool = False, **synthesis_kwargs: Any,
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)


def input_transform(translate: tuple[float, float] = (0.0, 0.0), rotate: float = 0.0) -> torch.Tensor:
    """The ``synthesis.input.transform`` that pans the output by ``translate`` (in image widths: the last layer
    samples ``img_resolution`` pixels per unit of the input grid) and rotates it by ``rotate`` degrees, as
    gen_images.py's ``--translate``/``--rotate``: the inverse of that rotation-translation, float32 ``[3, 3]``."""
    angle = rotate / 360.0 * np.pi * 2
    sin, cos = np.sin(angle), np.cos(angle)
    forward = np.array([[cos, sin, translate[0]], [-sin, cos, translate[1]], [0.0, 0.0, 1.0]])
    return torch.from_numpy(np.linalg.inv(forward)).to(torch.float32)


def is_stylegan3(G: nn.Module) -> bool:
    """Whether a generator has StyleGAN3's Fourier input, whose transform pans and rotates the image."""
    return hasattr(getattr(G, "synthesis", None), "input") and hasattr(G.synthesis.input, "transform")
