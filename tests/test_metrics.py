"""Metrics: the formulas against independent computations, the extractors' weight layout, the cache, the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from float32_bounds import assert_network_close, fan_ins
from torch import nn

from fewshot.errors import FewshotError
from fewshot.extractors import FeatureExtractor, load_extractor, load_strict
from fewshot.extractors.inception import INCEPTION
from fewshot.extractors.vgg16 import VGG16
from fewshot.metrics import (
    compute_metrics,
    fid_from_features,
    inception_score_from_logits,
    kid_from_features,
    parse_metrics,
    precision_recall_from_features,
)
from fewshot.nets import Generator

# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Offline, empty caches, and a weights registry without hashes so random test weights are accepted."""
    registry = tmp_path / "weights.toml"
    registry.write_text(
        '[inception-v3-fid]\nfilename = "pt_inception-2015-12-05-6726825d.pth"\nurl = "http://127.0.0.1:9/x.pth"\n'
        '[vgg16]\nfilename = "vgg16-397923af.pth"\nurl = "http://127.0.0.1:9/y.pth"\n'
    )
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    # A fresh FEWSHOT_HOME has no compiled ops: "auto" would rebuild them in every test (minutes).
    monkeypatch.setenv("FEWSHOT_OPS", "reference")
    monkeypatch.setenv("FEWSHOT_WEIGHTS_REGISTRY", str(registry))
    for var in ("FEWSHOT_WEIGHTS_INCEPTION_V3_FID", "FEWSHOT_WEIGHTS_VGG16"):
        monkeypatch.delenv(var, raising=False)
    return registry


def _random_inception_state() -> dict[str, torch.Tensor]:
    """An upstream-keyed (torchvision Inception3 layout, 1008 classes) state_dict with tame random values."""
    from fewshot.extractors._inception_net import FIDInceptionV3

    torch.manual_seed(0)
    net = FIDInceptionV3()
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")  # keeps activations O(1) through 90 layers
    return net.state_dict()


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(_random_inception_state(), path)
    return path


class StubExtractor(FeatureExtractor):
    """A cheap stand-in with the extractor interface: a fixed random projection of 4×4-pooled pixels."""

    def __init__(self, name: str, dim: int = 24) -> None:
        super().__init__(fingerprint=f"stub-{name}-{dim}")
        self.name = name
        self.resize = "none (stub)"
        torch.manual_seed(1)
        self.proj = nn.Linear(48, dim, bias=False)

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = F.adaptive_avg_pool2d(images.float() / 127.5 - 1, 4).flatten(1)
        feats = self.proj(x)
        return {"pool": feats, "logits": feats[:, :10] * 5, "fc2": feats}


def tiny_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(32, 0, 32, 32, 3, mapping_kwargs={"num_layers": 2},
                     synthesis_kwargs={"channel_base": 512, "channel_max": 64}).eval()


def random_reals(n: int, res: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, res, res), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# --------------------------------------------------------------------------------------------
# Formulas


def _scipy_fid(real: np.ndarray, fake: np.ndarray) -> float:
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def test_fid_equals_scipy_sqrtm_reference():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32))
    fake = rng.normal(loc=0.3, size=(300, 32)) @ rng.normal(size=(32, 32)) * 0.8
    ours = fid_from_features(real, fake)
    assert ours == pytest.approx(_scipy_fid(real, fake), rel=1e-6)
    assert ours > 1


