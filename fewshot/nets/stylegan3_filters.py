"""StyleGAN3's filter design and per-layer frequency schedule, in numpy (no scipy at run time).

The alias-free generator ("Alias-Free Generative Adversarial Networks", Karras et al. 2021) keeps
every layer's signal band-limited: each layer has a cutoff ``f_c``, a minimum stopband ``f_t``, a
sampling rate ``s`` and a transition half-width ``f_h``, growing geometrically from the first layer
to the last, and resamples through Kaiser-windowed low-pass filters designed from them. The
numbers here must equal the official ones bit for bit where they become buffers (``up_filter``,
``down_filter``), since those are stored in checkpoints and compared on load only by shape.

The Kaiser design follows the textbook windowed-sinc method (Kaiser's empirical formulas for the
window's beta from the attenuation a filter of ``numtaps`` and transition ``width`` reaches), which is
what ``scipy.signal.firwin(numtaps, cutoff, width=..., fs=...)`` computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def kaiser_attenuation(numtaps: int, width: float) -> float:
    """Stopband attenuation (dB) a Kaiser-windowed FIR of ``numtaps`` reaches for a transition ``width``
    given as a fraction of the Nyquist frequency (Kaiser's formula)."""
    return 2.285 * (numtaps - 1) * math.pi * width + 7.95


def kaiser_beta(attenuation: float) -> float:
    """The Kaiser window's shape parameter for a stopband attenuation in dB (Kaiser's formula)."""
    if attenuation > 50:
        return 0.1102 * (attenuation - 8.7)
    if attenuation > 21:
        return 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    return 0.0


def kaiser_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> np.ndarray:
    """Windowed-sinc low-pass FIR (float64): cutoff and transition width in the units of ``fs``,
    normalised to unit gain at DC."""
    nyquist = fs / 2
    beta = kaiser_beta(kaiser_attenuation(numtaps, width / nyquist))
    m = np.arange(numtaps) - (numtaps - 1) / 2
    band = cutoff / nyquist
    taps = band * np.sinc(band * m) * np.kaiser(numtaps, beta)
    return taps / taps.sum()


def bessel_j1(x: np.ndarray) -> np.ndarray:
    """The Bessel function J1 in float64 from Bessel's integral ``(1/2pi) int_0^2pi cos(t - x sin t) dt``.

    The integrand is smooth and periodic, so the trapezoid rule converges geometrically once the number of
    nodes exceeds |x| (128 nodes: within 2e-15 of scipy.special.j1 on [0, 60]; filters need |x| < 15).
    torch.special.bessel_j1 is off by up to 1.4e-6 relative, above float32's resolution of the stored filters.
    """
    x = np.asarray(x, dtype=np.float64)
    nodes = max(128, 2 * int(np.ceil(np.abs(x).max(initial=0))) + 64)
    t = 2 * np.pi * np.arange(nodes) / nodes
    return np.cos(t - x[..., None] * np.sin(t)).mean(axis=-1)


def jinc_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> np.ndarray:
    """Radially symmetric 2-D low-pass (float64): the jinc ``J1(2 pi f_c r) / (pi r)``, the ideal disc
    filter's impulse response, under a separable Kaiser window; normalised to unit sum.

    StyleGAN3-R downsamples with it so the network has no preferred axis (rotation equivariance)."""
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    taps = bessel_j1(2 * cutoff * np.pi * r) / (np.pi * r)  # an even numtaps never samples r = 0
    window = np.kaiser(numtaps, kaiser_beta(kaiser_attenuation(numtaps, width / (fs / 2))))
    taps = taps * np.outer(window, window)
    return taps / taps.sum()


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """The official layer filter: None (identity) for one tap, else a 1-D separable Kaiser low-pass, or with
    ``radial`` a 2-D jinc; float32 as stored in the ``up_filter``/``down_filter`` buffers."""
    if numtaps < 1:
        raise ValueError(f"a filter needs at least one tap, got {numtaps}")
    if numtaps == 1:
        return None
    taps = jinc_lowpass(numtaps, cutoff, width, fs) if radial else kaiser_lowpass(numtaps, cutoff, width, fs)
    return torch.as_tensor(taps, dtype=torch.float32)


@dataclass(frozen=True)
class LayerSchedule:
    """Per-layer numbers of the synthesis network, index 0 = the Fourier input, index ``num_layers`` = ToRGB."""

    cutoffs: np.ndarray  # f_c
    stopbands: np.ndarray  # f_t
    sampling_rates: np.ndarray  # s
    half_widths: np.ndarray  # f_h
    sizes: np.ndarray  # feature-map size including the margin
    channels: np.ndarray


def layer_schedule(
    img_resolution: int, img_channels: int, channel_base: int, channel_max: int, num_layers: int,
    num_critical: int, first_cutoff: float, first_stopband: float, last_stopband_rel: float, margin_size: int,
) -> LayerSchedule:
    """The geometric progression of cutoffs and stopbands of the paper (its Fig. 4b), and what follows from it.

    Cutoffs rise from ``first_cutoff`` to half the output resolution over the first ``num_layers -
    num_critical`` layers and stay there; the last layers are critically sampled (stopband at Nyquist).
    Sampling rates are the smallest power of two holding twice the stopband (at most the resolution);
    feature maps carry ``margin_size`` extra pixels each side except the last two, which are the image.
    """
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return LayerSchedule(cutoffs, stopbands, sampling_rates, half_widths, sizes, channels)


def resampling_padding(
    in_size: np.ndarray, out_size: np.ndarray, conv_kernel: int, up_factor: int, down_factor: int,
    up_taps: int, down_taps: int,
) -> list[int]:
    """``[x0, x1, y0, y1]`` padding of filtered_lrelu's upsampled signal so the output has ``out_size`` samples
    at the positions of the symmetric interpretation (the paper's Appendix C.3: sample centres at half-pixels)."""
    pad_total = (out_size - 1) * down_factor + 1  # output size before downsampling
    pad_total = pad_total - (in_size + conv_kernel - 1) * up_factor  # the conv's output after upsampling
    pad_total = pad_total + up_taps + down_taps - 2  # what the two filters take away
    pad_lo = (pad_total + up_factor) // 2
    pad_hi = pad_total - pad_lo
    return [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]
