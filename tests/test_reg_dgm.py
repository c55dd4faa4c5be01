"""Reg-DGM: the energy, its two estimators, the frozen extractor, λ = 0, and weights in the upstream format."""

from __future__ import annotations

import hashlib
import importlib.util

import pytest
import torch
import torch.nn.functional as F
from float32_bounds import U64, assert_network_close, fan_ins, fan_outs
from torch import nn

from fewshot.errors import FewshotError
from fewshot.extractors import ExtractorSpec, build_extractor, extractor_spec, offering, register_extractor
from fewshot.registry import regularizers
from fewshot.regularizers import NullRegularizer, RegDGM, build_regularizer
from fewshot.regularizers.reg_dgm import upsample_factor

TOY = "toy-test"
RES = 16


def make_toy_extractor() -> nn.Module:
    # BatchNorm and Dropout make train/eval mode visible in the output; 6 features.
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 6),
    )
    with torch.no_grad():  # running stats away from the defaults, so train-mode BN would differ
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net


@pytest.fixture(autouse=True)
def one_thread():
    # The CI box has 2 cores shared with other jobs: intra-op threads on tiny tensors only spin and wait.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def toy_spec():
    calls = []

    def build(weights_file):
        calls.append(weights_file)
        return make_toy_extractor()

    register_extractor(ExtractorSpec(TOY, build, feature_dim=6, min_input_size=RES, offers=("reg-dgm",)), replace=True)
    return calls  # every build of the toy extractor, to show when none happens


def real_set(n: int = 24, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Channel-dependent ranges, so the per-channel normalisation matters.
    imgs = torch.randint(0, 256, (n, 3, RES, RES), generator=g)
    imgs[:, 1] = imgs[:, 1] // 2 + 100
    return imgs.to(torch.uint8)


def direct_features(net: nn.Module, images_pm1: torch.Tensor, reals_u8: torch.Tensor) -> torch.Tensor:
    """f((x − mean)/std) with the data-set statistics computed the plain way (official code)."""
    reals = reals_u8.float() / 127.5 - 1
    mean = reals.transpose(0, 1).reshape(3, -1).mean(dim=1).view(1, 3, 1, 1)
    std = reals.transpose(0, 1).reshape(3, -1).std(dim=1).view(1, 3, 1, 1)
    return net.eval()((images_pm1 - mean) / std)


def fakes(n: int = 5, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, RES, RES, generator=g) * 2 - 1


def test_registry_names():
    assert "reg-dgm" in regularizers and isinstance(build_regularizer("none"), NullRegularizer)
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "clip", "clip-vit-b32", "facenet"):
        assert name in offering("reg-dgm")
    assert extractor_spec("resnet18").feature_dim == 1000 and extractor_spec("clip").feature_dim == 2048
    assert extractor_spec("facenet").feature_dim == 8631


def test_mean_estimator_matches_direct_computation(toy_spec):
    reals = real_set()
    reg = build_regularizer("reg-dgm", model=TOY, lam=0.7, estimator="mean", real_images=reals, mirror=True)
    assert isinstance(reg, RegDGM) and not reg.requires_real_batch
    x = fakes()
    net = make_toy_extractor()
    reals_pm1 = reals.float() / 127.5 - 1
    with torch.no_grad():
        f_fake = direct_features(net, x, reals)
        # mirror=True: the data set the loop trains on includes the horizontal flips.
        f_real = direct_features(net, torch.cat([reals_pm1, reals_pm1.flip(3)]), reals)
        expected = ((f_fake[:, None, :] - f_real[None, :, :]) ** 2).mean(dim=2).mean(dim=1)  # E_{x'} (1/d)‖·‖²
        loss = reg.generator_loss(x)
    # Tolerance: float32 rounding (float32_bounds.assert_network_close) of the data set's channel statistics (a sum
    # over 24 images x 16 x 16 pixels on the direct side), the extractor's layers, and the mean over the reals
    # (here 48 with the flips), the 6 features and the 5 fakes; the estimator's moments are float64.
    ks = [24 * RES * RES, *fan_ins(net), 48, 6, 5]
    assert_network_close(loss, 0.7 * expected.mean(), ks, what="loss")
    assert_network_close(reg.feature_mean, f_real.mean(dim=0), ks[:-2], what="feature mean")
    stats = reg.stats()
    assert_network_close(torch.tensor(stats["reg_energy"]), expected.mean(), ks, what="energy")
    assert stats["reg_loss"] == pytest.approx(0.7 * stats["reg_energy"])