def test_fid_low_rank_route_equals_the_covariance_route():
    from fewshot.metrics import frechet_distance, gaussian_stats

    rng = np.random.default_rng(6)
    real = rng.normal(size=(30, 64)) * rng.uniform(0.5, 2, size=64)
    fake = rng.normal(loc=0.2, size=(45, 64))
    via_svd = fid_from_features(real, fake)  # min(N) < D: the n1 × n2 SVD route
    via_eigh = frechet_distance(gaussian_stats(real), gaussian_stats(fake))
    # eigh on the singular 64×64 product loses ~1e-8 to clipped tiny eigenvalues; the SVD route does not.
    assert via_svd == pytest.approx(via_eigh, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_even_when_rank_deficient():
    rng = np.random.default_rng(1)
    few = rng.normal(size=(20, 64))  # N < D: singular covariance, where sqrtm of the product is fragile
    assert fid_from_features(few, few) == pytest.approx(0.0, abs=1e-6)
    assert fid_from_features(few, few + 1.0) == pytest.approx(64.0, rel=1e-6)  # a pure mean shift


def _direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (a·b/d + 1)³, by explicit loops."""
    d = x.shape[1]
    m, n = len(x), len(y)

    def k(a, b):
        return (float(a @ b) / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_equals_direct_unbiased_mmd():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(12, 6))
    fake = rng.normal(loc=0.5, size=(12, 6))
    kid = kid_from_features(real, fake, num_subsets=3, max_subset_size=1000)
    # Subset size is capped at 12 = both sets, so every subset is a permutation of the whole sets.
    assert kid["subset_size"] == 12
    assert kid["mean"] == pytest.approx(_direct_mmd2(real, fake), rel=1e-9)
    assert kid["std"] == pytest.approx(0.0, abs=1e-12)


def test_kid_subset_size_follows_the_smaller_set_and_rejects_tiny_sets():
    rng = np.random.default_rng(3)
    kid = kid_from_features(rng.normal(size=(30, 5)), rng.normal(size=(80, 5)), num_subsets=20, max_subset_size=1000)
    assert kid["subset_size"] == 30 and kid["std"] > 0
    with pytest.raises(FewshotError, match="at least 2"):
        kid_from_features(rng.normal(size=(1, 5)), rng.normal(size=(10, 5)))


def test_precision_recall_identical_sets_and_far_clusters():
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(60, 16))
    same = precision_recall_from_features(feats, feats.copy())
    assert (same["precision"], same["recall"]) == (1.0, 1.0)
    far = precision_recall_from_features(feats, feats + 100.0)
    assert (far["precision"], far["recall"]) == (0.0, 0.0)


def test_precision_recall_half_covered():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(200, 8))
    fake = np.concatenate([real[:100] + 1e-3, rng.normal(size=(100, 8)) + 50.0])
    pr = precision_recall_from_features(real, fake, batch_size=37)  # batch size not dividing N on purpose
    assert pr["precision"] == pytest.approx(0.5)
    assert 0.0 < pr["recall"] < 1.0  # the fake manifold covers only part of the reals


def test_inception_score_limits():
    uniform = inception_score_from_logits(np.zeros((50, 1008)))
    assert uniform["mean"] == pytest.approx(1.0)
    # Each split of 10 holds 10 confident predictions of 10 different classes: IS -> 10.
    confident = np.full((100, 1008), -50.0)
    confident[np.arange(100), np.arange(100) % 10] = 50.0
    score = inception_score_from_logits(confident, num_splits=10)
    assert score["mean"] == pytest.approx(10.0, rel=1e-6) and score["std"] == pytest.approx(0.0, abs=1e-6)


def test_parse_metrics():
    assert parse_metrics("FID, kid,fid") == ("fid", "kid")
    with pytest.raises(FewshotError, match="unknown metric"):
        parse_metrics("fid,lpips")


# --------------------------------------------------------------------------------------------
# Networks and weights


def test_fid_inception_has_the_upstream_key_layout_and_matches_torchvision_structure(monkeypatch):
    """Same keys/shapes as torchvision's Inception3 (1008 classes, no aux head), which pytorch-fid's
    weight file uses; with torchvision's pooling swapped back in, the outputs are identical."""
    import torchvision

    import fewshot.extractors._inception_net as inception

    reference = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008,
                                                init_weights=False).eval()
    state = _random_inception_state()
    reference.load_state_dict(state)
    ours = inception.FIDInceptionV3().eval()
    ours.load_state_dict(state, strict=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}

    x = torch.rand(1, 3, 96, 96) * 2 - 1  # the graph accepts any size >= 75 px; 299 only costs more time
    with torch.no_grad():
        tf_pool, _ = ours(x)
        torchvision_pool = partial_avg = lambda t: F.avg_pool2d(t, 3, stride=1, padding=1)  # noqa: E731
        monkeypatch.setattr(inception, "_avg_pool_no_pad", partial_avg)
        ours.Mixed_7b.pool = ours.Mixed_7c.pool = torchvision_pool
        _, logits = ours(x)
        expected = reference(x)
    # Float32 rounding through Inception's layers (float32_bounds.assert_network_close); the bias is added once more.
    assert_network_close(logits + ours.fc.bias, expected, fan_ins(reference) + [1])
    # The TF pooling really differs from torchvision's (else the FID variants would be pointless).
    with torch.no_grad():
        assert not torch.allclose(tf_pool, ours(x)[0])


