"""Training a StyleGAN3 with the official StyleGAN3 semantics: the family follows the base, ``arch`` picks it from
scratch; no path length, no style mixing, G's running averages updated on Dmain's fakes only, the D-input blur,
magnitude_ema_beta from the batch; exact resume; the methods on a tiny StyleGAN3 (16 px, 3 layers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fewshot.archs import architecture, architecture_of
from fewshot.checkpoint import save_bundle
from fewshot.config import derive_hyper, resolve_config
from fewshot.errors import FewshotError
from fewshot.nets import Discriminator, build_network
from fewshot.train.loop import train
from fewshot.train.loss import LossWeights, StyleGAN2Loss, blur_images, blur_sigma
from fewshot.transfer import build_transfer

G_KWARGS = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
                channel_base=64, channel_max=16, num_fp16_res=0, conv_clamp=None, num_layers=3)
D_KWARGS = dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=16, num_fp16_res=0,
                conv_clamp=None)
TINY = dict(data="demo", resolution=16, z_dim=16, w_dim=16, map_layers=2, channel_base=64, channel_max=16,
            num_fp16_res=0, conv_clamp=None, batch=4, mbstd_group=2, tick_kimg=0.004, snap=1, keep=10,
            r1_interval=2, gamma=0.5, aug="ada", aug_p=0.3, ada_kimg=0.05, sample_grid=(2, 2), device="cpu",
            max_images=8, seed=3, synthesis_layers=3, kimg=0.004)


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()  # 2 shared cores: threads on tiny tensors only wait for each other
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_nets(seed: int = 0, **g_overrides):
    torch.manual_seed(seed)
    G = build_network("StyleGAN3Generator", {**G_KWARGS, **g_overrides})
    D = Discriminator(**D_KWARGS)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # off the initial values, as a trained network's (w_avg, magnitude EMAs, biases)
        for net in (G, D):
            for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
                if tensor.is_floating_point() and not name.endswith(("filter", "transform")):
                    tensor.add_(torch.randn(tensor.shape, generator=gen).abs() * 0.05)
    return G, D


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> str:
    G, D = tiny_nets(7)
    path = tmp_path_factory.mktemp("base") / "sg3.safetensors"
    save_bundle(path, {"G": G, "G_ema": G, "D": D})
    return str(path)


def cfg_of(tmp_path: Path, **extra):
    return resolve_config(None, {**TINY, "outdir": str(tmp_path / "runs"), "name": "t", **extra})


def run(cfg, **kwargs) -> Path:
    return train(cfg, progress=False, echo=lambda m: None, plan=False, **kwargs)


# ---- the family's training semantics -----------------------------------------------------------------------------


def test_stylegan3_defaults_are_the_official_ones_and_stylegan2_keeps_its_own():
    r = derive_hyper(resolve_config(None, {"data": "demo", "arch": "stylegan3-r", "batch": 32}), 256, False)
    assert (r.pl_weight, r.style_mixing, r.g_reg_interval) == (0.0, 0.0, None)
    assert (r.lr_g, r.lr_d, r.map_layers, r.ema_kimg, r.ema_rampup) == (0.0025, 0.002, 2, 10.0, 0.05)
    assert (r.blur_init_sigma, r.blur_fade_kimg) == (10.0, 200.0)  # R from scratch: blur fading over 200 kimg
    t = derive_hyper(resolve_config(None, {"data": "demo", "arch": "stylegan3-t", "batch": 32}), 256, False)
    assert t.blur_init_sigma == 0.0  # T: no blur
    tuned = derive_hyper(resolve_config(None, {"data": "demo", "arch": "stylegan3-r", "batch": 32}), 256, True)
    assert tuned.blur_init_sigma == 0.0 and tuned.ema_rampup is None  # official --resume: no blur, no ramp-up
    sg2 = derive_hyper(resolve_config(None, {"data": "demo"}), 256, True)
    assert (sg2.pl_weight, sg2.style_mixing, sg2.blur_init_sigma, sg2.g_reg_interval) == (2.0, 0.9, 0.0, 4)
    mine = derive_hyper(resolve_config(None, {"data": "demo", "arch": "stylegan3-t", "pl_weight": 2,
                                              "style_mixing": 0.5, "blur_init_sigma": 3}), 256, True)
    assert (mine.pl_weight, mine.style_mixing, mine.g_reg_interval) == (2.0, 0.5, 4)  # the config's win
    assert (mine.blur_init_sigma, mine.blur_fade_kimg) == (3.0, mine.batch * 200 / 32)
    with pytest.raises(FewshotError, match="StyleGAN2 hyper-parameter family"):
        derive_hyper(resolve_config(None, {"data": "demo", "arch": "stylegan3-t", "cfg": "paper256"}), 256, True)


def test_blur_sigma_fades_linearly_to_zero():
    weights = LossWeights(r1_gamma=1, pl_weight=0, blur_init_sigma=10, blur_fade_kimg=200)
    assert [blur_sigma(weights, n) for n in (0, 50_000, 100_000, 200_000, 400_000)] == [10, 7.5, 5, 0, 0]
    assert blur_sigma(LossWeights(r1_gamma=1, pl_weight=0, blur_init_sigma=10, blur_fade_kimg=0), 0) == 0


def test_blur_is_the_normalised_gaussian_out_to_three_sigma():
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = 1.5
    taps = torch.arange(-4, 5, dtype=torch.float32).div(sigma).square().neg().exp2()  # floor(3 * 1.5) = 4
    kernel = (taps[:, None] * taps[None, :]) / taps.sum() ** 2
    direct = F.conv2d(F.pad(images, [4, 4, 4, 4]), kernel.expand(3, 1, 9, 9), groups=3)
    # Two 1-D passes of 9 taps vs one 81-tap sum, weights summing to 1: rounding ~ 81 ulp of the values' size.
    assert torch.allclose(blur_images(images, sigma), direct, atol=81 * 2**-23 * images.abs().max(), rtol=0)
    assert blur_images(images, 0.3) is images  # under one tap: no blur


class Recorder(torch.nn.Module):
    """A D that remembers its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.scale = torch.nn.Parameter(torch.ones([]))

    def forward(self, img: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        self.seen.append(img.detach().clone())
        return img.mean([1, 2, 3])[:, None] * self.scale


def test_d_sees_blurred_reals_and_fakes_and_only_dmain_updates_g_running_averages():
    from fewshot.augment import make_augment

    G, _ = tiny_nets(0)
    D = Recorder()
    G.requires_grad_(False)
    augment = make_augment("none", None)
    weights = LossWeights(r1_gamma=1, pl_weight=0, style_mixing=0, blur_init_sigma=2, blur_fade_kimg=1)
    loss = StyleGAN2Loss(G, D, augment, weights, arch=architecture_of(G))
    loss.cur_nimg = 500  # half-way: sigma 1
    reals = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(2))
    averages = {k: v.clone() for k, v in G.named_buffers() if k.endswith(("w_avg", "magnitude_ema"))}

    def moved() -> set[str]:
        return {k for k, v in G.named_buffers() if k in averages and not torch.equal(v, averages[k])}

    loss.accumulate_gradients("Gmain", reals, None, z, None, gain=1)
    assert moved() == set()  # official StyleGAN3: Gmain does not touch w_avg nor the magnitude EMAs
    torch.manual_seed(5)
    loss.accumulate_gradients("Dmain", reals, None, z, None, gain=1)
    assert moved() == set(averages)
    fakes_seen, reals_seen = D.seen[-2], D.seen[-1]
    torch.manual_seed(5)
    G_again, _ = tiny_nets(0)
    with torch.no_grad():
        fakes = G_again.synthesis(G_again.mapping(z, None, update_emas=True), update_emas=True)
    assert torch.equal(reals_seen, blur_images(reals, 1.0)) and not torch.equal(reals_seen, reals)
    assert torch.equal(fakes_seen, blur_images(fakes, 1.0))