def test_paired_estimator_is_the_official_mse(toy_spec):
    reals = real_set()
    reg = build_regularizer("reg-dgm", model=TOY, lam=2.0, estimator="paired", real_images=reals)
    assert reg.requires_real_batch
    x = fakes(4)
    batch_u8 = reals[:4]
    batch = batch_u8.float() / 127.5 - 1
    net = make_toy_extractor()
    # Tolerance: float32 rounding of the channel statistics, the extractor and the mean over 4 pairs x 6 features.
    ks = [24 * RES * RES, *fan_ins(net), 4 * 6]
    with torch.no_grad():
        expected = F.mse_loss(direct_features(net, x, reals), direct_features(net, batch, reals))
        assert_network_close(reg.generator_loss(x, batch), 2.0 * expected, ks)
        # uint8 reals are accepted and mean the same images
        assert_network_close(reg.generator_loss(x, batch_u8), 2.0 * expected, ks)


def test_paired_and_mean_have_same_expectation_and_mean_has_lower_variance(toy_spec):
    reals = real_set(n=32)
    kwargs = dict(model=TOY, lam=1.0, real_images=reals, mirror=False)
    reg_mean = build_regularizer("reg-dgm", estimator="mean", **kwargs)
    reg_paired = build_regularizer("reg-dgm", estimator="paired", **kwargs)
    reals_pm1 = reals.float() / 127.5 - 1
    batch, draws = 4, 2000

    # Exact expectation over the partner: pairing fixed fakes with every real in turn averages to `mean`,
    # value and gradient (the identity E‖f(x) − f(x')‖² = ‖f(x) − μ‖² + tr Σ).
    fixed = fakes(batch, seed=5).requires_grad_(True)
    paired_all = torch.stack([reg_paired.generator_loss(fixed, reals_pm1[[j] * batch]) for j in range(32)]).mean()
    (grad_p,) = torch.autograd.grad(paired_all, fixed)
    loss_m = reg_mean.generator_loss(fixed)
    (grad_m,) = torch.autograd.grad(loss_m, fixed)
    # Tolerance: float32 rounding through the extractor (and back, for the gradients) and the means over the 32
    # partners, the 4 fakes and the 6 features (float32_bounds.assert_network_close).
    ks = [*fan_ins(reg_mean.extractor), 32, 4, 6]
    assert_network_close(paired_all, loss_m, ks, what="loss")
    assert_network_close(grad_p, grad_m, ks + fan_outs(reg_mean.extractor), what="gradient")

    # Monte Carlo over a training run: fresh fakes and random real batches each step (features batched).
    g = torch.Generator().manual_seed(3)
    x = torch.rand(draws * batch, 3, RES, RES, generator=g) * 2 - 1
    idx = torch.randint(0, reals.shape[0], (draws * batch,), generator=g)
    with torch.no_grad():
        paired_values = reg_paired.energy(x, reals_pm1[idx]).view(draws, batch).mean(dim=1)
        mean_values = reg_mean.energy(x).view(draws, batch).mean(dim=1)
    diff = paired_values - mean_values
    assert diff.mean().abs() < 4 * diff.std() / draws**0.5  # same expectation
    # 2000 draws estimate each variance to ~3%; here the real partner roughly doubles it.
    assert mean_values.var() < 0.8 * paired_values.var()  # lower variance


