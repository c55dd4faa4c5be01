"""Checks that need a CUDA device: the CUDA kernels, the fp16 path, sampling and training on a GPU.

Marked ``gpu`` and skipped where torch sees no CUDA device (CI has none); ``make gpu-check`` runs
them together with the GPU benchmarks on a lent machine. The CPU side of every comparison is the
plain-PyTorch reference in float32 or float64, so a wrong kernel cannot hide behind a second one.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

from fewshot.cuda import build as ops_build
from fewshot.cuda.bias_act_compiled import bias_act_compiled
from fewshot.cuda.bias_act_ref import ACTIVATIONS, bias_act_ref
from fewshot.cuda.upfirdn2d_compiled import upfirdn2d_compiled
from fewshot.cuda.upfirdn2d_ref import setup_filter, upfirdn2d_ref

# cuBLAS reads this when it is first used: deterministic GEMMs for the exact-resume test (set before any test runs).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def cuda_ops():
    state = ops_build.get_state("cuda")
    assert state.module is not None, f"the CUDA ops failed to build:\n{state.reason}"
    return state.module


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 off for the comparisons: float32 on the GPU must agree with float32 on the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double().cpu(), want.double().cpu()
    assert torch.isfinite(got).all()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


# ---- kernels against the references -------------------------------------------------------------


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_bias_act_cuda_float64_gradgrad(cuda_ops, act):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    x = (x + 0.05 * x.sign()).cuda().requires_grad_()
    b = torch.randn(3, generator=gen, dtype=torch.float64).cuda().requires_grad_()
    for clamp in (None, 0.9):
        def fn(x, b, clamp=clamp):
            return bias_act_compiled(cuda_ops, x, b, act=act, alpha=0.3, gain=1.3, clamp=clamp)

        torch.testing.assert_close(fn(x, b), bias_act_ref(x, b, act=act, alpha=0.3, gain=1.3, clamp=clamp))
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bias_act_cuda_large_tensors(cuda_ops, dtype):
    """Sizes of a real layer (more elements than one launch grid row) and both bias dims."""
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(8, 512, 64, 64, generator=gen) * 3).cuda()
    b = torch.randn(512, generator=gen).cuda()
    for act in ACTIVATIONS:
        want = bias_act_ref(x, b, act=act, clamp=256.0)  # float32 reference on the GPU
        got = bias_act_compiled(cuda_ops, x.to(dtype), b.to(dtype), act=act, clamp=256.0)
        assert got.dtype == dtype
        assert _rel_err(got, want) < (1e-6 if dtype == torch.float32 else 2e-3), act
    fc = torch.randn(4096, 512, generator=gen).cuda()
    torch.testing.assert_close(bias_act_compiled(cuda_ops, fc, b, act="lrelu"), bias_act_ref(fc, b, act="lrelu"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_upfirdn2d_cuda_matches_reference(cuda_ops, dtype):
    gen = torch.Generator().manual_seed(5)
    f4 = setup_filter([1, 3, 3, 1], device="cuda")
    f2d = torch.rand(3, 4, generator=gen).cuda()
    cases = [
        ((4, 512, 32, 32), f4, 2, 1, [2, 1, 2, 1], 4),  # the generator's upsampling at 64 px
        ((4, 256, 64, 64), f4, 1, 2, 1, 1),  # the discriminator's downsampling
        ((2, 3, 9, 6), f4, 4, 1, [3, 0, 1, 2], 16),
        ((3, 7, 13, 11), f2d, (1, 2), (2, 1), [-1, 2, 1, -2], 2),
        ((1, 2, 13, 7), setup_filter(list(range(1, 10)), device="cuda"), 2, 2, [-3, 4, 2, -1], 1),
    ]
    for shape, f, up, down, pad, gain in cases:
        x = torch.randn(shape, generator=gen).cuda()
        want = upfirdn2d_ref(x, f, up=up, down=down, padding=pad, gain=gain)
        got = upfirdn2d_compiled(cuda_ops, x.to(dtype), f, up=up, down=down, padding=pad, gain=gain)
        assert got.shape == want.shape and got.dtype == dtype
        assert _rel_err(got, want) < (1e-6 if dtype == torch.float32 else 2e-3), (shape, up, down)


def test_upfirdn2d_cuda_float64_gradgrad(cuda_ops):
    f = setup_filter([1, 3, 3, 1], device="cuda").double()
    for up, down, pad in [(2, 1, [2, 1, 2, 1]), (1, 2, 1), ((2, 1), (1, 2), [0, 1, 2, -1])]:
        x = torch.randn(1, 2, 6, 5, dtype=torch.float64, device="cuda", requires_grad=True)

        def fn(x, up=up, down=down, pad=pad):
            return upfirdn2d_compiled(cuda_ops, x, f, up=up, down=down, padding=pad, gain=2.0)

        torch.testing.assert_close(fn(x), upfirdn2d_ref(x, f, up=up, down=down, padding=pad, gain=2.0))
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


# ---- networks -----------------------------------------------------------------------------------


def _generator(**synthesis):
    from conftest import perturb_

    from fewshot.nets import Generator

    torch.manual_seed(0)
    G = Generator(512, 0, 512, 64, 3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 8192, "channel_max": 256, **synthesis})
    return perturb_(G, 0, scale=0.05).eval().requires_grad_(False)


def test_same_seed_same_image_on_cpu_and_gpu():
    """`fewshot sample` on a GPU gives the CPU's picture for each seed (8-bit values within 1)."""
    from fewshot.generate import generate_images

    G = _generator()
    seeds = list(range(8))
    on_cpu = generate_images(G, seeds, psi=0.7, noise_mode="const", batch_size=4)
    on_gpu = generate_images(G.cuda(), seeds, psi=0.7, noise_mode="const", batch_size=4)
    assert on_gpu.device.type == "cpu" and on_gpu.dtype == torch.uint8
    diff = (on_cpu.int() - on_gpu.int()).abs()
    assert diff.max().item() <= 1, diff.max().item()
    assert (diff > 0).float().mean().item() < 0.01