def test_r1_leaves_the_tensors_it_does_not_reach_without_a_gradient_as_the_official_stylegan3_loss():
    """stylegan2-ada-pytorch adds real_logits * 0 to R1 (every D tensor gets a gradient, zeros included, and Adam
    still moves it); StyleGAN3's loss does not, so D's output bias gets none and Adam leaves it alone."""
    from fewshot.augment import make_augment

    reals = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    z = torch.randn(2, 16)
    for family, reached in (("stylegan3-t", False), ("stylegan2", True)):
        G, _ = tiny_nets(0)
        D = Discriminator(**D_KWARGS, epilogue_kwargs={"mbstd_group_size": 2})
        loss = StyleGAN2Loss(G, D, make_augment("none", None), LossWeights(r1_gamma=1, pl_weight=0),
                             arch=architecture(family))
        D.requires_grad_(True)
        loss.accumulate_gradients("Dreg", reals, None, z, None, gain=1)
        assert (D.b4.out.bias.grad is not None) == reached, family


# ---- runs ---------------------------------------------------------------------------------------------------


def test_fine_tuning_a_stylegan3_base_resumes_exactly(tmp_path, base_file):
    from safetensors.torch import load_file

    straight = run(cfg_of(tmp_path, base=base_file, kimg=0.008, name="straight"))
    first = run(cfg_of(tmp_path, base=base_file, name="split"))
    resumed = run(cfg_of(tmp_path, base=base_file), resume=str(first), kimg_override=0.008)
    a, b = load_file(str(straight / "final.safetensors")), load_file(str(resumed / "final.safetensors"))
    assert a.keys() == b.keys() and any(".L0_" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    config = (straight / "config.toml").read_text()
    assert 'arch = "stylegan3-t"' in config  # the base decided the family
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert "pl_penalty" not in log[0] and "r1_penalty" in log[0]
    from fewshot.checkpoint import load_bundle

    bundle = load_bundle(straight / "final.safetensors")
    assert bundle.networks["G"].init_kwargs["magnitude_ema_beta"] == 0.5 ** (4 / 20000)  # the run's batch
    snapshot = load_bundle(sorted((straight / "checkpoints").glob("*.safetensors"))[-1], with_state=True)
    assert snapshot.training["hyper"]["g_reg_interval"] is None
    assert snapshot.state_tensors  # optimisers and the rest, as for StyleGAN2


def test_three_phases_and_an_unscaled_g_optimiser(tmp_path, base_file):
    from contextlib import ExitStack

    from fewshot.train.setup import Request, setup

    with ExitStack() as held:
        built = setup(cfg_of(tmp_path, base=base_file), Request(progress=False, plan=False), lambda m: None, held)
        assert [p.name for p in built.phases] == ["Gmain", "Dmain", "Dreg"]  # no Greg: official G_reg_interval None
        group = built.opt_G.param_groups[0]
        assert (group["lr"], group["betas"]) == (0.0025, (0.0, 0.99))
        assert built.opt_D.param_groups[0]["lr"] == pytest.approx(0.002 * 2 / 3)  # D stays lazy (r1_interval 2)


def test_arch_picks_the_family_from_scratch_and_a_base_decides_it(tmp_path, base_file):
    from typer.testing import CliRunner

    from fewshot.cli import app, register_commands

    register_commands()
    result = CliRunner().invoke(app, ["train", "demo", "--arch", "stylegan3-r", "--base", "none", "--dry-run",
                                      "--outdir", str(tmp_path), *[f"--set={k}={v}" for k, v in TINY.items()
                                                                   if k not in ("data", "sample_grid")]])
    assert result.exit_code == 0, result.output
    assert 'arch = "stylegan3-r"' in result.output and "L0_" in result.output
    assert '"blur_init_sigma": 10.0' in result.output  # R from scratch blurs D's inputs
    with pytest.raises(FewshotError, match="arch stylegan2 does not match the base, a stylegan3-t generator"):
        run(cfg_of(tmp_path, base=base_file, arch="stylegan2"))


def test_from_scratch_a_stylegan3_r_trains(tmp_path):
    out = run(cfg_of(tmp_path, arch="stylegan3-r", aug="diffaug", transfer="finetune"))
    from fewshot.checkpoint import load_bundle

    G = load_bundle(out / "final.safetensors").networks["G"]
    assert architecture_of(G).name == "stylegan3-r" and G.init_kwargs["use_radial_filters"]
    assert G.init_kwargs["channel_base"] == 2 * TINY["channel_base"]  # R doubles G's feature maps


# ---- methods on a StyleGAN3 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    {"aug": "ada"}, {"aug": "diffaug"}, {"aug": "apa"}, {"transfer": "freezed", "freeze_d": 1},
    {"transfer": "general-part"}, {"transfer": "general-part", "specific": "reinit"}, {"transfer": "adafm"},
], ids=lambda e: "-".join(map(str, e.values())))
def test_each_method_trains_one_tick_on_a_stylegan3_base(tmp_path, base_file, extra):
    out = run(cfg_of(tmp_path, base=base_file, **extra))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(abs(v) < 1e6 for v in (log[0]["loss_G"], log[0]["loss_D"]))