def test_extractor_gets_no_updates_and_gradient_reaches_generator(toy_spec):
    from fewshot.nets import Generator

    torch.manual_seed(0)
    G = Generator(32, 0, 32, 32, 3, mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 512, "channel_max": 64})
    reals = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    reg = build_regularizer("reg-dgm", model=TOY, lam=1.0, estimator="paired", real_images=reals, min_input_size=16)
    reg.train()  # a loop that calls .train() on everything must not switch f's BatchNorm/Dropout on
    assert not reg.extractor.training
    before = {k: v.clone() for k, v in reg.extractor.state_dict().items()}
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    g_before = [p.detach().clone() for p in G.parameters()]
    z = torch.randn(4, 32)
    img = G(z, torch.zeros(4, 0))
    img.retain_grad()
    loss = reg.generator_loss(img, reals[:4].float() / 127.5 - 1)
    loss.backward()
    opt.step()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in reg.extractor.parameters())
    for k, v in reg.extractor.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BN running stats bit-identical
    assert any(not torch.equal(a, b.detach()) for a, b in zip(g_before, G.parameters(), strict=True))
    # deterministic in eval mode despite Dropout: the same fakes give the same loss twice
    x = fakes(2, seed=9)
    with torch.no_grad():
        assert torch.equal(reg.generator_loss(x, x), reg.generator_loss(x, x))


def test_lambda_zero_is_a_noop_that_builds_nothing(toy_spec):
    reg = build_regularizer("reg-dgm", model=TOY, lam=0.0, real_images=None)
    assert isinstance(reg, NullRegularizer) and not reg.requires_real_batch
    assert toy_spec == []  # no extractor built, no weights resolved
    x = fakes(3).requires_grad_(True)
    loss = reg.generator_loss(x)
    assert loss.shape == () and float(loss) == 0.0
    assert reg.stats() == {} and list(reg.parameters()) == []
    # λ = 0 with an extractor whose package is absent or weights unknown: still nothing is touched
    assert isinstance(build_regularizer("reg-dgm", model="facenet", lam=0), NullRegularizer)
    assert isinstance(build_regularizer("none"), NullRegularizer)


def test_normalize_divides_by_the_feature_scale(toy_spec):
    reals = real_set()
    plain = build_regularizer("reg-dgm", model=TOY, lam=1.0, real_images=reals, mirror=False)
    normed = build_regularizer("reg-dgm", model=TOY, lam=1.0, real_images=reals, mirror=False, normalize=True)
    x = fakes()
    with torch.no_grad():
        scale = normed.stats()["reg_feature_scale"]
        assert scale > 0
        assert_network_close(normed.generator_loss(x), plain.generator_loss(x) / scale, [1, 1])  # a division each
        # On the training set itself the normalised energy averages exactly 2, whatever the extractor.
        on_reals = normed.energy(reals.float() / 127.5 - 1)
    # Exactly 2 but for float32 rounding of the energies (the extractor, 6 squared features) and their mean over the
    # 24 reals; the moments it is measured against are float64.
    assert_network_close(on_reals.mean(), torch.tensor(2.0), [*fan_ins(normed.extractor), 6, 24], sides=1)
    # paired + normalize: the scale comes from the same data pass
    paired = build_regularizer("reg-dgm", model=TOY, lam=1.0, real_images=reals, mirror=False, normalize=True,
                               estimator="paired")
    assert paired.stats()["reg_feature_scale"] == pytest.approx(scale)


def test_resize_rule_follows_the_official_code():
    assert upsample_factor(32, 224) == 8  # official: 32 px ×8 nearest
    assert upsample_factor(64, 224) == 4
    assert upsample_factor(128, 224) == 2
    assert upsample_factor(256, 224) == 1  # official: no resize at >= 256 px
    assert upsample_factor(1024, 224) == 1
    assert upsample_factor(32, 160) == 8


def test_preprocess_is_normalise_then_nearest_upsample(toy_spec):
    reals = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    reg = build_regularizer("reg-dgm", model=TOY, lam=1.0, real_images=reals, estimator="paired", min_input_size=224)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = reg.preprocess(x)
    assert out.shape == (2, 3, 256, 256)
    expected = ((x - reg.channel_mean) / reg.channel_std).repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    assert_network_close(out, expected, [1, 1])  # a difference and a quotient, each rounded