def test_inception_extractor_loads_the_upstream_file_strictly(inception_file):
    extractor = load_extractor(INCEPTION, inception_file, reuse=False)
    images = random_reals(2, res=32)
    out = extractor(images)
    assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert torch.isfinite(out["pool"]).all() and (out["pool"] >= 0).all()  # post-ReLU average pool
    assert extractor.calls == 1 and len(extractor.fingerprint) == 64


def test_inception_weights_with_a_missing_or_misshaped_key_are_refused(tmp_path):
    state = _random_inception_state()
    broken = dict(state)
    del broken["Mixed_6b.branch7x7_2.conv.weight"]
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(FewshotError, match="missing 'Mixed_6b.branch7x7_2.conv.weight'"):
        load_extractor(INCEPTION, path, reuse=False)
    resized = dict(state, **{"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    torch.save(resized, path)
    with pytest.raises(FewshotError, match="fc.weight"):
        load_extractor(INCEPTION, path, reuse=False)


def test_vgg16_layout_is_torchvisions_and_is_loaded_strictly():
    import torchvision

    with torch.device("meta"):
        state = torchvision.models.vgg16(weights=None).state_dict()
    with torch.device("meta"):
        target = torchvision.models.vgg16(weights=None)
    load_strict(target, state, "VGG-16", "meta", assign=True)  # the full upstream key set passes
    incomplete = {k: v for k, v in state.items() if k != "classifier.3.weight"}
    with pytest.raises(FewshotError, match="missing 'classifier.3.weight'"):
        load_strict(target, incomplete, "VGG-16", "vgg.pth", assign=True)


def test_vgg16_extractor_gives_fc2_features(tmp_path):
    import torchvision

    path = tmp_path / "vgg16-397923af.pth"
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), path)
    extractor = load_extractor(VGG16, path, reuse=False)
    out = extractor(random_reals(2, res=64))
    assert out["fc2"].shape == (2, 4096) and (out["fc2"] >= 0).all()


def test_extractors_fold_batchnorms_and_route_3x3_convolutions_without_changing_features(tmp_path):
    import torchvision

    from fewshot.cuda.winograd import WinogradConv2d
    from fewshot.extractors._inception_net import FIDInceptionV3, preprocess

    state = _random_inception_state()
    gen = torch.Generator().manual_seed(3)
    for key, value in state.items():  # non-trivial BatchNorm statistics, so folding them is really checked
        if key.endswith("running_var"):
            state[key] = 0.5 + 1.5 * torch.rand(value.shape, generator=gen)
        elif key.endswith("running_mean") or key.endswith("bn.bias"):
            state[key] = 0.1 * torch.randn(value.shape, generator=gen)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    extractor = load_extractor(INCEPTION, path, reuse=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in extractor.modules())
    plain = FIDInceptionV3().eval()
    plain.load_state_dict(state)
    images = random_reals(3, res=48)
    with torch.no_grad():
        pool, logits = plain(preprocess(images))
    out = extractor(images)
    # Float32 rounding through the layers (BatchNorms folded, wide 3x3 convolutions by Winograd): float32_bounds.
    assert_network_close(out["pool"], pool, fan_ins(plain), what="pool")
    assert_network_close(out["logits"], logits, fan_ins(plain), what="logits")

    vgg_path = tmp_path / "vgg16-397923af.pth"
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), vgg_path)
    vgg = load_extractor(VGG16, vgg_path, reuse=False)
    assert sum(isinstance(m, WinogradConv2d) for m in vgg.modules()) == 13  # all of VGG-16's convolutions