def test_reg_dgm_trains_on_a_stylegan3_base(tmp_path, base_file):
    from fewshot.extractors import ExtractorSpec, register_extractor

    def toy(weights_file):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten())

    register_extractor(ExtractorSpec("toy-sg3", toy, feature_dim=4, min_input_size=16, offers=("reg-dgm",)),
                       replace=True)
    out = run(cfg_of(tmp_path, base=base_file, **{"regularizers.reg-dgm.weight": 1.0,
                                                  "regularizers.reg-dgm.model": "toy-sg3"}))
    log = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert log["loss_reg"] > 0


def test_general_part_freezes_the_layers_nearest_the_image():
    G, D = tiny_nets(0)
    units = architecture("stylegan3-t").units(G)
    names = G.synthesis.layer_names  # L0, L1, L2 and ToRGB L3
    assert [u.modules for u in units] == [(f"synthesis.{names[0]}",), (f"synthesis.{names[1]}",),
                                          (f"synthesis.{names[2]}", f"synthesis.{names[3]}")]
    transfer = build_transfer("general-part", general="2,1")
    transfer.apply(G, D)
    trainable = transfer.trainable_names(G)
    assert not any(n.startswith((f"synthesis.{names[1]}", f"synthesis.{names[2]}", f"synthesis.{names[3]}"))
                   for n in trainable)
    assert any(n.startswith(f"synthesis.{names[0]}") for n in trainable) and "synthesis.input.affine.weight" in trainable
    assert "b16.conv0.weight" not in transfer.trainable_names(D)
    with pytest.raises(FewshotError, match="3 synthesis layers"):
        build_transfer("general-part", general="4,1").apply(tiny_nets(0)[0], None)
    G2, _ = tiny_nets(0)
    default = build_transfer("general-part")
    default.apply(G2, None)
    assert default.general_g == 1  # no layer of a 16 px network has a band above 16 px: at least one is general
    G256 = build_network("StyleGAN3Generator", {**G_KWARGS, "img_resolution": 256, "num_layers": 14,
                                                "channel_base": 64})
    frozen = build_transfer("general-part").frozen_g_blocks(G256)  # by default, as StyleGAN2's b32..b256
    assert [name.split("_")[0] for name in frozen] == ["synthesis.L13", "synthesis.L14", *[
        f"synthesis.L{i}" for i in range(12, 4, -1)]]


