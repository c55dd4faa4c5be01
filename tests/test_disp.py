"""DISP: prior bank, mixup / GMM priors, prior-conditioned G, projection D, training, offline sampling."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from float32_bounds import assert_network_close, fan_ins
from typer.testing import CliRunner

from fewshot.checkpoint import load_bundle, save_bundle
from fewshot.data import demo_images, sample_batch
from fewshot.disp.bank import BANK_STATE_KEY, PriorBank, build_prior_bank, normalize_features, read_bundle_bank
from fewshot.disp.nets import ProjectionDiscriminator, condition_generator, projection_discriminator
from fewshot.disp.priors import fit_gmm, mixup, prior_source
from fewshot.errors import FewshotError
from fewshot.extractors import ExtractorSpec, Preprocess, register_extractor
from fewshot.nets import Discriminator, Generator, build_network
from fewshot.train.loss import discriminator_adv_losses, generator_adv_loss

REPO = Path(__file__).resolve().parents[1]
SKETCHES = REPO.parent / "shared" / "data" / "sketches-10"
TOY = "disp-toy16"
TOY_DIM = 16
G_KW = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3, mapping_kwargs={"num_layers": 2},
            synthesis_kwargs={"channel_base": 512, "channel_max": 64})
D_KW = dict(c_dim=0, img_resolution=32, img_channels=3, channel_base=512, channel_max=64)


# The toy extractor's sums, for float32_bounds: the /255, the 8 x 8-pixel average pool, the 48-term projection.
TOY_EXTRACTOR_FAN_INS = [1, 8 * 8, 48]


def _load_toy(weights_path, device):  # noqa: ANN001 - the toy's features, computed directly (a reference)
    """A tiny frozen 'extractor': 4x4 average colours through a fixed random projection (no weights)."""
    proj = torch.randn(48, TOY_DIM, generator=torch.Generator().manual_seed(7))

    def features(images: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)
        return x @ proj

    return features


class _Toy(torch.nn.Module):
    """The same toy as a registered network."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("proj", torch.randn(48, TOY_DIM, generator=torch.Generator().manual_seed(7)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: the images in [0, 1] (Preprocess() below)
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) @ self.proj


register_extractor(ExtractorSpec(TOY, lambda weights_file: _Toy(), feature_dim=TOY_DIM, preprocess=Preprocess(),
                                 offers=("disp",), description="test toy"), replace=True)