def test_bad_input_gives_one_clear_error(toy_spec, tmp_path):
    reals = real_set()
    cases = [
        lambda: build_regularizer("reg-foo"),
        lambda: build_regularizer("reg-dgm", model="resnet9000", lam=1.0, real_images=reals),
        lambda: build_regularizer("reg-dgm", model=TOY, lam=1.0, estimator="median", real_images=reals),
        lambda: build_regularizer("reg-dgm", model=TOY, lam=-1.0, real_images=reals),
        lambda: build_regularizer("reg-dgm", model=TOY, lam=1.0, real_images=None),
        lambda: build_regularizer("reg-dgm", model=TOY, lam=1.0, real_images=reals.float()),
        lambda: build_regularizer("reg-dgm", model=TOY, lam=1.0, real_images=reals[:, :1]),
        lambda: build_regularizer("reg-dgm", model=TOY, lam=1.0, real_images=reals, lamda=3),
        lambda: build_regularizer("reg-dgm", model="resnet18", lam=1.0, real_images=reals,
                                  weights_path=tmp_path / "nope.pth"),
    ]
    for case in cases:
        with pytest.raises(FewshotError):
            case()
    paired = build_regularizer("reg-dgm", model=TOY, lam=1.0, estimator="paired", real_images=reals)
    with pytest.raises(FewshotError, match="needs the real batch"):
        paired.generator_loss(fakes(2))
    with pytest.raises(FewshotError, match="as many reals"):
        paired.generator_loss(fakes(2), fakes(3))
    with pytest.raises(FewshotError, match="shape"):
        paired.generator_loss(torch.zeros(2, 1, RES, RES), torch.zeros(2, 1, RES, RES))
    corrupt = tmp_path / "resnet18-f37072fd.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(FewshotError, match="cannot read"):
        build_extractor("resnet18", weights_path=corrupt)


# ---------------------------------------------------------------------------------------------------------------
# Real architectures from locally created weights in the upstream file format


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode use is checked too
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "resnet18-f37072fd.pth"
    torch.save(model.state_dict(), path)  # what torchvision publishes: a plain state_dict
    return path, model.eval()


def test_resnet18_from_upstream_file_matches_torchvision(resnet18_file):
    path, reference = resnet18_file
    extractor, spec = build_extractor("resnet18", weights_path=path)
    assert not extractor.training and all(not p.requires_grad for p in extractor.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # equal up to float32 rounding through the layers: BatchNorms folded, wide 3x3 by Winograd
        assert_network_close(extractor(x), reference(x), fan_ins(reference))
    assert extractor(x).shape == (2, spec.feature_dim)
    # Every BatchNorm is folded into the convolution before it (20 in resnet18): one activation pass less.
    assert not any(isinstance(m, nn.BatchNorm2d) for m in extractor.modules())
    assert sum(isinstance(m, nn.Conv2d) and m.bias is not None for m in extractor.modules()) == 20


def test_wrong_architecture_file_is_refused(tmp_path):
    import torchvision

    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(FewshotError, match="not a torchvision resnet18"):
        build_extractor("resnet18", weights_path=path)


@pytest.mark.skipif(importlib.util.find_spec("fewshot.weights") is None, reason="fewshot.weights not present")
def test_resnet18_loads_offline_through_the_weights_registry(resnet18_file, tmp_path, monkeypatch):
    path, reference = resnet18_file
    torch_home = tmp_path / "torch"
    cached = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "fewshot-home"))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    monkeypatch.delenv("FEWSHOT_WEIGHTS_RESNET18", raising=False)

    # Our random file cannot carry torchvision's hash: the registry refuses it, offline, with a clear error ...
    monkeypatch.delenv("FEWSHOT_WEIGHTS_REGISTRY", raising=False)
    with pytest.raises(FewshotError):
        build_regularizer("reg-dgm", model="resnet18", lam=1.0, real_images=real_set(n=2))

    # ... and, registered with its own hash under the upstream file name, it is found in $TORCH_HOME's cache.
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    registry = tmp_path / "weights.toml"
    registry.write_text(
        '[resnet18]\nfilename = "resnet18-f37072fd.pth"\nurl = "https://download.pytorch.org/models/resnet18-f37072fd.pth"\n'
        f'sha256 = "{digest}"\nlibrary_caches = ["torch_hub"]\n'
    )
    monkeypatch.setenv("FEWSHOT_WEIGHTS_REGISTRY", str(registry))
    extractor, _ = build_extractor("resnet18")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_network_close(extractor(x), reference(x), fan_ins(reference))  # float32 rounding through the layers


def _randomise_batchnorm_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so folding them is really checked."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
    return model


