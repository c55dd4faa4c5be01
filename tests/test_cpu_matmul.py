"""The Winograd GEMMs' AVX-512 kernel (fewshot.cuda.cpu_matmul, cpu_gemm.cpp): torch.bmm, any strides, gradients
of any order, independent of the thread count, and the rule that picks it over MKL.

Tolerances: a k-term float32 dot product computed in any order is within gamma_k * sum |a_i b_i| of the exact one
(Higham, Accuracy and Stability of Numerical Algorithms, 3.1), taken against float64 products of the same float32
inputs: float32 arithmetic, never one CPU's figures.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from float32_bounds import assert_within, gamma

from fewshot.cuda import build as ops_build
from fewshot.cuda import cpu_matmul
from fewshot.errors import FewshotError


@pytest.fixture(scope="module")
def avx512_ops():
    """The compiled CPU module, on a CPU that runs its AVX-512 kernel (skips elsewhere: an AVX2-only CPU)."""
    if shutil.which("c++") is None or shutil.which("ninja") is None:
        pytest.skip("no C++ compiler or ninja: the compiled CPU ops cannot be built here")
    state = ops_build.get_state("cpu")
    assert state.status == "compiled", f"the CPU ops failed to build:\n{state.reason}"
    if not state.module.bmm_avx512_supported():
        pytest.skip("this CPU has no AVX-512: bmm_avx512 cannot run (MKL multiplies here)")
    return state.module


def product_bound(a: torch.Tensor, b: torch.Tensor, extra_roundings: int = 0) -> torch.Tensor:
    """gamma_(k + extra) |a| |b|: the float32 error bound of each entry of a @ b."""
    return gamma(a.shape[-1] + 1 + extra_roundings) * torch.bmm(a.double().abs(), b.double().abs())


def operand(batch: int, rows: int, cols: int, layout: str, seed: int) -> torch.Tensor:
    """A [batch, rows, cols] float32 operand stored row-major, transposed (a .mT view) or strided in every dim."""
    g = torch.Generator().manual_seed(seed)
    if layout == "contiguous":
        return torch.randn(batch, rows, cols, generator=g)
    if layout == "transposed":
        return torch.randn(batch, cols, rows, generator=g).mT
    return torch.randn(2 * batch, rows, 3 * cols, generator=g)[::2, :, ::3]  # no unit stride anywhere


# m, k, n around the kernel's blocks: 12-row and 32-column register tiles, k-blocks of 256, column panels of 512
SHAPES = [(36, 128, 128, 96), (2, 12, 256, 32), (3, 13, 257, 33), (2, 25, 600, 513), (1, 1, 1, 1), (4, 7, 3, 1),
          (2, 30, 1, 70)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layouts", [("contiguous", "contiguous"), ("transposed", "contiguous"),
                                     ("contiguous", "transposed"), ("strided", "strided")])
def test_bmm_avx512_is_bmm_within_float32_rounding(avx512_ops, shape, layouts):
    batch, m, k, n = shape
    a, b = operand(batch, m, k, layouts[0], 1), operand(batch, k, n, layouts[1], 2)
    got = avx512_ops.bmm_avx512(a, b)
    assert got.shape == (batch, m, n) and got.is_contiguous()
    want = torch.bmm(a.double(), b.double())
    assert_within(got, want, product_bound(a, b), f"bmm_avx512 {shape} {layouts}")


def test_bmm_avx512_edge_cases_and_bad_input(avx512_ops):
    a, b = torch.randn(3, 5, 0), torch.randn(3, 0, 7)
    assert torch.equal(avx512_ops.bmm_avx512(a, b), torch.zeros(3, 5, 7))  # k = 0: the empty sum
    assert avx512_ops.bmm_avx512(torch.randn(0, 4, 5), torch.randn(0, 5, 6)).shape == (0, 4, 6)
    with pytest.raises(RuntimeError, match="float32 only"):
        avx512_ops.bmm_avx512(torch.randn(2, 3, 4).double(), torch.randn(2, 4, 5).double())
    with pytest.raises(RuntimeError, match="do not multiply"):
        avx512_ops.bmm_avx512(torch.randn(2, 3, 4), torch.randn(2, 5, 5))


def test_bmm_avx512_does_not_depend_on_the_thread_count(avx512_ops):
    """Each column panel of a batch entry is one thread's, summed in one order: a run resumed with other threads
    multiplies alike."""
    a, b = operand(36, 64, 300, "contiguous", 3), operand(36, 300, 600, "transposed", 4)  # two column panels
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = avx512_ops.bmm_avx512(a, b)
        torch.set_num_threads(max(2, threads))
        many = avx512_ops.bmm_avx512(a, b)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_batched_matmul_gradients_of_every_order(avx512_ops, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CPU_MATMUL", "avx512")
    calls = []
    real = avx512_ops.bmm_avx512
    spy = type("Spy", (), {"bmm_avx512": staticmethod(lambda x, y: calls.append(1) or real(x, y))})()
    monkeypatch.setattr(cpu_matmul, "avx512_module", lambda: spy)
    batch, m, k, n = 4, 20, 40, 36
    a = operand(batch, m, k, "contiguous", 5).requires_grad_()
    b = operand(batch, k, n, "contiguous", 6).requires_grad_()
    g, ca, cb = operand(batch, m, n, "contiguous", 7), operand(batch, m, k, "contiguous", 8), operand(batch, k, n, "contiguous", 9)
    out = cpu_matmul.batched_matmul(a, b)
    assert calls == [1]
    ga, gb = torch.autograd.grad(out, (a, b), g, create_graph=True)
    assert len(calls) == 3  # dA = g b^T and dB = a^T g, both by the kernel
    # The first-order gradients are exactly the kernel's products of the transposed operands.
    assert torch.equal(ga, real(g, b.detach().mT)) and torch.equal(gb, real(a.detach().mT, g))
    # The double backward (R1's shape): L = <dA, ca> + <dB, cb>; dL/dg = ca b + a cb, dL/da = g cb^T, dL/db = ca^T g.
    g = g.clone().requires_grad_()
    ga, gb = torch.autograd.grad(cpu_matmul.batched_matmul(a, b), (a, b), g, create_graph=True)
    dg, da, db = torch.autograd.grad((ga * ca).sum() + (gb * cb).sum(), (g, a, b))
    a64, b64, g64, ca64, cb64 = (t.detach().double() for t in (a, b, g, ca, cb))
    assert_within(dg, torch.bmm(ca64, b64) + torch.bmm(a64, cb64),
                  product_bound(ca, b, 1) + product_bound(a.detach(), cb, 1), "d/dg")
    assert_within(da, torch.bmm(g64, cb64.mT), product_bound(g.detach(), cb.mT), "d/da")
    assert_within(db, torch.bmm(ca64.mT, g64), product_bound(ca.mT, g.detach()), "d/db")


def test_winograd_convolution_through_the_kernel(avx512_ops, monkeypatch):
    from float32_bounds import winograd_conv_bound

    from fewshot.cuda import winograd

    monkeypatch.setenv("FEWSHOT_CPU_MATMUL", "avx512")
    monkeypatch.setattr(winograd, "MIN_CHANNEL_PRODUCT", 16 * 16)
    monkeypatch.setattr(winograd, "MIN_TILES", 8)
    monkeypatch.setattr(winograd, "SMALL_MAP_PIXELS", 0)
    calls = []
    monkeypatch.setattr(cpu_matmul._BatchedMatmulAVX512, "forward",
                        staticmethod(lambda ctx, a, b, module: calls.append(1) or (ctx.save_for_backward(a, b),
                                                                                     module.bmm_avx512(a, b))[1]))
    x, w = torch.randn(2, 16, 12, 12), torch.randn(16, 16, 3, 3) / 12
    got = winograd.conv3x3(x, w)
    assert calls == [1]
    want = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
    assert_within(got, want, winograd_conv_bound(x, w), "Winograd with bmm_avx512")


class _Capability:
    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def __call__(self, capability: str, vendor: str, family: int, isa: str | None = None) -> bool:
        self.monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        self.monkeypatch.setattr(cpu_matmul, "_cpu_vendor_family", lambda: (vendor, family))
        if isa is None:
            self.monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            self.monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        return cpu_matmul.auto_prefers_avx512()[0]


def test_auto_takes_the_kernel_only_where_mkl_runs_narrower_vectors(monkeypatch):
    prefers = _Capability(monkeypatch)
    assert prefers("AVX512", "AuthenticAMD", 26)  # Zen 5: full-width AVX-512, MKL runs AVX2
    assert prefers("AVX512", "AuthenticAMD", 26, "AVX512_CORE_BF16")
    assert not prefers("AVX512", "AuthenticAMD", 26, "AVX2")  # the AVX2 emulation
    assert not prefers("AVX512", "AuthenticAMD", 25)  # Zen 4: AVX-512 on 256-bit units
    assert not prefers("AVX512", "GenuineIntel", 6)  # MKL runs AVX-512 there itself
    assert not prefers("AVX2", "AuthenticAMD", 26)
    assert not prefers("AVX512", "", 0)  # no /proc/cpuinfo


def test_the_environment_overrides_auto_and_a_bad_value_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(cpu_matmul, "auto_prefers_avx512", lambda: (True, "test"))
    monkeypatch.setattr(cpu_matmul, "_compiled_module", lambda: "module")
    monkeypatch.setenv("FEWSHOT_CPU_MATMUL", "mkl")
    assert cpu_matmul.avx512_module() is None
    monkeypatch.setenv("FEWSHOT_CPU_MATMUL", "auto")
    assert cpu_matmul.avx512_module() == "module"
    monkeypatch.setattr(cpu_matmul, "auto_prefers_avx512", lambda: (False, "test"))
    assert cpu_matmul.avx512_module() is None
    monkeypatch.setenv("FEWSHOT_CPU_MATMUL", "avx512")
    assert cpu_matmul.avx512_module() == "module"
    monkeypatch.setenv("FEWSHOT_CPU_MATMUL", "fast")
    with pytest.raises(FewshotError, match="FEWSHOT_CPU_MATMUL must be one of auto, mkl, avx512"):
        cpu_matmul.batched_matmul(torch.randn(1, 2, 2), torch.randn(1, 2, 2))


def test_float64_and_mkl_choice_stay_on_torch(monkeypatch):
    monkeypatch.setattr(cpu_matmul, "avx512_module", lambda: pytest.fail("asked for the kernel"))
    a, b = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    assert torch.equal(cpu_matmul.batched_matmul(a, b), torch.bmm(a, b))
