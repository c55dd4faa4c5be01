"""filtered_lrelu's compiled CPU kernel against the reference that defines the op (filtered_lrelu_ref.py).

Float64: forward, input and bias gradients on small cases that reach every branch of the index
arithmetic (up/down factors, 1-D and 2-D filters, flips, asymmetric and negative padding, identity
filters, outputs reading only padding), and gradcheck of the compiled first-order gradient. Float32:
the layers of StyleGAN3-T and -R at 256 px (their sizes, factors, taps and padding, as
SynthesisLayer computes them; fewer channels). Every tolerance is a rounding bound derived from the
unit roundoff (``filtered_lrelu_bounds``), never a figure measured on one CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from float32_bounds import LAMBDA, U32, U64, assert_within, dot_sigma, gamma
from test_ops import compiled_cpu_module

from fewshot.cuda import build as ops_build
from fewshot.cuda.filtered_lrelu_compiled import filtered_lrelu_compiled
from fewshot.cuda.filtered_lrelu_ref import filtered_lrelu_ref
from fewshot.cuda.upfirdn2d_ref import upfirdn2d_ref


@pytest.fixture(scope="module")
def cpu_ops():
    return compiled_cpu_module()


# ---- StyleGAN3's layers: sizes, factors, taps, padding ----------------------------------------------------------


@dataclass(frozen=True)
class Sg3Layer:
    """One SynthesisLayer's filtered_lrelu call: its input is the modulated conv's output."""

    index: int
    channels: int
    in_size: int  # the conv's output: the layer's input size + conv_kernel - 1
    out_size: int
    up: int
    down: int
    up_taps: int
    down_taps: int
    padding: tuple[int, int, int, int]
    radial: bool  # a radially symmetric 2-D down filter (StyleGAN3-R outside the critically sampled layers)
    torgb: bool
    up_cutoff: float  # cutoffs and the sampling rate of the upsampled intermediate, for the filters
    down_cutoff: float
    rate: float


def stylegan3_layers(resolution: int = 256, config: str = "T", channel_base: int = 16384, channel_max: int = 512,
                     num_layers: int = 14, num_critical: int = 2, margin: int = 10, filter_size: int = 6,
                     lrelu_upsampling: int = 2) -> list[Sg3Layer]:
    """The filtered_lrelu arguments of every layer of a StyleGAN3 synthesis network (config T or R), from its
    geometric progression of cutoffs and stopbands (first cutoff 2, first stopband 2^2.1, last stopband 2^0.3
    times the last cutoff), as the official SynthesisNetwork and SynthesisLayer compute them."""
    kernel, radial = (1, True) if config == "R" else (3, False)
    if config == "R":  # R doubles the feature maps
        channel_base, channel_max = 2 * channel_base, 2 * channel_max
    last_cutoff = resolution / 2
    progress = [min(i / (num_layers - num_critical), 1) for i in range(num_layers + 1)]
    cutoffs = [2 * (last_cutoff / 2) ** e for e in progress]
    stopbands = [2**2.1 * (last_cutoff * 2**0.3 / 2**2.1) ** e for e in progress]
    rates = [2 ** math.ceil(math.log2(min(2 * s, resolution))) for s in stopbands]
    sizes = [r + 2 * margin for r in rates[:-2]] + [resolution, resolution]
    channels = [round(min(channel_base / 2 / c, channel_max)) for c in cutoffs[:-1]] + [3]
    layers = []
    for i in range(num_layers + 1):
        prev, torgb = max(i - 1, 0), i == num_layers
        tmp_rate = max(rates[prev], rates[i]) * (1 if torgb else lrelu_upsampling)
        up, down = round(tmp_rate / rates[prev]), round(tmp_rate / rates[i])
        up_taps = filter_size * up if up > 1 and not torgb else 1
        down_taps = filter_size * down if down > 1 and not torgb else 1
        k = 1 if torgb else kernel
        pad_total = (sizes[i] - 1) * down + 1 - (sizes[prev] + k - 1) * up + up_taps + down_taps - 2
        pad_lo = (pad_total + up) // 2  # the symmetric interpretation of sample locations
        pad = (pad_lo, pad_total - pad_lo, pad_lo, pad_total - pad_lo)
        critical = i >= num_layers - num_critical
        layers.append(Sg3Layer(i, channels[i], sizes[prev] + k - 1, sizes[i], up, down, up_taps, down_taps, pad,
                               radial and not critical and down_taps > 1, torgb, cutoffs[prev], cutoffs[i], tmp_rate))
    return layers


def lowpass(taps: int, cutoff: float, rate: float, radial: bool = False) -> torch.Tensor | None:
    """A Kaiser-windowed sinc (1-D) or jinc (radial, 2-D) low-pass of ``taps`` taps, normalised to sum 1: the tap
    counts and symmetry of StyleGAN3's filters (their window's beta differs, which changes no index arithmetic)."""
    if taps == 1:
        return None
    window = torch.kaiser_window(taps, periodic=False, beta=6.0, dtype=torch.float64)
    n = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    if not radial:
        f = torch.sinc(2 * cutoff / rate * n) * window
    else:
        r = torch.hypot(n[:, None], n[None, :]) / rate
        f = torch.special.bessel_j1(2 * math.pi * cutoff * r) / (math.pi * r) * torch.outer(window, window)
    return (f / f.sum()).float()


def layer_kwargs(layer: Sg3Layer) -> dict:
    """filtered_lrelu's keyword arguments for ``layer`` (filters as float32 buffers, as in the network)."""
    return dict(
        fu=lowpass(layer.up_taps, layer.up_cutoff, layer.rate),
        fd=lowpass(layer.down_taps, layer.down_cutoff, layer.rate, radial=layer.radial),
        up=layer.up, down=layer.down, padding=list(layer.padding), clamp=256.0,
        gain=1.0 if layer.torgb else math.sqrt(2), slope=1.0 if layer.torgb else 0.2,
    )