def _resnet_with_bn_statistics(seed: int = 0) -> nn.Module:
    import torchvision

    torch.manual_seed(seed)
    return _randomise_batchnorm_statistics(torchvision.models.resnet18().eval().requires_grad_(False))


def _input_grad(fn, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(fn(x).square().sum(), x)[0]


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_folded_batchnorms_and_fused_stem_equal_the_plain_resnet(factor):
    import copy

    from fewshot.extractors._fused_resnet import StridedStem, UpsampledStem, fuse_resnet_stem
    from fewshot.frozen import fold_batchnorms

    plain = _resnet_with_bn_statistics().double()
    fused = copy.deepcopy(plain)
    assert fold_batchnorms(fused) == 20 and fuse_resnet_stem(fused, factor)
    assert isinstance(fused.conv1, UpsampledStem if factor > 1 else StridedStem)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())

    def reference(x):
        return plain(F.interpolate(x, scale_factor=factor, mode="nearest") if factor > 1 else x)

    # In float64 the rewrites are the same function, outputs and input gradients, to rounding
    # (odd sizes at full size: the input gradient's phases are cropped).
    x = torch.randn(2, 3, 160 // factor, 192 // factor, dtype=torch.float64)
    if factor == 1:
        x = x[:, :, :157, :190]
    # Tolerance: float64 rounding through resnet18's layers, and back for the gradient (float32_bounds' model at
    # u = 2^-53).
    with torch.no_grad():
        assert_network_close(fused(x), reference(x), fan_ins(plain), u=U64, what="float64 output")
    assert_network_close(_input_grad(fused, x), _input_grad(reference, x), fan_ins(plain) + fan_outs(plain), u=U64,
                         what="float64 input gradient")

    # In float32 both networks stay near the float64 answer. Not elementwise: a pre-activation within rounding of
    # zero (or a max-pool tie) may flip either way in float32, in the plain network as much as in the fused one,
    # and moves the gradient locally; a wrong phase or index would move all of it. Normwise, rounding alone moves
    # the gradient by ~u sqrt(sum K) = 2e-5 (float32_bounds' model, forward and back); a flip moves one unit's
    # share, and a fraction ~LAMBDA u sqrt(sum K) = 1e-4 of the units lies that close to zero, so flips move at
    # most ~sqrt(1e-4) = 1e-2 of the norm: 2e-2 leaves a factor 2.
    truth = _input_grad(reference, x)
    fused32 = _input_grad(copy.deepcopy(fused).float(), x.float()).double()
    assert (fused32 - truth).norm() / truth.norm() < 2e-2


def test_stem_fusion_only_takes_what_it_can_fuse():
    import torchvision

    from fewshot.extractors._fused_resnet import fuse_resnet_stem, input_gradient_filters, phase_filters

    assert not fuse_resnet_stem(nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3)), 8)  # not a torchvision ResNet
    model = torchvision.models.resnet18()
    assert not fuse_resnet_stem(model, 6) and not fuse_resnet_stem(model, 0)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # a CIFAR-style stem: left alone
    assert not fuse_resnet_stem(model, 8) and isinstance(model.conv1, nn.Conv2d)
    # x8 then a 7x7/2 conv: 4x4 phases of 3x3 filters on the small image (padding 1 both sides).
    filters, q, before, after = phase_filters(torch.randn(64, 3, 7, 7), 8, 2, 3)
    assert filters.shape == (16 * 64, 3, 3, 3) and (q, before, after) == (4, 1, 1)
    # The 7x7/2 input gradient: 2x2 input phases of 4x4 correlations over the 64 gradient channels.
    grad_filters, before, after = input_gradient_filters(torch.randn(64, 3, 7, 7), 2, 3)
    assert grad_filters.shape == (3 * 4, 64, 4, 4) and (before, after) == (1, 2)