def test_adafm_on_stylegan3_modulates_the_frozen_layers_and_exports_plain_weights():
    G, D = tiny_nets(0)
    transfer = build_transfer("adafm", general="1,1")
    transfer.apply(G, D)
    names = G.synthesis.layer_names
    assert transfer.modulated_layers(G) == [f"synthesis.{names[2]}", f"synthesis.{names[3]}"]
    layer = getattr(G.synthesis, names[2])
    with torch.no_grad():
        layer.adafm_gamma.mul_(1.3)
        layer.adafm_beta.add_(0.01)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    plain = transfer.export_generator(G)
    assert not any("adafm" in k for k in plain.state_dict())
    G.eval()
    plain.eval()
    with torch.no_grad():
        a, b = G(z, None, noise_mode="const"), plain(z, None, noise_mode="const")
    # The same weights, folded once or per call: equal up to the rounding of one multiply-add per weight.
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    out = G(z, None).sum()
    out.backward()
    assert layer.adafm_gamma.grad is not None and layer.adafm_gamma.grad.abs().sum() > 0


def test_cdc_refuses_a_stylegan3_in_one_line(tmp_path, base_file):
    with pytest.raises(FewshotError, match="cdc compares the features of StyleGAN2 synthesis blocks"):
        run(cfg_of(tmp_path, base=base_file, **{"regularizers.cdc.weight": 1.0}))