def test_fakes_for_metrics_take_the_batched_cpu_path_and_match_the_official_forward():
    from conftest import make_tiny_G

    from fewshot.generate import to_uint8
    from fewshot.metrics import generate_fakes

    G = make_tiny_G().eval()
    calls = []
    original = G.synthesis.forward
    G.synthesis.forward = lambda ws, **kw: calls.append(kw.get("fused_modconv")) or original(ws, **kw)
    ours = torch.cat(list(generate_fakes(G, 6, 3, 0.8, 5, torch.device("cpu"))))
    assert calls == [False, False]  # batches on the CPU: the non-fused modulated conv, as `fewshot sample`
    # The official forward (fused modconv in eval), same latents and same random noise: the same images.
    z_rng = torch.Generator().manual_seed(5)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        official = [to_uint8(original(G.mapping(torch.randn(3, G.z_dim, generator=z_rng), None, truncation_psi=0.8),
                                      noise_mode="random")) for _ in range(2)]
    # Float32 rounding (fused vs non-fused modulated convolutions) may carry a value across a rounding boundary of
    # the uint8 conversion, never by a whole step.
    assert (ours.int() - torch.cat(official).int()).abs().max() <= 1


def test_weights_go_through_the_registry(tmp_path, monkeypatch, inception_file):
    # Offline with no file anywhere: one error that says where to put it.
    with pytest.raises(FewshotError) as missing:
        load_extractor(INCEPTION, None, reuse=False)
    assert "offline" in str(missing.value).lower() or "downloads are off" in str(missing.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in str(missing.value)
    # With the built-in registry, a file that is not the published one fails its hash check.
    monkeypatch.delenv("FEWSHOT_WEIGHTS_REGISTRY")
    with pytest.raises(FewshotError, match="does not match"):
        load_extractor(INCEPTION, inception_file, reuse=False)


# --------------------------------------------------------------------------------------------
# compute_metrics


def test_compute_metrics_reuses_the_cached_real_statistics(tmp_path):
    G = tiny_generator()
    reals = random_reals(20)
    stub = StubExtractor(INCEPTION)
    kwargs = dict(metrics=("fid", "kid"), n_fake=16, batch_size=8, cache_dir=tmp_path / "cache",
                  extractors={INCEPTION: stub}, progress=False)
    first = compute_metrics(G, reals, **kwargs)
    assert stub.calls == 3 + 2  # 20 reals in batches of 8, 16 fakes in batches of 8
    assert first["protocol"]["real_features_cached"] == {"inception-v3-fid/pool": False}
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1

    second = compute_metrics(G, reals, **kwargs)
    assert stub.calls == 5 + 2  # only the fakes went through the extractor again
    assert second["protocol"]["real_features_cached"] == {"inception-v3-fid/pool": True}
    assert second["fid"] == pytest.approx(first["fid"], rel=1e-9)  # same seed, same fakes
    assert second["kid"] == pytest.approx(first["kid"], rel=1e-9)

    compute_metrics(G, random_reals(20, seed=1), **kwargs)  # other pictures: a cache miss
    assert stub.calls == 7 + 5


def test_compute_metrics_on_a_stream_matches_the_tensor_and_decodes_once(tmp_path, monkeypatch):
    """A reference set streamed batch by batch gives the numbers of the same set in memory; one decoding pass
    feeds both extractors; a second call takes everything (notes included) from the cache, decoding nothing."""
    from fewshot.data import ImageStream
    from fewshot.metrics import load_real_images

    folder = tmp_path / "reals"
    _write_images(folder, 9, res=40)  # decoded at the generator's 32 px: a "resized" note
    G = tiny_generator()
    tensor, tensor_notes = load_real_images(folder, 32)
    inception, vgg = StubExtractor(INCEPTION), StubExtractor(VGG16, dim=16)
    kwargs = dict(metrics=("fid", "kid", "pr"), n_fake=10, batch_size=4, extractors={INCEPTION: inception, VGG16: vgg},
                  progress=False)
    in_memory = compute_metrics(G, tensor, use_cache=False, **kwargs)

    passes = []
    chunks = ImageStream.chunks
    monkeypatch.setattr(ImageStream, "chunks", lambda self, *a, **k: passes.append(1) or chunks(self, *a, **k))
    streamed = compute_metrics(G, ImageStream(folder, 32), cache_dir=tmp_path / "cache", **kwargs)
    assert len(passes) == 1
    for key in ("fid", "kid", "precision", "recall"):
        assert streamed[key] == pytest.approx(in_memory[key], rel=1e-6, abs=1e-9), key
    assert streamed["protocol"]["n_real"] == 9 and tensor_notes[0] in streamed["protocol"]["notes"]

    again = compute_metrics(G, ImageStream(folder, 32), cache_dir=tmp_path / "cache", **kwargs)
    assert len(passes) == 1 and set(again["protocol"]["real_features_cached"].values()) == {True}
    assert again["protocol"]["n_real"] == 9 and tensor_notes[0] in again["protocol"]["notes"]
    assert again["fid"] == pytest.approx(streamed["fid"], rel=1e-9)
    with pytest.raises(FewshotError, match="decoded at 16 px"):
        compute_metrics(G, ImageStream(folder, 16), use_cache=False, **kwargs)


def test_a_cache_folder_that_cannot_be_written_costs_a_note_not_the_result(tmp_path, monkeypatch):
    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fewshot.checkpoint.atomic_write_bytes", full_disk)
    stub = StubExtractor(INCEPTION)
    result = compute_metrics(tiny_generator(), random_reals(10), metrics=("fid",), n_fake=10, batch_size=5,
                             cache_dir=tmp_path / "cache", extractors={INCEPTION: stub}, progress=False)
    assert math.isfinite(result["fid"]) and not list((tmp_path / "cache").glob("*"))
    assert any("not cached" in note and "No space left" in note for note in result["protocol"]["notes"])


def test_compute_metrics_matches_formulas_on_the_same_features(tmp_path):
    G = tiny_generator()
    reals = random_reals(12)
    stub = StubExtractor(INCEPTION)
    result = compute_metrics(G, reals, metrics="fid,kid,is", n_fake=12, batch_size=5, extractors={INCEPTION: stub},
                             use_cache=False, progress=False, psi=0.7)
    from fewshot.metrics import generate_fakes

    fakes = torch.cat(list(generate_fakes(G, 12, 5, 0.7, 0, torch.device("cpu"))))
    real_f, fake_f = stub(reals)["pool"], stub(fakes)["pool"]
    assert result["fid"] == pytest.approx(_scipy_fid(real_f.double().numpy(), fake_f.double().numpy()), rel=1e-6)
    assert result["kid"] == pytest.approx(_direct_mmd2(real_f.double().numpy(), fake_f.double().numpy()), rel=1e-6)
    assert result["is"] >= 1.0
    proto = result["protocol"]
    assert (proto["n_real"], proto["n_fake"], proto["psi"], proto["kid_subset_size"]) == (12, 12, 0.7, 12)
    assert proto["extractors"][INCEPTION]["resize"] == "none (stub)"


def test_kid_with_50_real_and_50_fake_images(tmp_path):
    result = compute_metrics(tiny_generator(), random_reals(50), metrics=("kid",), n_fake=50, batch_size=25,
                             extractors={INCEPTION: StubExtractor(INCEPTION)}, use_cache=False, progress=False)
    assert result["protocol"]["kid_subset_size"] == 50  # not the default 1000
    assert np.isfinite(result["kid"]) and "fid" not in result


def test_compute_metrics_pr_and_resized_reals(tmp_path):
    G = tiny_generator()
    result = compute_metrics(G, random_reals(10, res=48), metrics=("pr",), n_fake=10, batch_size=10,
                             extractors={VGG16: StubExtractor(VGG16)}, cache_dir=tmp_path, progress=False)
    assert 0.0 <= result["precision"] <= 1.0 and 0.0 <= result["recall"] <= 1.0
    assert any("resized" in note for note in result["protocol"]["notes"])


def test_compute_metrics_bad_input():
    G = tiny_generator()
    stub = {INCEPTION: StubExtractor(INCEPTION)}
    with pytest.raises(FewshotError, match="at least 2 real images"):
        compute_metrics(G, random_reals(1), extractors=stub, progress=False, use_cache=False)
    with pytest.raises(FewshotError, match="uint8"):
        compute_metrics(G, torch.rand(4, 3, 32, 32), extractors=stub, progress=False, use_cache=False)
    with pytest.raises(FewshotError, match="10 splits"):
        compute_metrics(G, random_reals(4), metrics="is", n_fake=5, extractors=stub, progress=False)


def test_compute_metrics_with_the_real_inception_file(inception_file, tmp_path):
    """The whole path once: registry -> upstream-keyed file -> 299 px Inception, on a handful of images."""
    result = compute_metrics(tiny_generator(), random_reals(2), metrics=("fid", "kid"), n_fake=2, batch_size=2,
                             weights_paths={INCEPTION: inception_file}, cache_dir=tmp_path, progress=False)
    assert np.isfinite(result["fid"]) and result["fid"] >= 0
    assert result["protocol"]["extractors"][INCEPTION]["resize"].startswith("bilinear to 299x299")


# --------------------------------------------------------------------------------------------
# Command line


def _write_images(folder, count, res=32, odd_one=None):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        size = odd_one if (odd_one and i == 0) else res
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def _run_cli(args, capsys):
    from fewshot.cli import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


def test_cli_metrics_end_to_end(tmp_path, capsys, inception_file):
    import json

    from fewshot.checkpoint import save_bundle

    G = tiny_generator()
    ckpt = tmp_path / "G.safetensors"
    save_bundle(ckpt, {"G_ema": G})
    data = tmp_path / "data"
    _write_images(data, 3, odd_one=40)
    out_json = tmp_path / "out" / "m.json"
    code, out, err = _run_cli(["metrics", str(ckpt), "--data", str(data), "--metrics", "fid,kid", "--n", "4",
                               "--batch", "4", "--device", "cpu", "--inception-weights", str(inception_file),
                               "--json", str(out_json), "-q"], capsys)
    assert code == 0, err
    assert "FID" in out and "KID" in out and "resized" in out
    saved = json.loads(out_json.read_text())
    assert saved["protocol"]["n_real"] == 3 and saved["protocol"]["n_fake"] == 4
    assert saved["protocol"]["kid_subset_size"] == 3 and saved["protocol"]["real_source"] == str(data)
    assert np.isfinite(saved["fid"])


def test_cli_metrics_bad_input_is_one_line(tmp_path, capsys):
    from fewshot.checkpoint import save_bundle

    ckpt = tmp_path / "G.safetensors"
    save_bundle(ckpt, {"G_ema": tiny_generator()})
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run_cli(["metrics", str(ckpt), "--data", str(empty), "--device", "cpu", "-q"], capsys)
    assert code == 1 and err.startswith("error:") and "empty" in err and "Traceback" not in err
    single = tmp_path / "single"
    _write_images(single, 1)
    code, _, err = _run_cli(["metrics", str(ckpt), "--data", str(single), "--device", "cpu", "-q"], capsys)
    assert code == 1 and "at least 2" in err
    code, _, err = _run_cli(["metrics", str(ckpt), "--data", str(single), "--metrics", "fid,foo"], capsys)
    assert code == 1 and "unknown metric" in err


# --------------------------------------------------------------------------------------------
# Real data (../shared/data; skipped without it)

SHARED_DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "haunted-house-10").is_dir(), reason="../shared/data is absent")
def test_real_odd_sized_images_are_resized_with_a_note_and_measured():
    from fewshot.metrics import load_real_images

    reals, notes = load_real_images(SHARED_DATA / "haunted-house-10", 32)
    assert reals.shape == (10, 3, 32, 32) and reals.dtype == torch.uint8
    assert any("resized" in note for note in notes)
    result = compute_metrics(tiny_generator(), reals, metrics="fid,kid,pr", n_fake=12, batch_size=6,
                             extractors={INCEPTION: StubExtractor(INCEPTION), VGG16: StubExtractor(VGG16)},
                             use_cache=False, progress=False, notes=notes)
    assert result["protocol"]["kid_subset_size"] == 10 and np.isfinite(result["fid"])