# ---- rounding bounds --------------------------------------------------------------------------------------------


def _roundings(f: torch.Tensor | None) -> int:
    # As float32_bounds.fir_bound: at most fh * fw products per output (a separable pass fewer), and the gain.
    taps = 1 if f is None else (f.numel() ** 2 if f.ndim == 1 else f.numel())
    return taps + 2


def filtered_lrelu_bounds(x, b, gy, fu=None, fd=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                          clamp=None, flip_filter=False, u=U32):
    """Elementwise bounds on the difference of two evaluations (unit roundoff u) of y = filtered_lrelu(x) and of
    its x and b gradients for the output gradient gy, worst case stage by stage (Higham, Lemma 3.1):

    * stage 1 (bias, upsampling FIR): ``e_s = gamma(r_u + 1) U(|x| + |b|)`` with U the upsampling by |fu|;
    * stage 2 is L = gain * max(1, slope) Lipschitz and rounds twice (slope, gain): ``e_a = L e_s + gamma(2) L U``;
    * stage 3: ``e_y = D(e_a) + gamma(r_d) D(L U)`` with D the downsampling by |fd|.

    Gradient: the same maps transposed, ``U^T(L e_gs + gamma(2) L D^T|gy| + amb L D^T|gy|) + gamma(r_u) U^T(L
    D^T|gy|)`` with ``e_gs = gamma(r_d) D^T|gy|``: where the exact intermediate lies within rounding of a kink
    (0, or the clamp) the two sides may take different branches, whose derivatives differ by at most L (``amb``).
    The bias gradient sums the x gradient's N H W terms: their bounds plus ``LAMBDA`` random-sign summation scales.
    Each bound is twice the one-sided one (both evaluations round)."""
    absu = None if fu is None else fu.double().abs()
    absd = None if fd is None else fd.double().abs()

    def up_map(t):
        return upfirdn2d_ref(t, absu, up=up, padding=padding, gain=up**2)

    def down_map(t):
        return upfirdn2d_ref(t, absd, down=down)

    xd = x.detach().double()
    bd = torch.zeros(x.shape[1], dtype=torch.float64) if b is None else b.detach().double()
    lip = gain * max(1.0, slope)
    s_mag = up_map(xd.abs() + bd.abs()[:, None, None])
    e_s = gamma(_roundings(fu) + 1, u) * s_mag
    e_a = lip * e_s + gamma(2, u) * lip * s_mag
    y_bound = 2 * (down_map(e_a) + gamma(_roundings(fd), u) * down_map(lip * s_mag))

    # Pixels of the intermediate within rounding of a kink, by the float64 reference's intermediate.
    fu64 = None if fu is None else fu.double()
    s = upfirdn2d_ref(xd + bd[:, None, None], fu64, up=up, padding=padding, gain=up**2, flip_filter=flip_filter)
    ambiguous = s.abs() <= 2 * e_s
    if clamp is not None:
        ambiguous |= ((torch.where(s > 0, s, s * slope) * gain).abs() - clamp).abs() <= 2 * e_a
    gs_mag = torch.autograd.functional.vjp(down_map, torch.zeros_like(s_mag), gy.detach().double().abs())[1]
    e_ga = lip * gamma(_roundings(fd), u) * gs_mag + (gamma(2, u) + ambiguous.double()) * lip * gs_mag
    up_t = lambda t: torch.autograd.functional.vjp(up_map, torch.zeros_like(xd), t)[1]  # noqa: E731
    e_gx = up_t(e_ga) + gamma(_roundings(fu), u) * up_t(lip * gs_mag)
    gx_mag = up_t(lip * gs_mag)
    terms = x.shape[0] * x.shape[2] * x.shape[3]
    gb_bound = 2 * (e_gx.sum([0, 2, 3]) + LAMBDA * dot_sigma(terms, gx_mag.square().sum([0, 2, 3]), u))
    return y_bound, 2 * e_gx, gb_bound


