"""``cpu_bf16``: the ``num_fp16_res`` blocks of G and D in bfloat16 on the CPU (fewshot.nets.precision).

These tests run on any CPU: where oneDNN has no native bfloat16 kernels it emulates them (slowly, which tiny
networks do not notice), and the training tests stand in for the capability check.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import make_tiny_D, make_tiny_G, straight_and_resumed

from fewshot.config import config_from_dict, resolve_config, resumed_config
from fewshot.cuda import bias_act, conv2d_resample, setup_filter, upfirdn2d
from fewshot.cuda.bias_act_ref import bias_act_ref
from fewshot.errors import FewshotError
from fewshot.nets import precision
from fewshot.nets.precision import block_dtype, native_bf16, set_cpu_half

# bfloat16 keeps 8 significant bits: one rounding is within 2^-9 (0.2%) of the value. A tiny network rounds
# each activation a handful of times on its way to the output, so the image (or logit) differs from float32 by
# about 1% of its norm; 5% leaves room for the unlucky draw, while a block computing the wrong thing is off by
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


def test_block_dtype_follows_device_flag_and_setting():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert block_dtype(True, False, cpu, None) == torch.float32  # the CPU default: float32, as official
    assert block_dtype(True, False, cpu, torch.bfloat16) == torch.bfloat16
    assert block_dtype(True, True, cpu, torch.bfloat16) == torch.float32  # force_fp32 wins
    assert block_dtype(False, False, cpu, torch.bfloat16) == torch.float32  # a block outside num_fp16_res
    assert block_dtype(True, False, cuda, torch.bfloat16) == torch.float16  # CUDA keeps the official float16
    assert block_dtype(False, False, cuda, None) == torch.float32


def _dtypes_seen(net: torch.nn.Module, run) -> dict[str, torch.dtype]:
    seen: dict[str, torch.dtype] = {}

    def record(name: str):
        def hook(module, args, out) -> None:  # returns None: the output stays as it is
            seen.setdefault(name, out.dtype)
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in net.named_modules()
             if name.endswith(("conv0", "conv1"))]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_generator_blocks_in_num_fp16_res_run_bf16_and_stay_close_to_float32():
    G = make_tiny_G(0, synthesis_kwargs={"channel_base": 512, "channel_max": 64, "num_fp16_res": 2,
                                         "conv_clamp": 256}).eval()
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = G(z, None, noise_mode="const")
        state = {k: v.clone() for k, v in G.state_dict().items()}
        assert set_cpu_half(G, torch.bfloat16) == 2  # b16 and b32 of the 32 px generator
        seen = _dtypes_seen(G, lambda: G(z, None, noise_mode="const"))
        got = G(z, None, noise_mode="const")
    assert {name: dtype for name, dtype in seen.items()} == {
        "synthesis.b4.conv1": torch.float32, "synthesis.b8.conv0": torch.float32, "synthesis.b8.conv1": torch.float32,
        "synthesis.b16.conv0": torch.bfloat16, "synthesis.b16.conv1": torch.bfloat16,
        "synthesis.b32.conv0": torch.bfloat16, "synthesis.b32.conv1": torch.bfloat16,
    }
    assert got.dtype == torch.float32
    assert BF16_MUST_DIFFER < _rel(got, want) < BF16_REL_BOUND
    assert all(torch.equal(state[k], v) for k, v in G.state_dict().items())  # a runtime setting only
    assert copy.deepcopy(G).synthesis.b32.cpu_half == torch.bfloat16
    set_cpu_half(G, None)
    with torch.no_grad():
        assert torch.equal(G(z, None, noise_mode="const"), want)


def test_discriminator_bf16_blocks_and_their_gradients():
    D = make_tiny_D(0, num_fp16_res=2, conv_clamp=256)
    img = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2), requires_grad=True)
    want = D(img, None)
    (want_grad,) = torch.autograd.grad(want.sum(), img)
    assert set_cpu_half(D, torch.bfloat16) == 2
    seen = _dtypes_seen(D, lambda: D(img, None))
    assert seen["b32.conv0"] == torch.bfloat16 and seen["b16.conv1"] == torch.bfloat16
    assert seen["b8.conv0"] == torch.float32
    got = D(img, None)
    (grad,) = torch.autograd.grad(got.sum(), img, create_graph=True)  # R1 differentiates this once more
    assert got.dtype == grad.dtype == torch.float32
    assert BF16_MUST_DIFFER < _rel(got, want) < BF16_REL_BOUND
    assert BF16_MUST_DIFFER < _rel(grad, want_grad) < BF16_GRAD_REL_BOUND
    (second,) = torch.autograd.grad(grad.square().sum(), img)
    assert torch.isfinite(second).all()


def test_bf16_ops_are_the_float32_kernels_on_upcast_copies():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 16, 12, 12, generator=gen).bfloat16()
    b = torch.randn(16, generator=gen)
    y = bias_act(x, b.bfloat16(), act="lrelu", gain=2**0.5, clamp=0.5)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, bias_act(x.float(), b.bfloat16().float(), act="lrelu", gain=2**0.5, clamp=0.5).bfloat16())
    # torch's reference in bfloat16 rounds after each step: within a few bfloat16 steps (2^-8 relative) of it.
    ref = bias_act_ref(x, b.bfloat16(), act="lrelu", gain=2**0.5, clamp=0.5)
    assert torch.allclose(y.float(), ref.float(), rtol=2**-6, atol=2**-8)

    f = setup_filter([1, 3, 3, 1])
    up = upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4)
    assert up.dtype == torch.bfloat16
    assert torch.equal(up, upfirdn2d(x.float(), f, up=2, padding=[2, 1, 2, 1], gain=4).bfloat16())

    # A 3x3 convolution big enough for the CPU's Winograd path: the float32 convolution, rounded once.
    x = torch.randn(4, 64, 32, 32, generator=gen).bfloat16().requires_grad_(True)
    w = torch.randn(64, 64, 3, 3, generator=gen).div(24).bfloat16()
    y = conv2d_resample(x, w, padding=1)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, conv2d_resample(x.detach().float(), w.float(), padding=1).bfloat16())
    (grad,) = torch.autograd.grad(y.float().sum(), x)
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad.float()).all()


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
    ((True, ""), "native: train --cpu-bf16 runs the num_fp16_res blocks in bfloat16"),
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