def test_disp_conditions_a_stylegan3_base(tmp_path, base_file):
    from tick_parity import TOY_EXTRACTOR, register_toy_extractor

    register_toy_extractor()
    disp = {"loss": "hinge", "aug": "none", "disp.enabled": True, "disp.extractor": TOY_EXTRACTOR}
    out = run(cfg_of(tmp_path, base=base_file, **disp))
    from fewshot.checkpoint import load_bundle

    G = load_bundle(out / "final.safetensors").networks["G"]
    assert type(G).__name__ == "StyleGAN3Generator" and G.c_dim == 16  # the toy priors' 16 features


def test_an_official_stylegan3_r_pickle_fine_tunes_as_a_stylegan3_r(tmp_path):
    from official_format import make_official_pickle

    G, D = tiny_nets(4, conv_kernel=1, use_radial_filters=True, channel_base=128, channel_max=32)
    src = make_official_pickle(tmp_path / "sg3r.pkl", G=G, D=D, G_ema=G, snapshot=False)
    out = run(cfg_of(tmp_path, base=str(src)))
    config = (out / "config.toml").read_text()
    assert 'arch = "stylegan3-r"' in config and "channel_base = 64" in config  # R's doubled G read back as cbase
    log = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert "pl_penalty" not in log


def test_ewc_trains_on_a_stylegan3_base(tmp_path, base_file):
    ewc = {"regularizers.ewc.weight": 1e3, "regularizers.ewc.fisher_samples": 4, "regularizers.ewc.fisher_batch": 2}
    out = run(cfg_of(tmp_path, base=base_file, kimg=0.008, **ewc))
    ticks = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert ticks[0]["loss_reg"] == 0 < ticks[1]["loss_reg"]  # at the source, then G has moved off it


def test_arch_with_a_presets_default_base_is_one_line_before_any_fetch(tmp_path, monkeypatch, capsys):
    # Offline, the default preset's StyleGAN2 base cannot be fetched: the refusal must come before the fetch.
    from fewshot.cli import main
    from fewshot.train import setup as setup_module

    def no_fetch(ref):
        raise AssertionError(f"fetched {ref}")

    monkeypatch.setattr(setup_module, "load_base", no_fetch)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "demo", "--arch", "stylegan3-t", "--resolution", "32", "--outdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code not in (0, None)
    assert "error: arch stylegan3-t picks the network family from scratch" in err
    assert "--base none" in err and "Traceback" not in err