# ---- helpers ------------------------------------------------------------------------------------------------------

UNIT = {torch.float32: U32, torch.float64: U64}


def _run(fn, x, b, gy, **kwargs):
    """y, x gradient and b gradient of fn(x, b=b, **kwargs) for the output gradient gy."""
    xi = x.detach().clone().requires_grad_()
    bi = None if b is None else b.detach().clone().requires_grad_()
    y = fn(xi, b=bi, **kwargs)
    grads = torch.autograd.grad(y, [xi] + ([bi] if bi is not None else []), gy)
    return y.detach(), grads[0], (grads[1] if bi is not None else None)


def _compare(cpu_ops, x, b, gy, what, **kwargs):
    def compiled(x, **kw):
        return filtered_lrelu_compiled(cpu_ops, x, **kw)

    want = _run(filtered_lrelu_ref, x, b, gy, **kwargs)
    got = _run(compiled, x, b, gy, **kwargs)
    bounds = filtered_lrelu_bounds(x, b, gy, u=UNIT[x.dtype], **kwargs)
    for name, g, w, bound in zip(("y", "x gradient", "b gradient"), got, want, bounds, strict=True):
        if w is None:
            continue
        assert g.dtype == w.dtype == x.dtype and g.shape == w.shape, (what, name)
        assert_within(g, w, bound, f"{what}: {name}")
    return got, want, bounds


def _random_filter(spec, gen):
    if spec is None:
        return None
    return torch.randn(spec, generator=gen, dtype=torch.float64)  # not symmetric: a wrong flip shows


# (input shape, fu shape, fd shape, up, down, padding, clamp, flip_filter, gain, slope)
CASES = [
    ((2, 3, 9, 11), (12,), (12,), 2, 2, [9, 8, 9, 8], 1.5, False, math.sqrt(2), 0.2),  # a T layer, small
    ((1, 2, 8, 7), (12,), (12, 12), 2, 2, [11, 10, 11, 10], 1.5, False, math.sqrt(2), 0.2),  # R: 2-D down filter
    ((1, 2, 14, 12), (24,), (12,), 4, 2, [-2, -5, -6, -9], None, False, math.sqrt(2), 0.2),  # up 4, cropping
    ((2, 2, 6, 9), (8,), (6, 5), 4, 2, [3, 2, 1, 4], None, True, math.sqrt(2), 0.3),  # flip, asymmetric
    ((1, 3, 7, 9), None, None, 1, 1, 0, 0.6, False, 1.0, 1.0),  # ToRGB: bias and clamp only
    ((1, 2, 7, 9), (3, 4), None, 2, 2, [-1, 2, 3, -2], 0.8, True, 1.3, 0.1),  # 2-D up filter, down without one
    ((1, 2, 5, 6), None, (5,), 2, 3, [2, 3, 1, 0], None, False, math.sqrt(2), 0.2),  # up without a filter, down 3
    ((1, 1, 6, 5), (7,), (4, 3), 3, 1, [6, 7, 0, 9], 0.9, False, math.sqrt(2), 0.2),  # outputs reading only padding
    ((1, 2, 3, 13), (4,), (3,), 1, 2, [1, 0, 2, 2], 1.0, True, 2.0, 0.0),  # relu (slope 0), odd widths
    ((1, 1, 1, 1), (6,), (6,), 2, 2, [5, 5, 5, 5], None, False, math.sqrt(2), 0.2),  # a single input pixel
]


def _case(index, dtype, gen):
    shape, fu, fd, up, down, padding, clamp, flip, gain, slope = CASES[index]
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    b = torch.randn(shape[1], generator=gen, dtype=torch.float64).to(dtype)
    fu, fd = (None if f is None else _random_filter(f, gen).to(dtype) for f in (fu, fd))
    kwargs = dict(fu=fu, fd=fd, up=up, down=down, padding=padding, clamp=clamp, flip_filter=flip, gain=gain,
                  slope=slope)
    return x, b, kwargs