def test_fp16_layers_stay_close_to_float32():
    """num_fp16_res=4 with conv_clamp 256 (the official GPU setting) against the same net in float32."""
    G = _generator(num_fp16_res=4, conv_clamp=256).cuda()
    z = torch.randn(8, 512, generator=torch.Generator().manual_seed(3)).cuda()
    ws = G.mapping(z, None, truncation_psi=0.7)
    fp16 = G.synthesis(ws, noise_mode="const")
    fp32 = G.synthesis(ws, noise_mode="const", force_fp32=True)
    assert fp16.dtype == torch.float32 and torch.isfinite(fp16).all()
    assert _rel_err(fp16, fp32) < 2e-2


def test_discriminator_r1_compiled_matches_reference_on_gpu(monkeypatch):
    """Forward, input gradient and R1's gradient of a gradient through both op implementations."""
    from conftest import perturb_

    from fewshot.nets import Discriminator

    torch.manual_seed(1)
    D = perturb_(Discriminator(0, 64, 3, channel_base=8192, channel_max=256), 1, scale=0.05).cuda()
    img0 = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(4)).cuda()
    results = {}
    for choice in ("reference", "compiled"):
        monkeypatch.setenv("FEWSHOT_OPS", choice)
        D.zero_grad(set_to_none=True)
        img = img0.clone().requires_grad_()
        logits = D(img, None)
        (grad,) = torch.autograd.grad(logits.sum(), img, create_graph=True)
        grad.square().sum().backward()
        # R1 alone leaves the last layer's bias without a gradient: compare those as zeros.
        param_grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in D.parameters()]
        results[choice] = [logits.detach(), grad.detach(), *param_grads]
    for want, got in zip(results["reference"], results["compiled"], strict=True):
        if want.abs().max() > 0:
            assert _rel_err(got, want) < 1e-3  # float32 second-order sums in another order
        else:
            assert got.abs().max() == 0


def test_ada_r1_double_backward_on_gpu():
    """R1 through the full ADA pipeline at p=1 on the GPU (torch's own CUDA grid_sample has no double
    backward; fewshot's sampler is gradgradchecked here on the device)."""
    from fewshot.augment import build_augment
    from fewshot.augment.grid_sample import grid_sample_bilinear

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=gen).cuda().requires_grad_()
    theta = torch.eye(2, 3, dtype=torch.float64).expand(2, 2, 3) + 0.3 * torch.randn(2, 2, 3, dtype=torch.float64, generator=gen)
    grid = torch.nn.functional.affine_grid(theta, [2, 3, 9, 8], align_corners=False).cuda()
    assert torch.autograd.gradgradcheck(lambda t: grid_sample_bilinear(t, grid), (x,))

    # Deterministic mode: the scatter-add form of S^T, the same sums in the same order on every call.
    from fewshot.augment.grid_sample import _sample_transposed

    v = torch.randn(2, 3, 9, 8, dtype=torch.float32, generator=gen).cuda()
    grid32 = grid.float()
    atomic = _sample_transposed(v, grid32, torch.Size([2, 3, 7, 6]))
    torch.use_deterministic_algorithms(True)
    try:
        once, twice = (_sample_transposed(v, grid32, torch.Size([2, 3, 7, 6])) for _ in range(2))
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(once, twice)
    assert _rel_err(once, atomic) < 1e-6

    aug = build_augment("ada", p=1.0, pipeline="bgcfnc").cuda()
    w = torch.randn(4, 3, 3, 3, device="cuda", requires_grad=True)
    images = (torch.rand(4, 3, 32, 32, device="cuda") * 2 - 1).requires_grad_()
    score = torch.nn.functional.softplus(torch.nn.functional.conv2d(aug(images), w)).sum()
    (grad,) = torch.autograd.grad(score, images, create_graph=True)
    grad.square().sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