def tiny_base(seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    G, D = Generator(**G_KW), Discriminator(**D_KW)
    with torch.no_grad():  # non-trivial biases and noise strengths, as in a trained net
        for net in (G, D):
            for name, p in net.named_parameters():
                if name.endswith("bias") or name.endswith("noise_strength"):
                    p.add_(torch.randn_like(p) * 0.1)
    return G.eval(), D.eval()


def toy_bank(n: int = 6, mirror: bool = True) -> tuple[PriorBank, object]:
    images = demo_images(n=n, resolution=32, seed=1)
    images.mirror = mirror
    return build_prior_bank(images, TOY), images


# ---- networks ----------------------------------------------------------------------------------


def test_projection_discriminator_equals_the_formula():
    _, D = tiny_base()
    PD = projection_discriminator(D, TOY_DIM)
    with torch.no_grad():
        PD.proj.weight.normal_()
    x = torch.randn(4, 3, 32, 32)
    y = torch.randn(4, TOY_DIM)
    # phi(x): the base D's epilogue fc output, captured with a hook; psi(phi) is the base D's output.
    captured = {}
    handle = D.b4.fc.register_forward_hook(lambda mod, inp, out: captured.__setitem__("phi", out))
    base_logits = D(x)
    handle.remove()
    phi = captured["phi"]
    C = phi.shape[1]
    emb = y @ (PD.proj.weight * (1 / math.sqrt(TOY_DIM))).T  # equalized lr: weight * 1/sqrt(fan_in)
    expected = base_logits + (emb * phi).sum(1, keepdim=True) / math.sqrt(C)
    # Float32 rounding through D, the projection's 16-term and the C-term sums (float32_bounds).
    assert_network_close(PD(x, y), expected, fan_ins(D) + [TOY_DIM, C, 1])
    # The projection matters: other priors, other logits.
    assert not torch.allclose(PD(x, y), PD(x, -y))


def test_converted_networks_reproduce_the_unconditional_base():
    G, D = tiny_base()
    CG, PD = condition_generator(G, TOY_DIM, seed=1), projection_discriminator(D, TOY_DIM)
    z, c, x = torch.randn(4, 32), torch.randn(4, TOY_DIM), torch.randn(4, 3, 32, 32)
    # D: the projection starts at zero, so the logits are bit-identical.
    assert torch.equal(PD(x, c), D(x))
    # G: fc0's z columns are rescaled for the new fan-in (a float rounding of ~1e-7 relative remains).
    assert CG.c_dim == TOY_DIM and CG.mapping.fc0.weight.shape[1] == 32 + 32
    assert torch.all(CG.mapping.fc0.weight[:, 32:] == 0)
    # Tolerance: float32 rounding through the mapping, then the synthesis layers too (float32_bounds): the rescaled
    # weights round once more, and the pixel norm over z and c sums 64 terms where the base's sums 32.
    assert_network_close(CG.mapping(z, c), G.mapping(z, None), fan_ins(G.mapping) + [64, 1], what="mapping")
    assert_network_close(CG(z, c, noise_mode="const"), G(z, None, noise_mode="const"), fan_ins(G) + [64, 1], what="G")
    # Every other tensor is the base's, and the new D rebuilds from its JSON kwargs.
    for key, value in G.state_dict().items():
        if key != "mapping.fc0.weight":
            assert torch.equal(CG.state_dict()[key], value), key
    rebuilt = build_network("ProjectionDiscriminator", PD.init_kwargs)
    rebuilt.load_state_dict(PD.state_dict())
    assert isinstance(rebuilt, ProjectionDiscriminator) and torch.equal(rebuilt(x, c), PD(x, c))
    with pytest.raises(FewshotError, match="already conditional"):
        condition_generator(Generator(**{**G_KW, "c_dim": 5}), TOY_DIM)


def test_same_prior_same_image_different_priors_different_images():
    G, _ = tiny_base()
    CG = condition_generator(G, TOY_DIM, seed=1)
    with torch.no_grad():  # a trained DISP G uses its prior columns
        CG.mapping.fc0.weight[:, 32:].normal_(0, 100)
    bank, _ = toy_bank()
    z = torch.randn(1, 32).expand(2, -1)
    same = CG(z, bank.priors[[2, 2]], noise_mode="const")
    assert torch.equal(same[0], same[1])
    different = CG(z, bank.priors[[2, 3]], noise_mode="const")
    assert (different[0] - different[1]).abs().mean() > 1e-3


def test_hinge_and_logistic_losses():
    fake, real = torch.tensor([[-2.0], [0.5]]), torch.tensor([[1.5], [0.2]])
    assert generator_adv_loss(fake, "hinge") == pytest.approx(0.75)
    d_fake, d_real = discriminator_adv_losses(fake, real, "hinge")
    assert d_fake == pytest.approx((0 + 1.5) / 2) and d_real == pytest.approx((0 + 0.8) / 2)
    assert generator_adv_loss(fake, "logistic") == pytest.approx(torch.nn.functional.softplus(-fake).mean().item())


# ---- bank and priors ---------------------------------------------------------------------------


def test_bank_holds_normalised_priors_of_images_and_flips():
    bank, images = toy_bank(n=5, mirror=True)
    assert bank.priors.shape == (10, TOY_DIM) and bank.num_images == 5 and bank.mirrored
    # Float32 rounding of the normalisation (a 16-term norm, a quotient and a product) and of the norm taken here.
    assert_network_close(bank.priors.norm(dim=1), torch.full([10], math.sqrt(TOY_DIM)), [TOY_DIM, 1, 1, TOY_DIM], sides=1)
    flipped = normalize_features(_load_toy(None, "cpu")(images.images.flip(3)))
    assert_network_close(bank.priors[5:], flipped, TOY_EXTRACTOR_FAN_INS + [TOY_DIM, 1, 1])


def test_batches_with_priors_follow_the_data_sampler():
    bank, images = toy_bank(n=5, mirror=True)
    gen_a, gen_b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    reals, priors = bank.sample_batch(images, 32, gen_a)
    assert torch.equal(reals, sample_batch(images, 32, gen_b))  # same RNG use as the plain sampler
    assert torch.equal(gen_a.get_state(), gen_b.get_state())
    # Each prior is the prior of that (possibly flipped) image.
    uint8 = ((reals + 1) * 127.5).round().to(torch.uint8)
    assert_network_close(priors, normalize_features(_load_toy(None, "cpu")(uint8)), TOY_EXTRACTOR_FAN_INS + [TOY_DIM, 1, 1])


def test_mixup_weights_in_unit_interval_and_priors_on_the_segment():
    bank, _ = toy_bank()
    mix = mixup(bank, 500, torch.Generator().manual_seed(0))
    assert torch.all((mix.weights >= 0) & (mix.weights <= 1))
    a, b = bank.priors[mix.first], bank.priors[mix.second]
    # Float32 rounding of the mix (a difference, two products and a sum), then of the 16-term norms here.
    assert_network_close(mix.priors, mix.weights[:, None] * a + (1 - mix.weights[:, None]) * b, [1, 1, 1, 1])
    # On the segment [a, b]: |p - a| + |p - b| = |a - b|.
    assert_network_close((mix.priors - a).norm(dim=1) + (mix.priors - b).norm(dim=1), (a - b).norm(dim=1),
                         [1, 1, 1, 1, 1, TOY_DIM, TOY_DIM, 1])
    # Per-seed priors depend on the seed only.
    source = prior_source(bank, "mixup")
    assert torch.equal(source([5, 9])[1], source([9])[0])


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_gmm_recovers_its_components(covariance):
    gen = torch.Generator().manual_seed(0)
    true_means = torch.tensor([[0.0] * 6, [8.0] * 6, [-8.0, 8.0, -8.0, 8.0, -8.0, 8.0]])
    scales = torch.tensor([0.5, 1.0, 0.7])
    counts = [300, 200, 100]
    x = torch.cat([m + s * torch.randn(n, 6, generator=gen) for m, s, n in zip(true_means, scales, counts, strict=True)])
    gmm = fit_gmm(x, components=3, covariance=covariance, seed=1)
    order = torch.cdist(true_means.double(), gmm.means).argmin(1)
    assert sorted(order.tolist()) == [0, 1, 2]
    assert (gmm.means[order] - true_means.double()).abs().max() < 0.25
    torch.testing.assert_close(gmm.weights[order].float(), torch.tensor([0.5, 1 / 3, 1 / 6]), atol=0.03, rtol=0)
    spread = gmm.variances[order].mean(1).sqrt() if covariance == "diag" else \
        torch.diagonal(gmm.covariances[order], dim1=1, dim2=2).mean(1).sqrt()
    torch.testing.assert_close(spread.float(), scales, atol=0.12, rtol=0)
    drawn = gmm.sample(3000, torch.Generator().manual_seed(2))
    torch.testing.assert_close(drawn.mean(0), x.mean(0), atol=0.4, rtol=0)


def test_bad_prior_requests_fail_clearly():
    bank, _ = toy_bank()
    with pytest.raises(FewshotError, match="--prior-index"):
        prior_source(bank, "bank")
    with pytest.raises(FewshotError, match="out of range"):
        prior_source(bank, "bank", index=99)
    with pytest.raises(FewshotError, match="unknown prior"):
        prior_source(bank, "magic")
    with pytest.raises(FewshotError, match="GMM components"):
        fit_gmm(bank.priors, components=50)


# ---- bundles and the CLI -----------------------------------------------------------------------


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """No weights anywhere and no network: sampling must use only what the bundle holds."""
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    monkeypatch.setenv("FEWSHOT_OPS", "reference")
    monkeypatch.delenv("FEWSHOT_WEIGHTS_VGG16", raising=False)


def disp_bundle(path: Path) -> tuple[Path, PriorBank]:
    bank, _ = toy_bank(n=6, mirror=True)
    bank = PriorBank(bank.priors, "vgg16", bank.data_hash, bank.num_images, True)  # claims VGG: not reachable
    G, D = tiny_base()
    CG, PD = condition_generator(G, TOY_DIM, seed=1), projection_discriminator(D, TOY_DIM)
    with torch.no_grad():
        CG.mapping.fc0.weight[:, 32:].normal_(0, 100)
    save_bundle(path, {"G": CG, "G_ema": CG, "D": PD}, training={"disp": bank.meta()},
                state_tensors={BANK_STATE_KEY: bank.priors})
    return path, bank


def _cli(args: list[str]):
    """The CLI in-process (the toy extractor is registered here); FewshotErrors surface as result.exception."""
    from fewshot.cli import app, register_commands

    register_commands()
    return CliRunner().invoke(app, args)


def test_bundle_with_a_prior_bank_round_trips_and_samples_offline(tmp_path, offline_env):
    path, bank = disp_bundle(tmp_path / "disp.safetensors")
    loaded = read_bundle_bank(path)
    assert torch.equal(loaded.priors, bank.priors) and loaded.meta() == bank.meta()
    full = load_bundle(path, with_state=True)
    assert isinstance(full.networks["D"], ProjectionDiscriminator) and full.networks["G_ema"].c_dim == TOY_DIM
    for extra in (["--prior", "mixup"], ["--prior", "gmm", "--gmm-components", "2"],
                  ["--prior", "bank", "--prior-index", "7"], []):
        out = tmp_path / f"out{len(extra)}{extra[1] if extra else ''}"
        result = _cli(["sample", str(path), "--seeds", "0-3", "--outdir", str(out), "--device", "cpu", *extra])
        assert result.exit_code == 0, result.output
        assert len(list(out.glob("seed*.png"))) == 4
    # Seed by seed: the default prior (mixup up to 1000 images) is the explicit mixup.
    assert (tmp_path / "out0" / "seed0002.png").read_bytes() == (tmp_path / "out2mixup" / "seed0002.png").read_bytes()
    # An image prior needs the extractor's weights: offline and absent -> one clear error.
    img = tmp_path / "edit.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 30, 30)).save(img)
    result = _cli(["sample", str(path), "--seeds", "0", "--outdir", str(tmp_path / "o"), "--prior", str(img)])
    assert isinstance(result.exception, FewshotError) and "vgg16" in str(result.exception)
    # Walks between priors (bank rows) with one fixed latent.
    result = _cli(["interpolate", str(path), "--seeds", "3", "--priors", "0,4,8", "--steps", "3",
                   "--out", str(tmp_path / "walk.png"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = _cli(["interpolate", str(path), "--seeds", "3,4", "--steps", "2", "--space", "z",
                   "--out", str(tmp_path / "zwalk.png"), "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_unconditional_checkpoints_refuse_prior_options(tmp_path):
    G, D = tiny_base()
    path = save_bundle(tmp_path / "plain.safetensors", {"G": G, "D": D})
    result = _cli(["sample", str(path), "--seeds", "0", "--outdir", str(tmp_path / "o"), "--prior", "mixup"])
    assert isinstance(result.exception, FewshotError) and "DISP checkpoint" in str(result.exception)


# ---- training ----------------------------------------------------------------------------------

TINY_RUN = dict(
    resolution=32, z_dim=32, w_dim=32, map_layers=2, channel_base=256, channel_max=32, num_fp16_res=0,
    conv_clamp=None, batch=4, mbstd_group=2, tick_kimg=0.008, snap=1, keep=10, r1_interval=2, pl_interval=2,
    gamma=0.5, sample_grid=(2, 2), device="cpu", seed=3, disp_extractor=TOY, base="none",
)


def test_disp_presets_resolve():
    from fewshot.config import resolve_config

    for name, aug in (("disp", "none"), ("disp-diffaug", "diffaug"), ("disp-ada", "ada")):
        cfg = resolve_config(name, {})
        assert cfg.disp and cfg.loss == "hinge" and cfg.aug == aug and cfg.disp_extractor == "vgg16"
    with pytest.raises(FewshotError, match="bad value for loss"):
        resolve_config("disp", {"loss": "wasserstein"})


@pytest.mark.realdata
@pytest.mark.skipif(not SKETCHES.is_dir(), reason="../shared/data/sketches-10 is absent")
def test_disp_trains_on_real_sketches_resumes_exactly_and_samples_from_an_image(tmp_path):
    from conftest import straight_and_resumed

    from fewshot.config import resolve_config
    from fewshot.disp.sample import conditions_for
    from fewshot.generate import generate_images, load_generator

    def cfg(name: str, kimg: float):
        return resolve_config("disp-diffaug", dict(TINY_RUN, data=str(SKETCHES), outdir=str(tmp_path), name=name,
                                                   kimg=kimg))

    straight, resumed = straight_and_resumed(cfg)
    a = load_bundle(straight / "final.safetensors", with_state=True)
    b = load_bundle(resumed / "final.safetensors", with_state=True)
    for name in ("G", "G_ema", "D"):
        for key, value in a.networks[name].state_dict().items():
            assert torch.equal(value, b.networks[name].state_dict()[key]), f"{name}.{key}"
    bank = read_bundle_bank(straight / "final.safetensors")
    assert bank.num_images == 10 and bank.mirrored and bank.priors.shape == (20, TOY_DIM)
    assert (straight / "prior_bank.safetensors").is_file()
    assert a.training["config"]["loss"] == "hinge"

    # Sample from an image prior: a user picture goes through the run's extractor.
    sketch = tmp_path / "mine.png"
    shutil.copy(sorted(SKETCHES.glob("*.png"))[0], sketch)
    G = load_generator(straight / "final.safetensors")
    conditions = conditions_for(G, bank, [str(sketch)])
    images = generate_images(G, [0, 1], conditions=conditions)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    # The first training image's own prior is its bank row (same resize path as training).
    torch.testing.assert_close(conditions([0])[0], bank.priors[0], rtol=0.05, atol=0.15)


# ---- the default extractor ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """Random VGG-16 weights in torchvision's file format (a torch.save'd state_dict, ~530 MB)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg16-397923af.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_vgg16_bank_is_fc7_of_torchvision_vgg16(tmp_path, monkeypatch, vgg16_file):
    path, model = vgg16_file
    # Random weights do not match the published hash: a registry entry without one accepts them.
    registry = tmp_path / "weights.toml"
    registry.write_text('[vgg16]\nfilename = "vgg16-397923af.pth"\nurl = "http://127.0.0.1:9/vgg.pth"\n')
    monkeypatch.setenv("FEWSHOT_WEIGHTS_REGISTRY", str(registry))
    monkeypatch.setenv("FEWSHOT_WEIGHTS_VGG16", str(path))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    images = demo_images(n=2, resolution=32, seed=5)
    bank = build_prior_bank(images, "vgg16")
    assert bank.priors.shape == (2, 4096) and bank.extractor == "vgg16" and not bank.mirrored
    # By hand: bilinear resize to 224, ImageNet normalisation, conv features, fc6 -> ReLU -> fc7 -> ReLU.
    x = torch.nn.functional.interpolate(images.images.float() / 255, size=(224, 224), mode="bilinear",
                                        align_corners=False)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        fc7 = model.classifier[:5](torch.flatten(model.avgpool(model.features(x)), 1))
    # Float32 rounding through VGG-16's layers (float32_bounds), and the 4096-term normalisation.
    assert_network_close(bank.priors, normalize_features(fc7), fan_ins(model) + [4096, 1, 1])