# ---- float64: every branch, gradcheck ----------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(CASES)))
def test_float64_forward_and_gradients_match_reference(cpu_ops, index):
    gen = torch.Generator().manual_seed(index)
    x, b, kwargs = _case(index, torch.float64, gen)
    y = filtered_lrelu_ref(x, b=b, **kwargs)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    for bias in (b, None):
        _compare(cpu_ops, x, bias, gy, f"case {index}", **kwargs)


@pytest.mark.parametrize("index", [0, 1, 2, 3, 5, 6, 8])
def test_float64_gradcheck(cpu_ops, index):
    gen = torch.Generator().manual_seed(100 + index)
    x, b, kwargs = _case(index, torch.float64, gen)
    x = x[:1, :2].clone().requires_grad_()
    b = b[:2].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, b: filtered_lrelu_compiled(cpu_ops, x, b=b, **kwargs), (x, b))


# ---- float32: StyleGAN3's layers ---------------------------------------------------------------------------------

SG3_LAYERS = [("T", i) for i in (0, 3, 8, 13, 14)] + [("R", i) for i in (0, 3, 12)]


@pytest.mark.parametrize("config,index", SG3_LAYERS)
def test_float32_stylegan3_layers_match_reference(cpu_ops, config, index):
    layer = stylegan3_layers(256, config)[index]
    kwargs = layer_kwargs(layer)
    assert kwargs["fd"] is None or (kwargs["fd"].ndim == 2) == layer.radial
    gen = torch.Generator().manual_seed(index)
    channels = 3 if layer.torgb else 4  # the layer's sizes and arguments; fewer channels than its 64-1024
    x = torch.randn(2, channels, layer.in_size, layer.in_size, generator=gen) * 60  # some pixels reach the clamp
    b = torch.randn(channels, generator=gen)
    gy = torch.randn(2, channels, layer.out_size, layer.out_size, generator=gen)
    got, want, bounds = _compare(cpu_ops, x, b, gy, f"{config} layer {index}", **kwargs)
    assert got[0].shape[-1] == layer.out_size
    # The bound is tight enough to see a change of 2^-12 in the gain (an error ~100 times float32's rounding).
    nudged = filtered_lrelu_compiled(cpu_ops, x, b=b, **dict(kwargs, gain=kwargs["gain"] * (1 + 2**-12)))
    assert ((nudged.double() - want[0].double()).abs() > bounds[0]).any()


# ---- the contract around the kernels -----------------------------------------------------------------------------


def test_double_backward_is_a_clear_error(cpu_ops):
    x, b, kwargs = _case(0, torch.float64, torch.Generator().manual_seed(0))
    x.requires_grad_()
    y = filtered_lrelu_compiled(cpu_ops, x, b=b, **kwargs)
    gy = torch.randn_like(y).requires_grad_()
    (gx,) = torch.autograd.grad(y, x, gy, create_graph=True)
    with pytest.raises(NotImplementedError, match="first-order gradients only"):
        gx.square().sum().backward()


@pytest.mark.parametrize("bad", [
    dict(x=torch.zeros(2, 3, 4)),
    dict(up=0), dict(down=1.5), dict(b=torch.zeros(5)),
    dict(fu=torch.ones(2, 2, 2)), dict(fd=torch.ones(1, 1, 2, 2)),
    dict(padding=-5), dict(fu=torch.ones(12), up=2, padding=-8), dict(padding=[1, 2, 3]),
])
def test_bad_arguments_raise_as_the_reference_does(cpu_ops, bad):
    args = dict(x=torch.zeros(1, 3, 4, 4), fu=None, fd=None, b=torch.zeros(3), up=1, down=1, padding=0)
    args.update(bad)
    with pytest.raises(ValueError) as ref_error:
        filtered_lrelu_ref(**args)
    with pytest.raises(ValueError) as compiled_error:
        filtered_lrelu_compiled(cpu_ops, **args)
    assert str(compiled_error.value) == str(ref_error.value)