def test_reg_dgm_energy_and_gradient_are_unchanged_by_the_fused_stem(resnet18_file):
    path, reference = resnet18_file
    reals = torch.randint(0, 256, (4, 3, 32, 32), generator=torch.Generator().manual_seed(5)).to(torch.uint8)
    fused = build_regularizer("reg-dgm", model="resnet18", lam=1.0, real_images=reals, weights_path=str(path))
    plain = build_regularizer("reg-dgm", model=reference, lam=1.0, real_images=reals)
    assert fused.upsample_in_extractor and not plain.upsample_in_extractor and fused.factor == plain.factor == 8
    assert fused.stem_fused and not plain.stem_fused
    assert "(in the stem)" in repr(fused)
    fakes = torch.rand(3, 3, 32, 32) * 2 - 1
    # Tolerance: float32 rounding through resnet18's layers, the means over the 4 reals (x2 mirrored) or the 3 fakes
    # and the 1000 features (float32_bounds.assert_network_close).
    ks = fan_ins(reference)
    assert_network_close(fused.feature_mean, plain.feature_mean, ks + [8], what="feature mean")
    gf, gp = (_input_grad(lambda x, r=r: r.generator_loss(x).view(1), fakes) for r in (fused, plain))
    assert_network_close(fused.generator_loss(fakes), plain.generator_loss(fakes), ks + [8, 1000, 3], what="loss")
    # The input gradients, normwise as in test_folded_batchnorms_...: ReLU flips move up to ~1e-2 of the norm, and
    # 1 - cos = |relative difference|^2 / 2 <= 1e-3 for a difference up to 4.5e-2 of the norm.
    assert torch.nn.functional.cosine_similarity(gf.flatten(), gp.flatten(), dim=0) > 0.999


def test_reg_dgm_at_full_size_uses_the_strided_stem(resnet18_file):
    path, reference = resnet18_file
    reals = torch.randint(0, 256, (2, 3, 224, 224), generator=torch.Generator().manual_seed(6)).to(torch.uint8)
    fused = build_regularizer("reg-dgm", model="resnet18", lam=1.0, real_images=reals, weights_path=str(path),
                              estimator="paired")
    plain = build_regularizer("reg-dgm", model=reference, lam=1.0, real_images=reals, estimator="paired")
    assert fused.factor == 1 and fused.stem_fused and not fused.upsample_in_extractor
    fakes = torch.rand(2, 3, 224, 224) * 2 - 1
    real_batch = reals.float() / 127.5 - 1
    # Float32 rounding through resnet18 (each of fakes and reals) and the mean over 2 pairs x 1000 features.
    assert_network_close(fused.generator_loss(fakes, real_batch), plain.generator_loss(fakes, real_batch),
                         fan_ins(reference) + [2 * 1000])


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is None, reason="open_clip not installed (fewshot[clip])")
def test_clip_rn50_average_pooled_visual_tower(tmp_path):
    import open_clip

    torch.manual_seed(0)
    visual = open_clip.create_model("RN50", pretrained=None).visual.eval()
    _randomise_batchnorm_statistics(visual)
    path = tmp_path / "clip-rn50.pt"
    torch.save({f"visual.{k}": v for k, v in visual.state_dict().items()}, path)  # open_clip state_dict layout
    extractor, spec = build_extractor("clip", weights_path=path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        trunk = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(x)))))
        expected = trunk.mean(dim=(2, 3))  # average pooling in place of attention pooling, as official
        out = extractor(x)
    assert out.shape == (2, spec.feature_dim) == (2, 2048)
    assert_network_close(out, expected, fan_ins(visual))  # BatchNorms folded: float32 rounding through the layers
    assert not any(isinstance(m, nn.BatchNorm2d) for m in extractor.modules())


def test_missing_optional_package_names_the_extra(monkeypatch, tmp_path):
    import sys

    # None in sys.modules makes `import open_clip` fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "open_clip", None)
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    with pytest.raises(FewshotError, match=r"fewshot\[clip\]"):
        build_extractor("clip", weights_path=weights)
    with pytest.raises(FewshotError, match="--no-deps facenet-pytorch"):
        build_extractor("facenet", weights_path=weights)