# ---- the commands on a GPU ------------------------------------------------------------------------


def _demo_folder(folder: Path, count: int = 12) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for i in range(count):
        pixels = (torch.rand(40, 40, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
    return folder


def test_train_on_gpu_with_fp16_resumes_and_samples(tmp_path, monkeypatch):
    """Two ticks with ADA and fp16 layers on the GPU; resume continues the counters and p."""
    from typer.testing import CliRunner

    from fewshot.cli import app, register_commands

    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    register_commands()
    data = _demo_folder(tmp_path / "data")
    common = [
        "--preset", "demo", "--device", "cuda", "--outdir", str(tmp_path / "runs"), "--name", "gpu",
        "--set", "resolution=32", "--set", "num_fp16_res=2", "--set", "conv_clamp=256",
        "--set", "tick_kimg=0.032", "--set", "snap=1", "--aug-p", "0.5",  # p > 0: the geometry runs under R1
    ]
    runner = CliRunner()
    first = runner.invoke(app, ["train", str(data), "--kimg", "0.032", *common])
    assert first.exit_code == 0, first.output
    run = next((tmp_path / "runs").glob("*-gpu"))
    second = runner.invoke(app, ["train", "--kimg", "0.064", "--resume", str(run), "--device", "cuda"])
    assert second.exit_code == 0, second.output
    assert "up to float rounding" in second.output and "--deterministic" in second.output
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [round(r["kimg"], 3) for r in log] == [0.032, 0.064]
    assert all(torch.isfinite(torch.tensor(r["loss_G"])) for r in log if "loss_G" in r)
    sample = runner.invoke(app, ["sample", str(run), "--seeds", "0-3", "--device", "cuda", "--outdir", str(tmp_path / "s")])
    assert sample.exit_code == 0, sample.output
    assert len(list((tmp_path / "s").glob("seed*.png"))) == 4


def test_reg_dgm_energy_on_gpu_equals_cpu(tmp_path):
    import torchvision

    from fewshot.regularizers import build_regularizer

    weights = tmp_path / "resnet18-random.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    reals = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    fakes = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    energies, grads = [], []
    for device in ("cpu", "cuda"):
        reg = build_regularizer("reg-dgm", model="resnet18", lam=1.0, estimator="mean", real_images=reals,
                                weights_path=weights, mirror=True, device=device)
        assert reg.upsample_in_extractor  # the fused x8 stem, forward and input gradient, on both devices
        x = fakes.to(device).requires_grad_(True)
        loss = reg.generator_loss(x, None)
        grads.append(torch.autograd.grad(loss, x)[0].cpu())
        energies.append(loss.detach().cpu())
    assert _rel_err(energies[1], energies[0]) < 1e-4
    assert torch.nn.functional.cosine_similarity(grads[0].flatten(), grads[1].flatten(), dim=0) > 0.999


def test_non_fused_inference_on_gpu_follows_weight_changes():
    """The kept demodulation sums (fewshot.cuda.derived) on CUDA tensors: the non-fused path agrees with the
    fused one, and after an in-place weight change it equals a fresh copy's output bit for bit."""
    G = _generator().cuda()
    z = torch.randn(6, 512, generator=torch.Generator().manual_seed(8)).cuda()
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=0.7)
        fused = G.synthesis(ws, noise_mode="const")
        non_fused = G.synthesis(ws, noise_mode="const", fused_modconv=False)
        assert _rel_err(non_fused, fused) < 1e-5
        for param in G.synthesis.parameters():
            param.mul_(1.02)
        after = G.synthesis(ws, noise_mode="const", fused_modconv=False)
        fresh = copy.deepcopy(G).synthesis(ws, noise_mode="const", fused_modconv=False)
    # cuDNN may pick another kernel for the copy's differently aligned tensors: equal up to rounding. A stale
    # demodulation sum would be 2% off (the weights are 1.02x, the kept sum would not be).
    assert _rel_err(after, fresh) < 1e-6
    assert _rel_err(after, non_fused) > 1e-3


TINY_RUN = dict(
    data="demo", resolution=32, z_dim=32, w_dim=32, map_layers=2, channel_base=256, channel_max=32,
    num_fp16_res=0, conv_clamp=None, batch=4, mbstd_group=2, tick_kimg=0.008, snap=1, keep=10,
    r1_interval=2, pl_interval=2, pl_weight=2.0, gamma=0.5, ada_kimg=0.05, sample_grid=(2, 2),
    device="cuda", max_images=16, seed=3, deterministic=True,
)


@pytest.mark.parametrize("aug, aug_p", [("none", 0.0), ("ada", 0.3)])
def test_resume_is_exact_on_gpu_when_deterministic(tmp_path, aug, aug_p):
    """`--deterministic` on a GPU: two ticks straight equal one tick + resume + one tick, bit for bit."""
    from conftest import straight_and_resumed

    from fewshot.checkpoint import load_bundle
    from fewshot.config import resolve_config

    def cfg(name: str, kimg: float):
        return resolve_config(None, dict(TINY_RUN, aug=aug, aug_p=aug_p, outdir=str(tmp_path / "runs"), name=name,
                                         kimg=kimg))

    straight, resumed = straight_and_resumed(cfg)
    a = load_bundle(straight / "final.safetensors", with_state=True)
    b = load_bundle(resumed / "final.safetensors", with_state=True)
    differing = {}
    for name in ("G", "G_ema", "D"):
        theirs = b.networks[name].state_dict()
        for key, value in a.networks[name].state_dict().items():
            if not torch.equal(value, theirs[key]):
                differing[f"{name}.{key}"] = (value.double() - theirs[key].double()).abs().max().item()
    assert not differing, f"{len(differing)} tensors differ, largest: {max(differing.items(), key=lambda kv: kv[1])}"


def test_frozen_inception_and_metrics_on_gpu_equal_cpu(tmp_path, monkeypatch):
    """The FID Inception (BatchNorms folded; Winograd on the CPU, cuDNN on the GPU) gives the CPU's features on
    the GPU, and `compute_metrics(device="cuda")` gives the CPU's FID of the same images."""
    from test_metrics import _random_inception_state

    from fewshot.extractors import load_extractor
    from fewshot.extractors.inception import INCEPTION
    from fewshot.metrics import compute_metrics

    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(_random_inception_state(), weights)
    registry = tmp_path / "weights.toml"  # an entry without the published hash accepts random weights
    registry.write_text(f'[inception-v3-fid]\nfilename = "{weights.name}"\nurl = "http://127.0.0.1:9/x.pth"\n')
    monkeypatch.setenv("FEWSHOT_WEIGHTS_REGISTRY", str(registry))
    images = torch.randint(0, 256, (6, 3, 64, 64), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    on_cpu = load_extractor(INCEPTION, weights, "cpu", reuse=False)
    on_gpu = load_extractor(INCEPTION, weights, "cuda", reuse=False)
    want, got = on_cpu(images), on_gpu(images.cuda())
    for key in ("pool", "logits"):
        assert _rel_err(got[key], want[key]) < 1e-4, key

    # The metric on the GPU is the formula on the same fakes' features. (Its fakes are not the CPU's: z is drawn
    # on the CPU, but the per-layer noise of noise_mode='random', as the official metrics, by the device's RNG.)
    from fewshot.metrics import fid_from_features, generate_fakes

    G = _generator().cuda()
    reals = torch.randint(0, 256, (24, 3, 64, 64), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    result = compute_metrics(G, reals, metrics=("fid",), n_fake=24, batch_size=8, device="cuda", use_cache=False,
                             progress=False, psi=0.7, extractors={INCEPTION: on_gpu})
    fakes = torch.cat(list(generate_fakes(G, 24, 8, 0.7, 0, torch.device("cuda"))))
    assert result["fid"] == pytest.approx(fid_from_features(on_cpu(reals)["pool"], on_cpu(fakes)["pool"]), rel=1e-3)


def _base_bundle(path: Path) -> Path:
    from conftest import make_tiny_D, make_tiny_G

    from fewshot.checkpoint import save_bundle

    G = make_tiny_G(0).eval()
    return save_bundle(path, {"G": G, "G_ema": copy.deepcopy(G), "D": make_tiny_D(0)})


def _cli(args: list[str]):
    from typer.testing import CliRunner

    from fewshot.cli import app, register_commands

    register_commands()
    return CliRunner().invoke(app, args)


SMALL_RUN = ["--set", "batch=4", "--set", "mbstd_group=2", "--set", "tick_kimg=0.008", "--set", "snap=1",
             "--set", "sample_grid=2,2", "--device", "cuda"]


def test_reg_adafm_trains_from_a_base_on_gpu_and_samples(tmp_path, monkeypatch):
    """The preset no published code offers, on a GPU: AdaFM general-part transfer + Reg-DGM (ResNet-18 from a
    local file in torchvision's format) + ADA, two ticks, resumed, then sampled."""
    import torchvision

    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    torch.manual_seed(0)
    resnet = tmp_path / "resnet18-random.pth"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    base = _base_bundle(tmp_path / "base.safetensors")
    data = _demo_folder(tmp_path / "data")
    runs = tmp_path / "runs"
    common = ["--preset", "reg-adafm", "--base", str(base), "--reg-weights", str(resnet), "--reg-lambda", "0.5",
              "--outdir", str(runs), "--name", "adafm", *SMALL_RUN]
    first = _cli(["train", str(data), "--kimg", "0.008", *common])
    assert first.exit_code == 0, first.output
    run = next(runs.glob("*-adafm"))
    second = _cli(["train", str(data), "--kimg", "0.016", "--resume", str(run), "--device", "cuda"])
    assert second.exit_code == 0, second.output
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [round(r["kimg"], 3) for r in log] == [0.008, 0.016]
    assert all(r["loss_reg"] > 0 for r in log)
    sample = _cli(["sample", str(run), "--seeds", "0-3", "--device", "cuda", "--outdir", str(tmp_path / "s")])
    assert sample.exit_code == 0, sample.output
    assert len(list((tmp_path / "s").glob("seed*.png"))) == 4


def test_disp_trains_on_gpu_and_samples(tmp_path, monkeypatch):
    """DISP on a GPU: the prior bank (a toy extractor registered here), the conditioned G and the projection D."""
    from tick_parity import TOY_EXTRACTOR, register_toy_extractor

    register_toy_extractor()
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    base = _base_bundle(tmp_path / "base.safetensors")
    data = _demo_folder(tmp_path / "data")
    runs = tmp_path / "runs"
    result = _cli(["train", str(data), "--preset", "disp", "--base", str(base), "--set", f"disp_extractor={TOY_EXTRACTOR}",
                   "--kimg", "0.016", "--outdir", str(runs), "--name", "disp", *SMALL_RUN])
    assert result.exit_code == 0, result.output
    run = next(runs.glob("*-disp"))
    assert (run / "prior_bank.safetensors").is_file()
    sample = _cli(["sample", str(run), "--seeds", "0-3", "--device", "cuda", "--outdir", str(tmp_path / "s")])
    assert sample.exit_code == 0, sample.output
    assert len(list((tmp_path / "s").glob("seed*.png"))) == 4


def test_stylegan3_on_gpu_with_fp16_matches_cpu_float32():
    """A StyleGAN3-T and -R generator on CUDA: fp32 gives the CPU's picture (8-bit values within 1, also under
    --translate/--rotate), and its num_fp16_res=4 layers (the official default) stay close to float32."""
    from test_stylegan3 import TINY_R, TINY_T, make_tiny

    from fewshot.equivariance import transformed_input
    from fewshot.generate import generate_images

    for kwargs in (TINY_T, TINY_R):
        G = make_tiny(dict(kwargs, num_fp16_res=4))
        seeds = list(range(4))
        with transformed_input(G, (0.2, -0.1), 20.0):
            on_cpu = generate_images(G, seeds)
        G = G.cuda()
        with transformed_input(G, (0.2, -0.1), 20.0):
            on_gpu = generate_images(G, seeds)
        assert (on_cpu.int() - on_gpu.int()).abs().max().item() <= 1
        ws = G.mapping(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(3)).cuda(), None)
        with torch.no_grad():
            fp16 = G.synthesis(ws)
            fp32 = G.synthesis(ws, force_fp32=True)
        assert fp16.dtype == torch.float32 and torch.isfinite(fp16).all()
        assert _rel_err(fp16, fp32) < 2e-2