# --------------------------------------------------------------------------------------------
# The registry: metrics and extractors come from their entries

PIXEL_METRIC = '''"""Mean pixel distance: the mean real image against the mean generated one (a metric without a network)."""

from dataclasses import dataclass

from fewshot.metrics import Measured, Metric
from fewshot.registry import metrics, option


@dataclass(frozen=True)
class PixelOptions:
    scale: float = option(1.0, "Multiplies the distance.", check=lambda v: v > 0, wanted="> 0")


@metrics.register("pixel-distance", options=PixelOptions, needs=("images",), lower_is_better=True)
class PixelDistance(Metric):
    def compute(self, real, fake, seed):
        mean_real = real["images"].features.double().mean(0)
        mean_fake = fake["images"].double().mean(0)
        return Measured({"pixel-distance": float((mean_real - mean_fake).abs().mean()) * self.options.scale},
                        {"pixel_scale": self.options.scale})
'''


@pytest.fixture
def pixel_metric(tmp_path, monkeypatch):
    """A third party's metric: one file that registers itself, imported as a plugin would be."""
    import importlib

    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "fewshot_pixel_metric.py").write_text(PIXEL_METRIC)
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    importlib.import_module("fewshot_pixel_metric")
    return "pixel-distance"


def test_a_metric_in_one_file_reads_the_images_and_needs_no_network(pixel_metric, tmp_path):
    from fewshot.data import ImageStream
    from fewshot.metrics import generate_fakes, load_real_images, summary_lines

    G = tiny_generator()
    extractors: dict = {}
    reals = random_reals(7)
    # Offline with empty caches (the autouse fixture): any extractor it tried to load would fail.
    result = compute_metrics(G, reals, metrics=pixel_metric, n_fake=6, batch_size=4, extractors=extractors,
                             use_cache=False, progress=False, options={pixel_metric: {"scale": 2.0}})
    fakes = torch.cat(list(generate_fakes(G, 6, 4, 1.0, 0, torch.device("cpu"))))
    expected = 2.0 * float((reals.double().mean(0) - fakes.double().mean(0)).abs().mean())
    assert result[pixel_metric] == pytest.approx(expected, rel=1e-12)
    assert extractors == {} and result["protocol"]["extractors"] == {} and result["protocol"]["pixel_scale"] == 2.0
    assert summary_lines(result) == [f"  pixel-distance {result[pixel_metric]:.4f}"]

    # From a folder streamed batch by batch, beside FID on a stub: the same number as the decoded tensor.
    folder = tmp_path / "reals"
    _write_images(folder, 5)
    tensor, _ = load_real_images(folder, 32)
    kwargs = dict(metrics=f"fid,{pixel_metric}", n_fake=6, batch_size=4, use_cache=False, progress=False,
                  extractors={INCEPTION: StubExtractor(INCEPTION)})
    streamed = compute_metrics(G, ImageStream(folder, 32), **kwargs)
    in_memory = compute_metrics(G, tensor, **kwargs)
    assert streamed[pixel_metric] == pytest.approx(in_memory[pixel_metric], rel=1e-12)
    assert streamed["fid"] == pytest.approx(in_memory["fid"], rel=1e-9) and streamed["protocol"]["n_real"] == 5
    with pytest.raises(FewshotError, match="must be > 0"):
        compute_metrics(G, reals, metrics=pixel_metric, n_fake=6, options={pixel_metric: {"scale": 0}},
                        use_cache=False, progress=False)