@pytest.mark.skipif(importlib.util.find_spec("facenet_pytorch") is None, reason="facenet-pytorch not installed")
def test_facenet_from_upstream_file(tmp_path):
    try:
        from facenet_pytorch import InceptionResnetV1
    except ImportError as exc:
        pytest.skip(f"facenet-pytorch not importable: {exc}")
    torch.manual_seed(0)
    reference = InceptionResnetV1(pretrained=None, classify=True, num_classes=8631).eval()
    _randomise_batchnorm_statistics(reference)
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(reference.state_dict(), path)
    extractor, spec = build_extractor("facenet", weights_path=path)
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert_network_close(extractor(x), reference(x), fan_ins(reference))  # BatchNorms folded: float32 rounding
    assert spec.feature_dim == 8631
    assert not any(isinstance(m, nn.BatchNorm2d) for m in extractor.modules())
    assert any(isinstance(m, nn.BatchNorm1d) for m in extractor.modules())  # the embedding's BN1d stays


# ---------------------------------------------------------------------------------------------------------------
# The registry entry: options, builder, dry-run plan


def test_registry_builder_equals_the_keyword_form_and_weight_zero_builds_nothing(toy_spec):
    reals = real_set()
    entry = regularizers.get("reg-dgm")
    options = entry.make_options({"weight": 0.7, "model": TOY, "estimator": "mean"})
    reg = regularizers.build("reg-dgm", options, real_images=reals, mirror=True)
    same = build_regularizer("reg-dgm", model=TOY, lam=0.7, estimator="mean", real_images=reals, mirror=True)
    x = fakes()
    with torch.no_grad():
        assert torch.equal(reg.generator_loss(x), same.generator_loss(x))
    built = len(toy_spec)
    off = regularizers.build("reg-dgm", entry.make_options({"model": TOY}), real_images=None)
    assert isinstance(off, NullRegularizer) and len(toy_spec) == built  # weight 0 by default: nothing built
    # The model's choices are the extractors that offer Reg-DGM features: the metrics' VGG-16 is not one.
    assert TOY in offering("reg-dgm") and "vgg16" not in offering("reg-dgm")
    with pytest.raises(FewshotError, match="choose from"):
        entry.make_options({"weight": 1.0, "model": "vgg16"})
    with pytest.raises(FewshotError, match="must be >= 0"):
        regularizers.build("reg-dgm", {"weight": float("nan"), "model": TOY}, real_images=reals)


def test_dry_run_plan_says_where_the_weights_would_come_from_and_loads_nothing(toy_spec, tmp_path, monkeypatch):
    plan = regularizers.get("reg-dgm").extra["plan"]
    assert plan({"weight": 0.0}) == ""  # off: nothing to say
    assert plan({"weight": 0.5, "model": TOY}) == f"Reg-DGM: {TOY}, lambda 0.5, estimator mean; weights: none needed"
    own = tmp_path / "my-resnet18.pth"
    own.write_bytes(b"never read by a plan")
    assert plan({"weight": 2.0, "weights": str(own), "estimator": "paired"}) == \
        f"Reg-DGM: resnet18, lambda 2, estimator paired; weights: {own}"
    assert plan({"weight": 2.0, "weights": str(tmp_path / "gone.pth")}).endswith("(not found: the run would stop)")
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    monkeypatch.delenv("FEWSHOT_WEIGHTS_RESNET18", raising=False)
    monkeypatch.delenv("FEWSHOT_WEIGHTS_REGISTRY", raising=False)
    assert plan({"weight": 1.0}).endswith("weights: resnet18 missing, fetched when the run starts "
                                          "(`fewshot weights fetch resnet18` now, or --reg-weights FILE)")
    assert toy_spec == []


def test_listing_the_families_and_planning_import_no_torch():
    """The command line lists metrics, extractors and regularizers when it is built: none of that loads torch."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from fewshot.registry import extractors, metrics, regularizers\n"
        "from fewshot.extractors import offering\n"
        "assert {'fid', 'kid', 'pr', 'is'} <= set(metrics.names()) and 'reg-dgm' in regularizers.names()\n"
        "assert 'inception-v3-fid' in extractors.names() and 'vgg16' in offering('disp')\n"
        "entry = regularizers.get('reg-dgm')\n"
        "assert entry.extra['plan'](entry.make_options({'weight': 1.0, 'model': 'clip'})).startswith('Reg-DGM: clip')\n"
        "heavy = sorted({'torch', 'numpy'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**__import__("os").environ, "FEWSHOT_OFFLINE": "1"},
                   timeout=60)
