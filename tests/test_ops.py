"""Compiled ops (fewshot/cuda) against the plain-PyTorch references that define them.

One CPU build per machine (cached by source hash); every comparison shares it through the
session-scoped ``cpu_ops`` fixture. Without a C++ compiler or ninja the comparisons skip; with
one, a failed build is a test failure.
"""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from fewshot.cuda import build as ops_build
from fewshot.cuda.bias_act_compiled import bias_act_compiled
from fewshot.cuda.bias_act_ref import ACTIVATIONS, bias_act_ref
from fewshot.cuda.upfirdn2d_compiled import upfirdn2d_compiled
from fewshot.cuda.upfirdn2d_ref import setup_filter, upfirdn2d_ref
from fewshot.errors import FewshotError

# Forward agreement: both sides accumulate in the input dtype; the kernel's order of summation differs.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture(scope="session")
def cpu_ops():
    if shutil.which("c++") is None or shutil.which("ninja") is None:
        pytest.skip("no C++ compiler or ninja: the compiled CPU ops cannot be built here")
    state = ops_build.get_state("cpu")
    assert state.status == "compiled", f"the CPU ops failed to build:\n{state.reason}"
    return state.module


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
                torch.testing.assert_close(got, want, **TOL[dtype], msg=f"{act} {shape} dim={dim} {kwargs}")


def test_bias_act_large_values_and_non_contiguous(cpu_ops):
    x = torch.linspace(-40, 40, 8 * 9 * 10).reshape(8, 9, 10).transpose(1, 2)  # softplus threshold, saturation
    b = torch.randn(10)
    for act in ACTIVATIONS:
        torch.testing.assert_close(bias_act_compiled(cpu_ops, x, b, act=act), bias_act_ref(x, b, act=act), **TOL[torch.float32])


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
    for want, got in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


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
    return setup_filter(spec).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", range(len(UPFIRDN_CASES)))
def test_upfirdn2d_forward_matches_reference(cpu_ops, case, dtype):
    shape, fspec, up, down, padding, flip, gain = UPFIRDN_CASES[case]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(case), dtype=dtype)
    f = _filter(fspec, dtype)
    want = upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    got = upfirdn2d_compiled(cpu_ops, x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("case", [1, 2, 3, 5, 6, 8, 11, 12, 13, 14, 15])
def test_upfirdn2d_gradcheck_and_gradgradcheck(cpu_ops, case):
    shape, fspec, up, down, padding, flip, gain = UPFIRDN_CASES[case]
    shape = (1, 1, *shape[2:])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(case), dtype=torch.float64, requires_grad=True)
    f = _filter(fspec, torch.float64)

    def fn(x):
        return upfirdn2d_compiled(cpu_ops, x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_upfirdn2d_empty_output_is_a_clear_error(cpu_ops):
    with pytest.raises(ValueError, match="leave no output"):
        upfirdn2d_compiled(cpu_ops, torch.zeros(1, 1, 4, 4), setup_filter([1, 3, 3, 1]), padding=-3)


# ---- dispatch: choice, fallback, networks ------------------------------------------------------


def test_networks_agree_compiled_vs_reference(cpu_ops, monkeypatch, tiny_G, tiny_D):
    G, D = tiny_G, tiny_D  # conftest: seeded, with perturbed biases and noise strengths
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    outputs = {}
    for choice in ("reference", "compiled"):
        monkeypatch.setenv("FEWSHOT_OPS", choice)
        img = G(z, None, noise_mode="const").detach().requires_grad_()
        logits = D(img, None)
        (grad,) = torch.autograd.grad(logits.sum(), img, create_graph=True)  # R1 needs double backward
        r1 = grad.square().sum()
        r1.backward()
        outputs[choice] = (img.detach(), logits.detach(), grad.detach(), img.grad)
    # Tolerance: float32, differences come from summation order inside the fused kernels.
    for want, got in zip(outputs["reference"], outputs["compiled"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


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
    for expected in ("torch", "nvcc", "ninja", "bias_act", "upfirdn2d", "compiled", "cache"):
        assert expected in result.output


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
