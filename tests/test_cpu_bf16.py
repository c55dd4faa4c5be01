"""``cpu_bf16``: the direct convolutions of G's and D's ``num_fp16_res`` blocks on bfloat16 operands on the CPU
(fewshot.nets.precision, fewshot.cuda.resample.direct_convs_in).

These tests run on any CPU: where oneDNN has no native bfloat16 kernels it emulates them (slowly, which tiny
networks do not notice), and the training tests stand in for the capability check.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import make_tiny_D, make_tiny_G, straight_and_resumed

from fewshot.config import config_from_dict, resolve_config, resumed_config
from fewshot.cuda import conv2d_resample, direct_convs_in, setup_filter, upfirdn2d
from fewshot.errors import FewshotError
from fewshot.nets import precision
from fewshot.nets.precision import block_dtype, cpu_conv_dtype, native_bf16, set_cpu_half

# bfloat16 keeps 8 significant bits: one rounding is within 2^-9 (0.2%) of the value. A tiny network rounds
# the operands of a handful of convolutions on the way to its output, so the image (or logit) differs from
# float32 by well under 1% of its norm; 5% leaves room for the unlucky draw, while a block computing the wrong thing is off by
# its whole magnitude. A difference below 1e-4 would mean bfloat16 never ran (float32 alone agrees to 1e-6).
BF16_REL_BOUND = 0.05
BF16_MUST_DIFFER = 1e-4
# D's gradient with respect to its input (R1's) is a sum over every path back to a pixel whose terms largely
# cancel: its norm is a fraction of its terms', so the same roundings are a larger share of it (6% measured on
# the tiny D below, against ~0.5% for its logits).
BF16_GRAD_REL_BOUND = 0.15

TINY_TRAIN = dict(
    data="demo", resolution=32, z_dim=32, w_dim=32, map_layers=2, channel_base=256, channel_max=32,
    num_fp16_res=2, conv_clamp=256, batch=4, mbstd_group=2, tick_kimg=0.008, snap=1, keep=10,
    r1_interval=2, pl_interval=2, pl_weight=2.0, gamma=0.5, aug="ada", aug_p=0.3, ada_kimg=0.05,
    sample_grid=(2, 2), device="cpu", max_images=16, seed=3, cpu_bf16=True, metrics=[],
)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


def test_block_dtype_and_the_cpu_convolution_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert block_dtype(True, False, cpu) == torch.float32  # activations on the CPU: float32, as official
    assert block_dtype(True, False, cuda) == torch.float16  # CUDA keeps the official float16
    assert block_dtype(True, True, cuda) == block_dtype(False, False, cuda) == torch.float32
    block = SimpleNamespace(use_fp16=True, cpu_half=torch.bfloat16)
    assert cpu_conv_dtype(block, cpu, False) == torch.bfloat16
    assert cpu_conv_dtype(block, cpu, True) is None  # force_fp32 wins
    assert cpu_conv_dtype(block, cuda, False) is None  # on CUDA the block is float16 already
    assert cpu_conv_dtype(SimpleNamespace(use_fp16=False, cpu_half=torch.bfloat16), cpu, False) is None
    assert cpu_conv_dtype(SimpleNamespace(use_fp16=True, cpu_half=None), cpu, False) is None


@pytest.fixture
def conv_inputs(monkeypatch):
    """The dtypes of the inputs of every torch convolution call, in order."""
    seen: list[torch.dtype] = []
    for name in ("conv2d", "conv_transpose2d"):
        original = getattr(torch.nn.functional, name)

        def wrapped(x, *args, _original=original, **kwargs):
            seen.append(x.dtype)
            return _original(x, *args, **kwargs)
        monkeypatch.setattr(torch.nn.functional, name, wrapped)
    return seen


def test_generator_direct_convolutions_in_bf16_stay_close_to_float32(conv_inputs):
    G = make_tiny_G(0, synthesis_kwargs={"channel_base": 512, "channel_max": 64, "num_fp16_res": 2,
                                         "conv_clamp": 256}).eval()
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = G(z, None, noise_mode="const")
        assert torch.bfloat16 not in conv_inputs
        state = {k: v.clone() for k, v in G.state_dict().items()}
        assert set_cpu_half(G, torch.bfloat16) == 2  # b16 and b32 of the 32 px generator
        conv_inputs.clear()
        got = G(z, None, noise_mode="const")
    # b16's and b32's convolutions took bfloat16 operands; b4's and b8's stayed float32.
    assert torch.bfloat16 in conv_inputs and torch.float32 in conv_inputs
    assert got.dtype == torch.float32
    assert BF16_MUST_DIFFER < _rel(got, want) < BF16_REL_BOUND
    assert all(torch.equal(state[k], v) for k, v in G.state_dict().items())  # a runtime setting only
    assert copy.deepcopy(G).synthesis.b32.cpu_half == torch.bfloat16
    set_cpu_half(G, None)
    with torch.no_grad():
        assert torch.equal(G(z, None, noise_mode="const"), want)


def test_discriminator_bf16_convolutions_and_their_gradients():
    D = make_tiny_D(0, num_fp16_res=2, conv_clamp=256)
    img = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2), requires_grad=True)
    want = D(img, None)
    (want_grad,) = torch.autograd.grad(want.sum(), img)
    assert set_cpu_half(D, torch.bfloat16) == 2
    got = D(img, None)
    (grad,) = torch.autograd.grad(got.sum(), img, create_graph=True)  # R1 differentiates this once more
    assert got.dtype == grad.dtype == torch.float32
    assert BF16_MUST_DIFFER < _rel(got, want) < BF16_REL_BOUND
    assert BF16_MUST_DIFFER < _rel(grad, want_grad) < BF16_GRAD_REL_BOUND
    (second,) = torch.autograd.grad(grad.square().sum(), img)
    assert torch.isfinite(second).all()


def test_only_direct_convolutions_round_their_operands():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 64, 32, 32, generator=gen, requires_grad=True)
    w = torch.randn(64, 64, 3, 3, generator=gen).div(24)
    f = setup_filter([1, 3, 3, 1])
    with direct_convs_in(torch.bfloat16):
        winograd = conv2d_resample(x, w, padding=1)  # big enough for the CPU's float32 Winograd
        strided = conv2d_resample(x, w, f=f, down=2, padding=1)
        small = conv2d_resample(x[:, :, :4, :4], w, padding=1)  # a 4x4 map: the direct convolution
        (grad,) = torch.autograd.grad(strided.sum(), x)
    assert winograd.dtype == strided.dtype == small.dtype == grad.dtype == torch.float32
    assert torch.equal(winograd, conv2d_resample(x, w, padding=1))
    with torch.no_grad():
        padded = upfirdn2d(x, f, padding=[2, 2, 2, 2])
        expected = torch.nn.functional.conv2d(padded.bfloat16(), w.bfloat16(), stride=2).float()
        assert torch.equal(strided, expected)
        expected_small = torch.nn.functional.conv2d(x[:, :, :4, :4].bfloat16(), w.bfloat16(), padding=1).float()
        assert torch.equal(small, expected_small)
    # Outside the context nothing is rounded.
    assert not torch.equal(conv2d_resample(x, w, f=f, down=2, padding=1), strided)


def test_native_bf16_needs_the_instructions_and_an_isa_cap_that_allows_them(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert native_bf16() == (True, "")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    native, why = native_bf16()
    assert not native and "ONEDNN_MAX_CPU_ISA=AVX2" in why
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert native_bf16()[0]
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    native, why = native_bf16()
    assert not native and "AVX512-BF16 or AMX" in why


def test_cpu_bf16_without_native_bf16_is_one_error_before_anything_loads(tmp_path, monkeypatch):
    from fewshot.train.loop import train

    monkeypatch.setattr(precision, "native_bf16", lambda: (False, "this CPU has no bfloat16 dot-product"))
    cfg = resolve_config(None, dict(TINY_TRAIN, data=str(tmp_path / "missing"), outdir=str(tmp_path / "runs")))
    with pytest.raises(FewshotError, match="cpu_bf16 needs native bfloat16, and this CPU has no") as err:
        train(cfg, progress=False, echo=lambda m: None)
    assert "--no-cpu-bf16" in err.value.hint
    assert not (tmp_path / "runs").exists()


def test_a_cpu_bf16_run_trains_resumes_exactly_and_exports_float32(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setattr(precision, "native_bf16", lambda: (True, ""))  # emulated where the CPU lacks it
    straight, resumed = straight_and_resumed(
        lambda name, kimg: resolve_config(None, dict(TINY_TRAIN, outdir=str(tmp_path / "runs"), name=name,
                                                     kimg=kimg)))
    a, b = load_file(str(straight / "final.safetensors")), load_file(str(resumed / "final.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert a[key].dtype != torch.bfloat16, key  # checkpoints hold float32 networks
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert log and all(torch.isfinite(torch.tensor(v)).all() for r in log for k, v in r.items()
                       if k.startswith("loss") and isinstance(v, float))
    # The run differs from the same run in float32: bfloat16 really trained.
    fp32 = straight_and_resumed(lambda name, kimg: resolve_config(None, dict(
        TINY_TRAIN, cpu_bf16=False, outdir=str(tmp_path / "fp32"), name=name, kimg=kimg)))[0]
    c = load_file(str(fp32 / "final.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a if k.startswith("G."))


def test_resume_may_turn_cpu_bf16_on_or_off():
    stored = config_from_dict(dict(TINY_TRAIN, outdir="runs")).to_dict()
    assert resumed_config(stored, {"cpu_bf16": False}).cpu_bf16 is False
    assert resumed_config(stored, {"cpu_bf16": True, "kimg": 1.0}).cpu_bf16 is True
    with pytest.raises(FewshotError, match="num_fp16_res 2 -> 3"):
        resumed_config(stored, {"num_fp16_res": 3})


@pytest.mark.parametrize("native, expected", [
    ((True, ""), "native: train --cpu-bf16 runs the num_fp16_res blocks' direct convolutions in bfloat16"),
    ((False, "this CPU has no bfloat16 dot-product instructions"), "not native (this CPU has no bfloat16"),
])
def test_doctor_says_whether_cpu_bf16_can_run(monkeypatch, native, expected):
    from typer.testing import CliRunner

    from fewshot.cli import app, register_commands

    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    register_commands()
    result = CliRunner().invoke(app, ["doctor", "--no-build"])
    assert result.exit_code == 0, result.output
    (shown,) = [line for line in result.output.splitlines() if line.startswith("bfloat16 [cpu]")]
    assert expected in shown