def test_dispatch_routes_by_choice_filter_grad_and_dtype(cpu_ops, monkeypatch):
    from fewshot.cuda import dispatch, filtered_lrelu
    from fewshot.cuda import filtered_lrelu_compiled as compiled_module

    calls = []
    real = compiled_module.filtered_lrelu_compiled
    monkeypatch.setattr(compiled_module, "filtered_lrelu_compiled", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, b, kwargs = _case(0, torch.float32, torch.Generator().manual_seed(3))
    monkeypatch.setenv("FEWSHOT_OPS", "auto")
    want = filtered_lrelu_ref(x, b=b, **kwargs)
    got = filtered_lrelu(x, b=b, **kwargs)
    assert calls == [1]
    assert_within(got, want, filtered_lrelu_bounds(x, b, torch.zeros_like(want), **kwargs)[0], "dispatched")
    # A filter that requires grad: the reference, which gives the filter its gradient.
    fu = kwargs["fu"].clone().requires_grad_()
    filtered_lrelu(x, b=b, **dict(kwargs, fu=fu)).sum().backward()
    assert fu.grad is not None and calls == [1]
    filtered_lrelu(x.to(torch.bfloat16), b=b.to(torch.bfloat16), **kwargs)  # no bfloat16 CPU kernel
    assert calls == [1]
    monkeypatch.setenv("FEWSHOT_OPS", "reference")
    monkeypatch.setattr(ops_build, "get_state", lambda kind: pytest.fail("reference mode must not build"))
    assert torch.equal(filtered_lrelu(x, b=b, **kwargs), want) and calls == [1]
    assert dispatch.filtered_lrelu is filtered_lrelu


def test_forward_without_grad_and_non_contiguous_input(cpu_ops):
    x, b, kwargs = _case(3, torch.float64, torch.Generator().manual_seed(4))
    x_t = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, channels-last-like strides
    assert not x_t.is_contiguous()
    want = filtered_lrelu_ref(x, b=b, **kwargs)
    with torch.no_grad():
        got = filtered_lrelu_compiled(cpu_ops, x_t, b=b, **kwargs)
    assert_within(got, want, filtered_lrelu_bounds(x, b, torch.zeros_like(want), u=U64, **kwargs)[0], "no grad")


def test_doctor_lists_filtered_lrelu(cpu_ops):
    from typer.testing import CliRunner

    from fewshot.cli import app, register_commands

    register_commands()
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("filtered_lrelu [cpu]"))
    assert "compiled" in line


# ---- CUDA (make gpu-check) ---------------------------------------------------------------------------------------

HALF_UNIT = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_cuda_kernel_matches_reference(dtype):
    module = ops_build.get_state("cuda").module
    assert module is not None, ops_build.get_state("cuda").reason
    check_device_kernel(module, "cuda", dtype)


def check_device_kernel(module, device: str, dtype: torch.dtype) -> None:
    """The kernels of ``module`` on ``device`` in ``dtype`` against the reference on the CPU, on CASES and the
    StyleGAN3 layers. Half inputs are rounded first; the reference then runs in float32 on exactly those values."""
    ref_dtype = torch.float32 if dtype in HALF_UNIT else dtype
    cases = [_case(i, torch.float64, torch.Generator().manual_seed(i)) for i in range(len(CASES))]
    for config, index in SG3_LAYERS:
        layer = stylegan3_layers(256, config)[index]
        gen = torch.Generator().manual_seed(index)
        x = torch.randn(2, 4, layer.in_size, layer.in_size, generator=gen, dtype=torch.float64) * 60
        cases.append((x, torch.randn(4, generator=gen, dtype=torch.float64), layer_kwargs(layer)))

    def on_device(x, b, device_kwargs, **cpu_kwargs):
        y = filtered_lrelu_compiled(module, x.to(device, dtype), b=b.to(device, dtype), **device_kwargs)
        return y.to("cpu", ref_dtype)

    for n, (x, b, kwargs) in enumerate(cases):
        x, b = x.to(dtype).to(ref_dtype), b.to(dtype).to(ref_dtype)
        kwargs = {k: (v.to(ref_dtype) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        y = filtered_lrelu_ref(x, b=b, **kwargs)
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(n), dtype=torch.float64).to(dtype).to(ref_dtype)
        want = _run(filtered_lrelu_ref, x, b, gy, **kwargs)
        device_kwargs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        got = _run(on_device, x, b, gy, device_kwargs=device_kwargs, **kwargs)
        # The CUDA kernels compute in float (double for float64) and round each result to its type once more; the
        # bias gradient sums the rounded x gradient.
        bounds = filtered_lrelu_bounds(x, b, gy, u=UNIT[ref_dtype], **kwargs)
        unit = HALF_UNIT.get(dtype, 0.0)
        last = [unit * want[0].double().abs(), unit * want[1].double().abs(),
                unit * (want[2].double().abs() + want[1].double().abs().sum([0, 2, 3]))]
        for name, g, w, bound, extra in zip(("y", "x gradient", "b gradient"), got, want, bounds, last, strict=True):
            assert_within(g, w, bound + extra, f"{device} {dtype} case {n}: {name}")
