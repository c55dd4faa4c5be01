"""Compiled ops (fewshot/cuda) against the plain-PyTorch references that define them.

One CPU build per machine (cached by source hash); every comparison shares it through the
session-scoped ``cpu_ops`` fixture. Without a C++ compiler or ninja the comparisons skip; with
one, a failed build is a test failure.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from float32_bounds import (
    U32,
    U64,
    assert_network_close,
    assert_within,
    bias_act_bound,
    conv_magnitude,
    fan_ins,
    fan_outs,
    fir_bound,
    gamma,
    winograd_conv_bound,
    winograd_input_gradient_bound,
    winograd_transform_bound,
)
from torch import nn

from fewshot.cuda import build as ops_build
from fewshot.cuda.bias_act_compiled import bias_act_compiled
from fewshot.cuda.bias_act_ref import ACTIVATIONS, bias_act_ref
from fewshot.cuda.upfirdn2d_compiled import upfirdn2d_compiled
from fewshot.cuda.upfirdn2d_ref import setup_filter, upfirdn2d_ref
from fewshot.errors import FewshotError

# Tolerances: the rounding bounds of float32_bounds in the dtype's unit roundoff (both sides compute in it, the
# kernel in its own order of summation), never a figure measured on one CPU.
UNIT = {torch.float32: U32, torch.float64: U64}


def compiled_cpu_module():
    """The compiled CPU module (built once per process); skips without a compiler or ninja, fails a failed build."""
    if shutil.which("c++") is None or shutil.which("ninja") is None:
        pytest.skip("no C++ compiler or ninja: the compiled CPU ops cannot be built here")
    state = ops_build.get_state("cpu")
    assert state.status == "compiled", f"the CPU ops failed to build:\n{state.reason}"
    return state.module


@pytest.fixture(scope="session")
def cpu_ops():
    return compiled_cpu_module()


# ---- bias_act ---------------------------------------------------------------------------------

BIAS_SHAPES = [
    ((1, 5, 7, 3), 1),  # batch 1, odd sizes, channels not a multiple of 8
    ((4, 13), 1),  # fully connected layer
    ((3, 6, 5), 2),  # bias on the last dim
    ((2, 3, 9, 4), 0),  # bias on the first dim
    ((2, 11, 1, 1), 1),  # 1x1 spatial
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_forward_matches_reference(cpu_ops, act, dtype):
    gen = torch.Generator().manual_seed(hash(act) % 1000)
    for shape, dim in BIAS_SHAPES:
        x = torch.randn(shape, generator=gen, dtype=dtype) * 3
        b = torch.randn(shape[dim], generator=gen, dtype=dtype)
        for kwargs in [{}, {"alpha": 0.3, "gain": 0.7, "clamp": 0.8}, {"clamp": 0.0}, {"gain": 2.5}]:
            for bias in (b, None):
                want = bias_act_ref(x, bias, dim=dim, act=act, **kwargs)
                got = bias_act_compiled(cpu_ops, x, bias, dim=dim, act=act, **kwargs)
                assert got.dtype == want.dtype == dtype
                assert_within(got, want, bias_act_bound(x, bias, dim, act, UNIT[dtype], **kwargs),
                              f"{act} {shape} dim={dim} {kwargs}")


def test_bias_act_large_values_and_non_contiguous(cpu_ops):
    x = torch.linspace(-40, 40, 8 * 9 * 10).reshape(8, 9, 10).transpose(1, 2)  # softplus threshold, saturation
    b = torch.randn(10)
    for act in ACTIVATIONS:
        assert_within(bias_act_compiled(cpu_ops, x, b, act=act), bias_act_ref(x, b, act=act), bias_act_bound(x, b, 1, act),
                      act)


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_gradcheck_and_gradgradcheck(cpu_ops, act):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    x = (x + 0.05 * x.sign()).requires_grad_()  # keep clear of the kinks at 0
    b = torch.randn(3, generator=gen, dtype=torch.float64).requires_grad_()
    for clamp in (None, 0.9):
        def fn(x, b, clamp=clamp):
            return bias_act_compiled(cpu_ops, x, b, act=act, alpha=0.3, gain=1.3, clamp=clamp)

        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bias_act_grads_match_reference(cpu_ops):
    x = torch.randn(3, 7, 5, 5, requires_grad=True)
    b = torch.randn(7, requires_grad=True)
    for fn in (bias_act_ref, lambda *a, **k: bias_act_compiled(cpu_ops, *a, **k)):
        y = fn(x, b, act="lrelu", clamp=1.0)
        (gx,) = torch.autograd.grad((y * torch.arange(y.numel()).reshape(y.shape).cos()).sum(), x, create_graph=True)
        gx.square().sum().backward()  # the R1 pattern: a gradient of a gradient
    # Compare the two runs: recompute separately so the accumulated .grad of each is known.
    results = []
    for fn in (bias_act_ref, lambda *a, **k: bias_act_compiled(cpu_ops, *a, **k)):
        xi, bi = x.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
        y = fn(xi, bi, act="swish", clamp=1.0)
        (gx,) = torch.autograd.grad((y * y.detach().cos()).sum(), xi, create_graph=True)
        gx.square().sum().backward()
        results.append((y.detach(), gx.detach(), xi.grad, bi.grad))
    # Tolerance: float32 rounding of elementwise chains (swish, clamp, gain, the cos weights, first and second
    # derivatives: fewer than 32 rounded steps, each a "layer" of fan-in 1 in float32_bounds.assert_network_close)
    # and, for the bias gradient, the 75-term sum over the other dimensions.
    for name, want, got in zip(("y", "x gradient", "x.grad", "b.grad"), *results, strict=True):
        assert_network_close(got, want, [1] * 32 + [x[:, 0].numel()], what=name)


# ---- upfirdn2d --------------------------------------------------------------------------------

UPFIRDN_CASES = [
    # (input shape, filter, up, down, padding, flip_filter, gain)
    ((1, 3, 7, 9), [1, 3, 3, 1], 1, 1, 0, False, 1),
    ((2, 5, 8, 8), [1, 3, 3, 1], 2, 1, [2, 1, 2, 1], False, 4),  # the generator's image upsampling
    ((2, 5, 8, 8), [1, 3, 3, 1], 1, 2, 1, False, 1),  # the discriminator's downsampling
    ((2, 3, 9, 6), [1, 3, 3, 1], 4, 1, [3, 0, 1, 2], True, 16),
    ((1, 7, 16, 12), [1, 3, 3, 1], 1, 4, [0, 2, 3, 1], False, 1),
    ((2, 3, 10, 11), [1, 2, 1], (2, 1), (1, 2), [-1, 2, 1, -2], True, 2),  # negative padding crops
    ((1, 2, 13, 7), [1, 2, 3, 4, 5, 6, 7, 8, 9], 2, 2, [-3, 4, 2, -1], False, 1),  # separable (>= 8 taps)
    ((3, 1, 5, 5), "rand2d", 2, 2, 1, False, 3),  # a non-symmetric 2-D filter
    ((2, 3, 6, 7), "rand2d", (1, 2), (4, 1), [2, 3, 0, 1], True, 1),
    ((1, 9, 5, 6), None, 2, 1, 0, False, 1),
    ((2, 4, 12, 12), "sep3", 1, 1, [-2, -2, 1, 1], False, 1),  # 1-D filter below 8 taps, forced separable
    # The specialised CPU paths (4x4 filter, down 2 or up 2 on both axes): odd sizes, batch 1,
    # odd / uneven / negative padding, non-symmetric filters.
    ((1, 1, 7, 9), [1, 3, 3, 1], 1, 2, [0, 3, 1, 2], False, 1),
    ((1, 2, 9, 5), "rand4", 1, 2, [-1, 2, 2, -1], True, 1),
    ((1, 3, 5, 7), "rand4", 2, 1, [1, 1, 3, 0], False, 4),
    ((1, 1, 7, 3), [1, 3, 3, 1], 2, 1, [2, 1, 2, 1], True, 4),
    ((2, 1, 6, 5), "rand4", 2, 1, [-2, 3, 0, -1], True, 1),
    # The 4x4 filter without resampling (the blur after the generator's transposed convolution).
    ((1, 2, 9, 7), "rand4", 1, 1, [2, 1, -1, 3], True, 1),
    ((2, 3, 6, 5), [1, 3, 3, 1], 1, 1, [1, 2, 2, 1], False, 1),
    ((1, 1, 5, 8), "rand4", 1, 1, [-1, -2, 0, 2], False, 2),
    # ADA's geometric resampling: its 12-tap wavelet as a 1-D filter (two one-axis passes), up 2 on a
    # padded image, down 2 with negative padding and the filter flipped; and 3x resampling.
    ((2, 3, 11, 13), "wavelet12", 2, 1, [6, 5, 6, 5], False, 4),
    ((2, 3, 40, 37), "wavelet12", 1, 2, [-10, -10, -9, -11], True, 1),
    ((1, 2, 7, 8), "wavelet12", 3, (1, 3), [4, -2, 7, 1], False, 9),
]


def _filter(spec, dtype):
    gen = torch.Generator().manual_seed(3)
    if spec is None:
        return None
    if spec == "rand2d":
        return torch.rand(3, 4, generator=gen).to(dtype)
    if spec == "rand4":
        return torch.rand(4, 4, generator=gen).to(dtype)
    if spec == "sep3":
        return setup_filter([1, 2, 4], separable=True).to(dtype)
    if spec == "wavelet12":  # a non-symmetric 12-tap filter, the size of ADA's sym6 lowpass
        return torch.rand(12, generator=gen).to(dtype)
    return setup_filter(spec).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", range(len(UPFIRDN_CASES)))
def test_upfirdn2d_forward_matches_reference(cpu_ops, case, dtype):
    shape, fspec, up, down, padding, flip, gain = UPFIRDN_CASES[case]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(case), dtype=dtype)
    f = _filter(fspec, dtype)
    want = upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    got = upfirdn2d_compiled(cpu_ops, x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    assert got.shape == want.shape and got.dtype == dtype
    assert_within(got, want, fir_bound(x, f, UNIT[dtype], up=up, down=down, padding=padding, flip_filter=flip,
                                       gain=gain), f"case {case}")


@pytest.mark.parametrize("case", [1, 2, 3, 5, 6, 8, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21])
def test_upfirdn2d_gradcheck_and_gradgradcheck(cpu_ops, case):
    shape, fspec, up, down, padding, flip, gain = UPFIRDN_CASES[case]
    shape = (1, 1, *shape[2:])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(case), dtype=torch.float64, requires_grad=True)
    f = _filter(fspec, torch.float64)

    def fn(x):
        return upfirdn2d_compiled(cpu_ops, x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_upfirdn2d_one_axis_passes_equal_the_generic_loop_bit_for_bit(cpu_ops):
    """A 1 x T (T x 1) filter takes the one-axis path; the same filter with a row (column) of zeros beside it,
    and one more row (column) of padding, takes the generic loop with the same outputs and the same taps in the
    same order, plus exact zeros. In float64 (the path the AVX2 clone leaves alone) the two must agree in every
    bit, over up/down 1-3, negative padding and flips."""
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        along_x, flip = bool(rng.integers(2)), bool(rng.integers(2))
        taps, up, down = int(rng.integers(1, 14)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
        pad0, pad1 = (int(v) for v in rng.integers(-3, 7, size=2))
        x = torch.from_numpy(rng.standard_normal((2, 2, *rng.integers(1, 13, size=2)))).double()
        f = torch.from_numpy(rng.standard_normal(taps)).double()
        size = x.shape[3] if along_x else x.shape[2]
        if (size * up + pad0 + pad1 - taps) // down + 1 < 1:
            continue
        # The zeros go where the correlation's first tap stays the real one (flip_filter=False flips both axes).
        padded = torch.stack([f, torch.zeros_like(f)] if flip else [torch.zeros_like(f), f])
        if along_x:
            one_axis = cpu_ops.upfirdn2d(x, f[None, :], up, 1, down, 1, pad0, pad1, 0, 0, flip)
            generic = cpu_ops.upfirdn2d(x, padded, up, 1, down, 1, pad0, pad1, 0, 1, flip)
        else:
            one_axis = cpu_ops.upfirdn2d(x, f[:, None], 1, up, 1, down, 0, 0, pad0, pad1, flip)
            generic = cpu_ops.upfirdn2d(x, padded.T.contiguous(), 1, up, 1, down, 0, 1, pad0, pad1, flip)
        assert torch.equal(one_axis, generic), (along_x, taps, up, down, pad0, pad1, flip)
        checked += 1
    assert checked > 200


def test_upfirdn2d_empty_output_is_a_clear_error(cpu_ops):
    with pytest.raises(ValueError, match="leave no output"):
        upfirdn2d_compiled(cpu_ops, torch.zeros(1, 1, 4, 4), setup_filter([1, 3, 3, 1]), padding=-3)


# ---- dispatch: choice, fallback, networks ------------------------------------------------------


def test_networks_agree_compiled_vs_reference(cpu_ops, monkeypatch, tiny_G, tiny_D):
    G, D = tiny_G, tiny_D  # conftest: seeded, with perturbed biases and noise strengths
    # A batch of 4 fills D's minibatch-stddev group: with 2, D is piecewise linear up to the stddev's eps, and R1's
    # input gradient is that layer's eps-sized curvature, a float32 difference of terms ~1e7 times larger (noise).
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    outputs = {}
    for choice in ("reference", "compiled"):
        monkeypatch.setenv("FEWSHOT_OPS", choice)
        img = G(z, None, noise_mode="const").detach().requires_grad_()
        logits = D(img, None)
        (grad,) = torch.autograd.grad(logits.sum(), img, create_graph=True)  # R1 needs double backward
        r1 = grad.square().sum()
        r1.backward()
        outputs[choice] = (img.detach(), logits.detach(), grad.detach(), img.grad)
    # Tolerance: float32 rounding through the layers each result passed (float32_bounds.assert_network_close): the
    # image through G's, the logits through D's too, the input gradient back through D, R1's gradient through D's
    # forward and backward once more. The two runs differ in the fused kernels' order of summation and in taking
    # the Winograd path for 64x64-channel convolutions.
    through = {"image": fan_ins(G)}
    through["logits"] = through["image"] + fan_ins(D)
    through["input gradient"] = through["logits"] + fan_outs(D)
    through["R1 gradient"] = through["input gradient"] + fan_ins(D) + fan_outs(D)
    for (name, ks), want, got in zip(through.items(), outputs["reference"], outputs["compiled"], strict=True):
        assert_network_close(got, want, ks, what=name)


def test_reference_choice_never_builds(monkeypatch):
    monkeypatch.setenv("FEWSHOT_OPS", "reference")
    monkeypatch.setattr(ops_build, "get_state", lambda kind: pytest.fail("reference mode must not build"))
    from fewshot.cuda import bias_act, upfirdn2d

    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(bias_act(x, act="lrelu"), bias_act_ref(x, act="lrelu"))
    torch.testing.assert_close(upfirdn2d(x, setup_filter([1, 3, 3, 1]), padding=1), upfirdn2d_ref(x, setup_filter([1, 3, 3, 1]), padding=1))


def test_failed_build_falls_back_with_one_warning_and_no_rebuild(monkeypatch):
    from fewshot.cuda import bias_act, upfirdn2d

    saved = dict(ops_build._states), ops_build._warned
    ops_build._reset_for_tests()
    calls = []

    def failing_build(kind, **kwargs):
        calls.append(kind)
        return ops_build.BuildState(kind=kind, status="failed", reason="c++: command not found")

    monkeypatch.setattr(ops_build, "build", failing_build)
    monkeypatch.setenv("FEWSHOT_OPS", "auto")
    try:
        x = torch.randn(1, 2, 6, 6)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                torch.testing.assert_close(bias_act(x, act="relu"), bias_act_ref(x, act="relu"))
                upfirdn2d(x, setup_filter([1, 3, 3, 1]), padding=1)
        messages = [str(w.message) for w in caught if "compiled cpu ops unavailable" in str(w.message)]
        assert len(messages) == 1 and "c++: command not found" in messages[0]
        assert calls == ["cpu"]

        monkeypatch.setenv("FEWSHOT_OPS", "compiled")
        with pytest.raises(FewshotError, match="failed to build"):
            bias_act(x)
    finally:
        ops_build._states.clear()
        ops_build._states.update(saved[0])
        ops_build._warned = saved[1]


def test_half_on_cpu_uses_the_reference(cpu_ops, monkeypatch):
    from fewshot.cuda import bias_act

    monkeypatch.setenv("FEWSHOT_OPS", "compiled")
    x = torch.randn(2, 3, 4, 4).to(torch.bfloat16)
    torch.testing.assert_close(bias_act(x, act="lrelu"), bias_act_ref(x, act="lrelu"))


def test_doctor_reports_ops_state(cpu_ops):
    from typer.testing import CliRunner

    from fewshot.cli import app, register_commands

    register_commands()
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    for expected in ("torch", "nvcc", "ninja", "bias_act", "upfirdn2d", "compiled", "cache", "winograd [cpu]", "on for wide 3x3",
                     "clip", "facenet", "mp4 output"):
        assert expected in result.output


def test_doctor_says_how_to_install_a_missing_or_broken_extra(tmp_path, monkeypatch):
    from fewshot.cli.doctor import optional_module_state

    missing = optional_module_state("fewshot_no_such_module", "x", "pip install --no-deps x", "a test")
    assert missing == "not installed, needed for a test: pip install --no-deps x"
    # Installed with --no-deps and one of its own dependencies absent (facenet-pytorch without requests):
    package = tmp_path / "half_installed_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("import fewshot_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = optional_module_state("half_installed_pkg", "half-installed-pkg", "pip install y", "a test")
    assert "cannot import 'fewshot_absent_dependency'" in broken and "pip install fewshot_absent_dependency" in broken
    assert optional_module_state("PIL", "pillow", "-", "images").startswith("installed (pillow ")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_kernels_match_reference():
    module = ops_build.get_state("cuda").module
    assert module is not None, ops_build.get_state("cuda").reason
    x = torch.randn(3, 13, 9, 7, device="cuda", dtype=torch.float64, requires_grad=True)
    b = torch.randn(13, device="cuda", dtype=torch.float64, requires_grad=True)
    for act in ACTIVATIONS:
        torch.testing.assert_close(bias_act_compiled(module, x, b, act=act, clamp=1.0), bias_act_ref(x, b, act=act, clamp=1.0))
    f = setup_filter([1, 3, 3, 1], device="cuda").double()
    for up, down, pad in [(2, 1, [2, 1, 2, 1]), (1, 2, 1), (4, 2, [-1, 3, 2, 0])]:
        want = upfirdn2d_ref(x, f, up=up, down=down, padding=pad, gain=up * up)
        torch.testing.assert_close(upfirdn2d_compiled(module, x, f, up=up, down=down, padding=pad, gain=up * up), want)
    small = x[:1, :2, :5, :5].detach().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: upfirdn2d_compiled(module, t, f, up=2, padding=1), (small,))
    assert torch.autograd.gradgradcheck(lambda t: bias_act_compiled(module, t, None, act="lrelu"), (small,))


# ---- Winograd 3x3 convolution (CPU) -------------------------------------------------------------

WINOGRAD_SHAPES = [(2, 3, 7, 5), (1, 4, 8, 8), (3, 2, 5, 9), (1, 1, 1, 1), (2, 5, 2, 3), (2, 3, 13, 37), (1, 2, 16, 64)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32 has its own 4-lane kernels
@pytest.mark.parametrize("shape", WINOGRAD_SHAPES)
def test_winograd_transforms_match_reference_and_their_adjoints(cpu_ops, shape, dtype):
    from fewshot.cuda.winograd_ref import input_transform_ref, output_transform_ref, tile_counts

    gen = torch.Generator().manual_seed(sum(shape))
    n, c, h, w = shape
    th, tw = tile_counts(h, w)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    v = torch.randn(36, c, n * th * tw, generator=gen, dtype=torch.float64)
    y = torch.randn(shape, generator=gen, dtype=torch.float64)
    xd, vd, yd = x.to(dtype), v.to(dtype), y.to(dtype)

    # Tolerance: each transform's worst-case rounding bound in dtype (float32_bounds.winograd_transform_bound: at
    # most 13 roundings per term, times the transform on absolute values), one rounding more for the conversion of
    # the float64 inputs to dtype; in float64 also the reference's own, at most 36 per term (its rows of the
    # Kronecker products).
    def check(got, want, kind, t):
        extra = 1 if dtype == torch.float32 else 1 + 36
        bound = winograd_transform_bound(kind, t, shape, u=UNIT[dtype], extra_roundings=extra)
        assert_within(got.double(), want, bound, f"{kind} {dtype}")

    check(cpu_ops.winograd_input(xd), input_transform_ref(x), "input", x)
    check(cpu_ops.winograd_output(vd, n, h, w), output_transform_ref(v, n, h, w), "output", v)
    # The adjoints, against the float64 reference's: <T x, v> == <x, T^T v> for every x and v.
    want_input_t = torch.autograd.functional.vjp(input_transform_ref, x, v)[1]
    want_output_t = torch.autograd.functional.vjp(lambda m: output_transform_ref(m, n, h, w), v, y)[1]
    check(cpu_ops.winograd_input_t(vd, n, h, w), want_input_t, "input_t", v)
    check(cpu_ops.winograd_output_t(yd), want_output_t, "output_t", y)
    torch.testing.assert_close((cpu_ops.winograd_input(x) * v).sum(), (x * cpu_ops.winograd_input_t(v, n, h, w)).sum())
    torch.testing.assert_close((cpu_ops.winograd_output(v, n, h, w) * y).sum(), (v * cpu_ops.winograd_output_t(y)).sum())


def test_winograd_streaming_stores_write_the_same_values(cpu_ops):
    # V and M of 4 MiB and more leave the float32 kernels as streaming stores (winograd.cpp, kStreamMinBytes).
    # Each (image, channel) plane is transformed on its own, so the same images transformed four at a time (V of
    # 1.2 MB: ordinary stores) must give the very same bits, tile for tile.
    gen = torch.Generator().manual_seed(7)
    n, c, h, w = 16, 128, 16, 16  # V: 36 x 128 x 256 tiles x 4 bytes = 4.7 MB; runs of 16 tiles (whole lines)
    x = torch.randn(n, c, h, w, generator=gen)
    y = torch.randn(n, c, h, w, generator=gen)
    per_image = (h // 4) * (w // 4)
    whole_v, whole_m = cpu_ops.winograd_input(x), cpu_ops.winograd_output_t(y)
    for first in range(0, n, 4):
        tiles = slice(first * per_image, (first + 4) * per_image)
        assert torch.equal(whole_v[:, :, tiles], cpu_ops.winograd_input(x[first:first + 4]))
        assert torch.equal(whole_m[:, :, tiles], cpu_ops.winograd_output_t(y[first:first + 4]))


def test_use_winograd_routes_a_resnets_3x3_convolutions_without_changing_it(cpu_ops, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    from fewshot.cuda import winograd

    monkeypatch.setattr(winograd, "MIN_CHANNEL_PRODUCT", 1)
    monkeypatch.setattr(winograd, "MIN_TILES", 1)
    monkeypatch.setattr(winograd, "SMALL_MAP_PIXELS", 0)
    calls = []
    real = winograd.conv3x3_winograd_compiled
    monkeypatch.setattr(winograd, "conv3x3_winograd_compiled", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    plain = torchvision.models.resnet18(num_classes=10).double().eval().requires_grad_(False)
    routed = torchvision.models.resnet18(num_classes=10).double().eval().requires_grad_(False)
    routed.load_state_dict(plain.state_dict())
    # 16 3x3 convolutions, three of them with stride 2 (and the 7x7 stem and 1x1 shortcuts stay).
    assert winograd.use_winograd(routed) == 13
    assert routed.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    want = plain(x)
    (want_grad,) = torch.autograd.grad(want.square().sum(), x)
    got = routed(x)
    (got_grad,) = torch.autograd.grad(got.square().sum(), x)
    assert len(calls) == 13  # every routed layer took the Winograd path in the forward
    # Tolerance: float64 rounding through the layers, and back for the gradient (float32_bounds at u = 2^-53).
    assert_network_close(got, want, fan_ins(plain), u=U64, what="output")
    assert_network_close(got_grad, want_grad, fan_ins(plain) + fan_outs(plain), u=U64, what="input gradient")


@pytest.mark.parametrize("winograd_path", [True, False])
def test_routed_conv_with_bias_matches_conv2d(cpu_ops, monkeypatch, winograd_path):
    # Folded BatchNorms give the Reg-DGM ResNets' convolutions a bias: on the Winograd path it is added to the
    # fresh output in place; otherwise torch's convolution takes it. Both must equal F.conv2d, gradients too.
    from fewshot.cuda import winograd

    if winograd_path:
        monkeypatch.setattr(winograd, "MIN_CHANNEL_PRODUCT", 1)
        monkeypatch.setattr(winograd, "MIN_TILES", 1)
        monkeypatch.setattr(winograd, "SMALL_MAP_PIXELS", 0)
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, padding=1).double()
    weight, bias = conv.weight.detach().clone(), conv.bias.detach().clone().requires_grad_(True)
    assert winograd.use_winograd(conv) == 1 and (winograd.winograd_module(torch.zeros(2, 6, 9, 7, dtype=torch.float64),
                                                                         weight) is not None) == winograd_path
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64, requires_grad=True)
    got = conv(x)
    want = F.conv2d(x, weight, bias, padding=1)
    # Tolerance: float64 rounding (float32_bounds at u = 2^-53) of the Winograd construction (which bounds the
    # direct path's 6 x 9-term sums too) and of the direct convolution, its bias included; of their adjoints for
    # the input gradient; of the bias gradient's 2 x 9 x 7-term sums.
    direct = conv_magnitude(x, weight, padding=1) + bias.detach().abs().view(1, -1, 1, 1)
    assert_within(got, want, winograd_conv_bound(x, weight, U64) + gamma(6 * 9 + 1, U64) * direct, "output")
    g = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, (x, conv.bias), g)
    want_grads = torch.autograd.grad(want, (x, bias), g)
    direct_t = F.conv_transpose2d(g.abs(), weight.abs(), padding=1)
    assert_within(got_grads[0], want_grads[0],
                  winograd_input_gradient_bound(g, weight, U64) + gamma(5 * 9, U64) * direct_t, "input gradient")
    assert_network_close(got_grads[1], want_grads[1], [2 * 9 * 7], u=U64, what="bias gradient")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels", [(1, 1), (3, 5), (6, 9), (8, 4)])  # float32 runs 4 filters per step, then the rest
def test_winograd_weight_transform_matches_reference_and_its_adjoint(cpu_ops, channels, dtype):
    from fewshot.cuda.winograd_ref import weight_transform

    gen = torch.Generator().manual_seed(sum(channels))
    o, c = channels
    w = torch.randn(o, c, 3, 3, generator=gen, dtype=torch.float64)
    u = torch.randn(36, o, c, generator=gen, dtype=torch.float64)
    # Tolerance: the transform's worst-case rounding bound in dtype, one rounding more for the conversion to dtype
    # and, in float64, up to 36 more for the reference's own Kronecker-product rows.
    extra = 1 if dtype == torch.float32 else 1 + 36
    assert_within(cpu_ops.winograd_weight(w.to(dtype)).double(), weight_transform(w),
                  winograd_transform_bound("weight", w, u=UNIT[dtype], extra_roundings=extra), f"weight {dtype}")
    want_t = torch.autograd.functional.vjp(weight_transform, w, u)[1]
    assert_within(cpu_ops.winograd_weight_t(u.to(dtype)).double(), want_t,
                  winograd_transform_bound("weight_t", u, u=UNIT[dtype], extra_roundings=extra), f"weight_t {dtype}")


@pytest.mark.parametrize("shape", WINOGRAD_SHAPES)
def test_winograd_conv_equals_conv2d_with_gradients_of_gradients(cpu_ops, shape):
    from fewshot.cuda.winograd import conv3x3_winograd_compiled
    from fewshot.cuda.winograd_ref import conv3x3_winograd_ref

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, shape[1], 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    want = torch.nn.functional.conv2d(x, w, padding=1)
    # Tolerance: float64 rounding of the Winograd construction (float32_bounds.winograd_conv_bound at u = 2^-53;
    # x2.5 as the reference's Kronecker-product transforms round a term up to 16, 9 and 25 times where the kernel's
    # separable ones do 8, 8 and 10) and of the direct convolution's 9 C-term sums (worst case).
    bound = 2.5 * winograd_conv_bound(x, w, U64) + gamma(9 * shape[1], U64) * conv_magnitude(x, w, padding=1)
    assert_within(conv3x3_winograd_ref(x, w), want, bound, "winograd_ref")
    assert_within(conv3x3_winograd_compiled(cpu_ops, x, w), want, bound, "compiled")
    small_x = x[:1, :2].detach().requires_grad_()
    small_w = w[:3, :2].detach().requires_grad_()

    def fn(a, b):
        return conv3x3_winograd_compiled(cpu_ops, a, b)

    assert torch.autograd.gradcheck(fn, (small_x, small_w))
    assert torch.autograd.gradgradcheck(fn, (small_x, small_w))


def test_winograd_float32_accuracy_at_layer_size(cpu_ops):
    from fewshot.cuda.winograd import conv3x3_winograd_compiled
    from fewshot.cuda.winograd_ref import input_transform_ref, output_transform_ref, weight_transform

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 256, 16, 16, generator=gen)
    w = torch.randn(256, 256, 3, 3, generator=gen) / 48
    want = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
    got = conv3x3_winograd_compiled(cpu_ops, x, w)
    # Tolerance: float32 rounding of the transforms (worst case) and of the 256-term channel sums (random-sign
    # model), carried through the output transform: float32_bounds.winograd_conv_bound, derived from u = 2^-24
    # alone, so it holds whichever GEMM kernel torch's bmm picks on this CPU.
    bound = winograd_conv_bound(x, w)
    assert_within(got, want, bound, "float32 Winograd")
    # The bound still sees an error 2^13 times float32's in one stage: the same construction in float64 with its
    # transformed input rounded to float16 is far outside it.
    v, u = input_transform_ref(x.double()), weight_transform(w.double())
    half = output_transform_ref(torch.bmm(u, v.half().double()), 2, 16, 16)
    assert ((half - want).abs() > bound).any()


def test_conv3x3_dispatch(cpu_ops, monkeypatch):
    from fewshot.cuda import winograd

    calls = []
    real = winograd.conv3x3_winograd_compiled
    monkeypatch.setattr(winograd, "conv3x3_winograd_compiled", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(winograd, "MIN_CHANNEL_PRODUCT", 16 * 16)
    monkeypatch.setattr(winograd, "MIN_TILES", 8)
    monkeypatch.setattr(winograd, "SMALL_MAP_PIXELS", 0)
    x, w = torch.randn(2, 16, 8, 8), torch.randn(16, 16, 3, 3) / 12
    monkeypatch.setenv("FEWSHOT_OPS", "auto")
    want = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
    got = winograd.conv3x3(x, w)
    assert calls == [1]
    assert_within(got, want, winograd_conv_bound(x, w), "float32 Winograd")  # float32 rounding, derived
    winograd.conv3x3(x[:, :8], w[:8, :8])  # too few channels: direct
    winograd.conv3x3(x[:1, :, :4, :4], w)  # too few tiles: direct
    monkeypatch.setenv("FEWSHOT_WINOGRAD", "0")
    winograd.conv3x3(x, w)
    monkeypatch.setenv("FEWSHOT_WINOGRAD", "1")
    monkeypatch.setenv("FEWSHOT_OPS", "reference")
    winograd.conv3x3(x, w)
    assert calls == [1]


def test_discriminator_r1_with_winograd_matches_direct(cpu_ops, monkeypatch):
    """A D wide enough for the Winograd path: logits, input gradient and R1's parameter gradients."""
    from conftest import perturb_

    from fewshot.cuda import winograd
    from fewshot.nets import Discriminator

    monkeypatch.setattr(winograd, "MIN_CHANNEL_PRODUCT", 64 * 64)  # a small D still takes the path
    monkeypatch.setattr(winograd, "MIN_TILES", 8)
    monkeypatch.setattr(winograd, "SMALL_MAP_PIXELS", 0)
    calls = []
    real = winograd.conv3x3_winograd_compiled
    monkeypatch.setattr(winograd, "conv3x3_winograd_compiled", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(2)
    D = perturb_(Discriminator(0, 16, 3, channel_base=1024, channel_max=64), 2, scale=0.05)
    # A full minibatch-stddev group of 4: with 2, R1's bias gradients are float32 noise (see test_networks_agree_...).
    img0 = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    results = {}
    for enabled in ("0", "1"):
        monkeypatch.setenv("FEWSHOT_WINOGRAD", enabled)
        D.zero_grad(set_to_none=True)
        img = img0.clone().requires_grad_()
        logits = D(img, None)
        (grad,) = torch.autograd.grad(logits.sum(), img, create_graph=True)
        grad.square().sum().backward()
        results[enabled] = [logits.detach(), grad.detach()] + [p.grad.clone() for p in D.parameters() if p.grad is not None]
    assert len(calls) >= 2  # conv0 of the 16 and 8 px blocks (the 4 px epilogue has too few tiles)
    # Tolerance: float32 rounding through D's layers (float32_bounds.assert_network_close): forward for the logits,
    # and back for the input gradient; R1's parameter gradients also pass the double backward (forward and backward
    # once more) and the gradients' sums over batch and pixels. A bias's R1 gradient is such a sum of second-order
    # terms that largely cancel (it is ~1/20 of its weight's): its rounding scale is its layer's, the root mean
    # square of the layer's whole gradient (weight and bias).
    forward, backward = fan_ins(D), fan_outs(D)
    assert_network_close(results["1"][0], results["0"][0], forward, what="logits")
    assert_network_close(results["1"][1], results["0"][1], forward + backward, what="input gradient")
    names = [name for name, p in D.named_parameters() if p.grad is not None]
    layer_of = {name: name.rsplit(".", 1)[0] for name in names}
    layer_grads = {}
    for name, want in zip(names, results["0"][2:], strict=True):
        layer_grads.setdefault(layer_of[name], []).append(want.flatten())
    for name, want, got in zip(names, results["0"][2:], results["1"][2:], strict=True):
        scale = torch.cat(layer_grads[layer_of[name]]).square().mean().sqrt().item()
        assert_network_close(got, want, 2 * (forward + backward) + [img0[:, 0].numel()], scale=scale, what=name)


def test_keep_freed_memory_applies_once_and_can_be_turned_off():
    import platform
    import subprocess
    import sys

    code = "from fewshot.host_memory import keep_freed_memory as k; print(k(), k())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    env = dict(__import__("os").environ, FEWSHOT_KEEP_FREED="0")
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()
    glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    assert on == [str(glibc)] * 2
    assert off == ["False", "False"]


# ---- weight-derived tensors kept at inference (fewshot.cuda.derived) ----------------------------------------


def test_derived_tensors_are_kept_only_while_the_weight_is_unchanged_and_outside_autograd():
    import gc

    from fewshot.cuda.derived import derived, kept_count

    computed = []

    def square_sum(t):
        computed.append(1)
        return t.square().sum(dim=1)

    weight = torch.nn.Parameter(torch.randn(4, 3), requires_grad=False)
    before = kept_count()
    with torch.no_grad():
        first = derived(weight, "t", square_sum)
        assert derived(weight, "t", square_sum) is first and len(computed) == 1 and kept_count() == before + 1
        weight.mul_(2)  # an in-place change (an optimiser or EMA step) bumps the version
        assert torch.allclose(derived(weight, "t", square_sum), 4 * first) and len(computed) == 2
        derived(weight, "t", square_sum)  # a weight seen to change is no longer kept
        assert len(computed) == 3 and kept_count() == before
        assert derived(torch.ones(2, 2), "t", square_sum) is not None and len(computed) == 4  # not a parameter
    trained = torch.nn.Parameter(torch.randn(4, 3))  # requires grad, autograd on: always computed, never kept
    derived(trained, "t", square_sum)
    derived(trained, "t", square_sum)
    assert len(computed) == 6 and kept_count() == before
    frozen = torch.nn.Parameter(torch.randn(4, 3), requires_grad=False)  # a frozen extractor's weight, autograd on
    derived(frozen, "t", square_sum)
    assert derived(frozen, "t", square_sum) is not None and len(computed) == 7 and kept_count() == before + 1
    del frozen
    gc.collect()

    other = torch.nn.Parameter(torch.randn(3, 3), requires_grad=False)
    with torch.no_grad():
        derived(other, "t", square_sum)
    assert kept_count() == before + 1
    del other
    gc.collect()
    assert kept_count() == before  # dropped with its parameter


def test_sampling_is_never_stale_after_the_weights_change():
    import copy

    from conftest import make_tiny_G

    from fewshot.cuda.derived import kept_count
    from fewshot.generate import synthesize

    G = make_tiny_G(synthesis_kwargs={"channel_base": 4096, "channel_max": 64}).eval().requires_grad_(False)
    ws = G.mapping(torch.randn(4, G.z_dim), None)
    held = kept_count()
    before = synthesize(G, ws)
    assert kept_count() > held  # 64x64-channel 3x3 convolutions: Winograd, their transforms kept
    assert torch.equal(synthesize(G, ws), before)  # the kept transforms give the same bytes
    with torch.no_grad():
        for p in G.synthesis.parameters():
            p.mul_(1.05)
    after = synthesize(G, ws)
    fresh = synthesize(copy.deepcopy(G), ws)  # new parameters: nothing kept for them
    assert not torch.equal(after, before) and torch.equal(after, fresh)


def test_winograd_leaves_small_maps_with_few_channels_to_the_direct_convolution(cpu_ops, monkeypatch):
    # Below 12x12 the transforms fill half of each 4-tile step; only wide layers still gain (SMALL_MAP_*).
    from fewshot.cuda import winograd

    monkeypatch.delenv("FEWSHOT_WINOGRAD", raising=False)
    monkeypatch.delenv("FEWSHOT_OPS", raising=False)

    def routed(channels: int, size: int) -> bool:
        x = torch.zeros(16, channels, size, size)
        return winograd.winograd_module(x, torch.zeros(channels, channels, 3, 3)) is not None

    assert routed(128, 16) and not routed(128, 8)
    assert routed(256, 8)