def test_metric_options_replace_the_constants_and_the_old_keywords_still_set_them():
    from fewshot.registry import metrics as registry

    assert {"fid", "kid", "pr", "is"} <= set(registry.names())
    facts = {name: (registry.get(name).extra["needs"], registry.get(name).extra["lower_is_better"])
             for name in ("fid", "kid", "pr", "is")}
    assert facts == {"fid": (("inception-v3-fid/pool",), True), "kid": (("inception-v3-fid/pool",), True),
                     "pr": (("vgg16/fc2",), False), "is": (("inception-v3-fid/logits",), False)}
    G, reals = tiny_generator(), random_reals(12)
    stubs = {INCEPTION: StubExtractor(INCEPTION), VGG16: StubExtractor(VGG16)}
    kwargs = dict(n_fake=12, batch_size=6, extractors=stubs, use_cache=False, progress=False)
    default = compute_metrics(G, reals, metrics="kid,pr,is", **kwargs)["protocol"]
    assert (default["kid_subsets"], default["pr_k"], default["is_splits"]) == (100, 3, 10)  # the former constants
    chosen = compute_metrics(G, reals, metrics="kid,pr,is", options={"kid": {"subsets": 7}, "pr": {"k": 2},
                                                                     "is": {"splits": 4}}, **kwargs)
    assert (chosen["protocol"]["kid_subsets"], chosen["protocol"]["pr_k"], chosen["protocol"]["is_splits"]) == (7, 2, 4)
    old = compute_metrics(G, reals, metrics="kid", kid_subsets=7, kid_subset_size=5, **kwargs)
    assert (old["protocol"]["kid_subsets"], old["protocol"]["kid_subset_size"]) == (7, 5)
    with pytest.raises(FewshotError, match="has no option"):
        compute_metrics(G, reals, metrics="kid", options={"kid": {"subset": 5}}, **kwargs)


def test_registered_preprocessing_is_each_protocol_bit_for_bit():
    """The generic preprocessing of the registry reproduces pytorch-fid's and torchvision's exactly."""
    from fewshot.extractors import IMAGENET_MEAN, IMAGENET_STD, extractor_spec
    from fewshot.extractors._frozen import FrozenExtractor
    from fewshot.extractors._inception_net import preprocess

    inception = FrozenExtractor(extractor_spec(INCEPTION), nn.Identity(), "test")
    vgg = FrozenExtractor(extractor_spec(VGG16), nn.Identity(), "test")
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for res in (48, 320):  # upsampled, and shrunk (antialiased for VGG-16 only)
        images = random_reals(2, res=res, seed=res)
        assert torch.equal(inception.prepare(images), preprocess(images))
        x = F.interpolate(images.float() / 255, size=(224, 224), mode="bilinear", align_corners=False,
                          antialias=res > 224)
        assert torch.equal(vgg.prepare(images), (x - mean) / std)
