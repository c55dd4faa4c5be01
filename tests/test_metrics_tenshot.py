"""The ten-shot metrics: SWD (ProGAN's, no weights), intra-cluster LPIPS (CDC's), copies; images from a folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from test_metrics import _run_cli

from fewshot.errors import FewshotError
from fewshot.metrics import _swd as swd_math
from fewshot.metrics import compute_metrics_of_images, summary_lines


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Offline, empty caches: no weights can be found or fetched (the LPIPS tests patch in a random trunk)."""
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    monkeypatch.setenv("FEWSHOT_OPS", "reference")
    monkeypatch.delenv("FEWSHOT_WEIGHTS_VGG16", raising=False)


@pytest.fixture(scope="module")
def seeded_lpips():
    from fewshot.perceptual import load_lpips

    return load_lpips(random_trunk=True, seed=1)  # built once: a random VGG-16 takes seconds to initialise


@pytest.fixture
def random_lpips(monkeypatch, seeded_lpips):
    """LPIPS-VGG with a seeded random trunk and the published linear layers, wherever the metrics load it."""
    monkeypatch.setattr("fewshot.perceptual.load_lpips", lambda *args, **kwargs: seeded_lpips)
    return seeded_lpips


def smooth_images(n: int, res: int = 32, seed: int = 0) -> torch.Tensor:
    """Images with structure at every scale (upsampled noise of several octaves), uint8 [n, 3, res, res]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, res, res)
    for octave in (4, 8, 16):
        x += F.interpolate(torch.randn(n, 3, octave, octave, generator=g), size=res, mode="bilinear",
                           align_corners=False) * (16 / octave)
    return (128 + 24 * x).round().clamp(0, 255).to(torch.uint8)


def with_noise(images: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * sigma
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def _measure(fakes, reals, metrics, **kwargs):
    return compute_metrics_of_images(fakes, reals, metrics=metrics, use_cache=False, progress=False, **kwargs)


# --------------------------------------------------------------------------------------------
# SWD


def test_wasserstein_1d_of_unequal_sets_is_scipys():
    a = torch.randn(3, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b = torch.randn(3, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.3
    want = [scipy.stats.wasserstein_distance(a[k].numpy(), b[k].numpy()) for k in range(3)]
    torch.testing.assert_close(swd_math.wasserstein_1d(a, b), torch.tensor(want, dtype=torch.float64),
                               rtol=1e-12, atol=0)
    # Equal sizes: ProGAN's mean absolute difference of the sorted projections.
    c = a[:, :7]
    torch.testing.assert_close(swd_math.wasserstein_1d(c, b), (c.sort(1).values - b.sort(1).values).abs().mean(1),
                               rtol=1e-12, atol=0)


def test_the_laplacian_pyramid_is_exact_and_its_filter_keeps_constants():
    images = smooth_images(2, 64)
    pyramid = swd_math.laplacian_pyramid(images, 3)
    assert [tuple(level.shape[-2:]) for level in pyramid] == [(64, 64), (32, 32), (16, 16)]
    rebuilt = pyramid[-1]
    for band in pyramid[-2::-1]:
        rebuilt = swd_math.pyr_up(rebuilt, band.shape[-2:]) + band
    # float32 sums of <= 25 products of values <= 255: a few ulps of 255 per level.
    torch.testing.assert_close(rebuilt, images.float(), rtol=0, atol=1e-3)
    flat = torch.full((1, 3, 32, 32), 77.0)
    torch.testing.assert_close(swd_math.pyr_down(flat), torch.full((1, 3, 16, 16), 77.0), rtol=0, atol=1e-4)
    torch.testing.assert_close(swd_math.pyr_up(flat, (64, 64)), torch.full((1, 3, 64, 64), 77.0), rtol=0, atol=1e-4)


def test_patches_are_the_pixels_at_their_positions():
    level = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    y, x = torch.tensor([[0, 9], [4, 2]]), torch.tensor([[9, 0], [3, 5]])
    patches = swd_math.gather_patches(level, y, x).view(2, 2, 3, 7, 7)
    for i in range(2):
        for p in range(2):
            want = level[i, :, y[i, p]:y[i, p] + 7, x[i, p]:x[i, p] + 7]
            assert torch.equal(patches[i, p], want)


def test_swd_of_a_set_with_itself_is_zero_and_grows_with_the_noise():
    reals = smooth_images(16, 32)
    result = _measure(reals, reals, "swd")
    assert result["swd"] == 0.0 and result["protocol"]["swd_levels"] == [32, 16]
    values = [_measure(with_noise(reals, sigma), reals, "swd")["swd"] for sigma in (4, 16, 48)]
    assert 0 < values[0] < values[1] < values[2], values
    assert summary_lines(result)[0].startswith("  SWD        0.0000  (x1e3; 32px 0.00  16px 0.00)")


def test_swd_is_deterministic_given_the_seed_and_takes_unequal_sets():
    reals, fakes = smooth_images(4, 32), with_noise(smooth_images(12, 32, seed=2), 8)
    first = _measure(fakes, reals, "swd", seed=3)
    assert _measure(fakes, reals, "swd", seed=3)["swd"] == first["swd"]
    assert _measure(fakes, reals, "swd", seed=4)["swd"] != first["swd"]
    assert first["swd"] == pytest.approx((first["swd_32"] + first["swd_16"]) / 2, rel=1e-12)
    # The same draws in one batch or many.
    assert _measure(fakes, reals, "swd", seed=3, batch_size=5)["swd"] == first["swd"]


def test_swd_levels_stop_at_16_px_and_smaller_images_are_refused():
    assert swd_math.pyramid_resolutions(256) == [256, 128, 64, 32, 16]
    assert swd_math.pyramid_resolutions(16) == [16]
    tiny = smooth_images(3, 8)
    with pytest.raises(FewshotError, match="at least 16 px"):
        _measure(tiny, tiny, "swd")


# --------------------------------------------------------------------------------------------
# Intra-cluster LPIPS and copies (a random-trunk LPIPS: the arithmetic is what is tested)


def _clusters(sigmas, members=4, res=32):
    """Three training images and, around each, ``members`` noisy variants at that cluster's noise level."""
    reals = smooth_images(3, res, seed=10)
    fakes = [with_noise(reals[c:c + 1].repeat(members, 1, 1, 1), sigma, seed=20 + c) for c, sigma in enumerate(sigmas)]
    return torch.cat(fakes), reals


def _pairwise_mean(lpips64, images):
    from fewshot.perceptual import uint8_to_lpips

    pairs = [(i, j) for i in range(len(images)) for j in range(i + 1, len(images))]
    a = uint8_to_lpips(images[[i for i, _ in pairs]]).double()
    b = uint8_to_lpips(images[[j for _, j in pairs]]).double()
    return float(lpips64(a, b).mean()) if pairs else math.nan


def test_intra_lpips_on_constructed_clusters_is_the_mean_of_the_pairwise_means(random_lpips):
    fakes, reals = _clusters((6, 12, 24))
    result = _measure(fakes, reals, "intra-lpips")
    import copy

    reference = copy.deepcopy(random_lpips).double()  # the package's forward, pair by pair, in float64
    direct = [_pairwise_mean(reference, fakes[4 * c:4 * c + 4]) for c in range(3)]
    assert result["protocol"]["intra_lpips_cluster_sizes"] == [4, 4, 4]
    # The embedding route against the package's forward: float32 features, ~1e-6 relative.
    assert result["intra-lpips"] == pytest.approx(sum(direct) / 3, rel=1e-4)
    assert result["intra-lpips_std"] == pytest.approx(float(torch.tensor(direct).std()), rel=1e-3)
    assert direct[0] < direct[1] < direct[2]  # more varied variants, more diverse clusters

    # A generator that copies its training images has no diversity; a lone member's cluster has no pairs.
    copies = torch.cat([reals[:1].repeat(3, 1, 1, 1), reals[1:2].repeat(2, 1, 1, 1), reals[2:]])
    collapsed = _measure(copies, reals, "intra-lpips")
    assert collapsed["intra-lpips"] < 1e-6 and collapsed["protocol"]["intra_lpips_cluster_sizes"] == [3, 2, 1]
    assert collapsed["protocol"]["intra_lpips_clusters_used"] == 2


def test_intra_lpips_compares_at_most_cluster_size_members(random_lpips):
    fakes, reals = _clusters((8, 8, 8), members=5)
    result = _measure(fakes, reals, "intra-lpips", options={"intra-lpips": {"cluster_size": 2}})
    assert result["protocol"]["intra_lpips_cluster_size"] == 2
    # With two members per cluster the mean is one pair's distance, so it is one of the cluster's distances.
    from fewshot.metrics._lpips_sets import lpips_distances

    d = lpips_distances(random_lpips, fakes)
    per_cluster = [d[5 * c:5 * c + 5, 5 * c:5 * c + 5] for c in range(3)]
    assert min(float(p[p > 0].min()) for p in per_cluster) <= result["intra-lpips"]
    assert result["intra-lpips"] <= max(float(p.max()) for p in per_cluster)


def test_lpips_distances_in_chunks_are_the_same_as_in_one(random_lpips):
    from fewshot.metrics._lpips_sets import lpips_distances

    x, y = smooth_images(5, 32, seed=1), smooth_images(3, 32, seed=2)
    whole = lpips_distances(random_lpips, x, y)
    one_image_per_chunk = lpips_distances(random_lpips, x, y, batch_size=2, budget=1)
    # Batches of another size take other float32 kernel blockings in the trunk: summation order only, ~1e-7
    # relative per feature, well under 1e-5 in a distance of ~0.1.
    torch.testing.assert_close(one_image_per_chunk, whole, rtol=1e-5, atol=1e-7)
    self_whole = lpips_distances(random_lpips, x)
    torch.testing.assert_close(lpips_distances(random_lpips, x, budget=1), self_whole, rtol=1e-5, atol=1e-7)
    assert float(self_whole.diagonal().abs().max()) < 1e-6 and torch.allclose(self_whole, self_whole.T, atol=1e-6)


def test_copies_flags_the_training_set_and_not_other_pictures(random_lpips, tmp_path):
    reals = smooth_images(8, 32, seed=30)
    same = _measure(reals, reals, "copies", sheets_dir=tmp_path / "sheets")
    assert same["copies"] == 1.0 and same["copies_lpips"] == 1.0 and same["copies_pixel"] == 1.0
    sheet = tmp_path / "sheets" / "copies.png"
    assert same["protocol"]["sheets"] == {"copies": str(sheet)}
    from PIL import Image

    with Image.open(sheet) as opened:  # 8 rows of sample | nearest, 2 px gaps, 32 px shown 4x
        assert opened.size == (2 * 128 + 2, 8 * 128 + 7 * 2)
        pixels = torch.from_numpy(np.asarray(opened).copy()).permute(2, 0, 1)
    first = same["protocol"]["copies_closest"][0]["sample"]
    assert torch.equal(pixels[:, :128:4, :128:4], reals[first]) and torch.equal(pixels[:, :128:4, 130::4], reals[first])
    closest = same["protocol"]["copies_closest"]
    assert all(pair["sample"] == pair["train"] and pair["lpips"] < 1e-6 for pair in closest)

    others = _measure(smooth_images(12, 32, seed=31), reals, "copies")
    assert others["copies"] == 0.0
    assert others["protocol"]["copies_lpips_threshold"] == pytest.approx(
        0.5 * others["protocol"]["copies_lpips_median_nn"], rel=1e-12)
    # Half of them copied (slightly re-encoded), half new: half flagged.
    mixed = torch.cat([with_noise(reals[:6], 2), smooth_images(6, 32, seed=32)])
    assert _measure(mixed, reals, "copies")["copies"] == 0.5


# --------------------------------------------------------------------------------------------
# The command line: a folder of generated images, the sheet, the offline line


def _write(folder, images):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")


def test_cli_measures_a_folder_of_generated_images(tmp_path, capsys, random_lpips):
    reals = smooth_images(6, 32, seed=40)
    _write(tmp_path / "train", reals)
    _write(tmp_path / "samples", torch.cat([reals[:3], smooth_images(3, 32, seed=41)]))
    args = ["metrics", "--fake", str(tmp_path / "samples"), "--data", str(tmp_path / "train"), "--metrics",
            "swd,copies,intra-lpips", "--out", str(tmp_path / "report"), "--json", str(tmp_path / "m.json"), "-q"]
    code, out, err = _run_cli(args, capsys)
    assert code == 0, err
    assert "6 generated vs 6 real images at 32px" in out and "psi" not in out
    assert "SWD" in out and "intra-LPIPS" in out and "copies     0.5000" in out
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["copies"] == 0.5 and saved["protocol"]["generated_source"] == str(tmp_path / "samples")
    assert (tmp_path / "report" / "copies.png").is_file() and str(tmp_path / "report" / "copies.png") in out
    # The folder against itself: SWD exactly 0, every image a copy.
    code, out, err = _run_cli(["metrics", "--fake", str(tmp_path / "train"), "--data", str(tmp_path / "train"),
                               "--metrics", "swd,copies", "--out", str(tmp_path / "r2"), "-q"], capsys)
    assert code == 0, err
    assert "SWD        0.0000" in out and "copies     1.0000" in out


def test_cli_folder_bad_input_and_offline_lpips_are_one_line(tmp_path, capsys):
    _write(tmp_path / "train", smooth_images(3, 32))
    train = str(tmp_path / "train")
    for args, words in [
        (["metrics", "--data", train], "give a checkpoint or --fake"),
        (["metrics", "G.safetensors", "--fake", train, "--data", train], "give a checkpoint or --fake"),
        (["metrics", "--fake", train, "--data", train, "--n", "10"], "--n sets how many"),
        (["metrics", "--fake", str(tmp_path / "nowhere"), "--data", train], "does not exist"),
        # No VGG-16 file, offline: one line that names the flag for it.
        (["metrics", "--fake", train, "--data", train, "--metrics", "copies"], "--vgg-weights"),
    ]:
        code, _, err = _run_cli([*args, "-q"], capsys)
        assert code == 1 and err.startswith("error:") and words in err and "Traceback" not in err, (args, err)
    # SWD needs nothing: it works offline with no weights anywhere.
    code, out, err = _run_cli(["metrics", "--fake", train, "--data", train, "--metrics", "swd", "-q"], capsys)
    assert code == 0 and "SWD" in out, err


# --------------------------------------------------------------------------------------------
# During training: SWD keeps best.safetensors with no weights


def test_swd_during_training_keeps_best_offline(tmp_path, random_lpips):
    from test_train import TINY

    from fewshot.checkpoint import load_bundle
    from fewshot.config import resolve_config
    from fewshot.train.loop import train

    cfg = resolve_config(None, dict(TINY, outdir=str(tmp_path / "runs"), name="swd", kimg=0.016,
                                    metrics=("swd", "copies"), metrics_every=1, metrics_n=8))
    assert cfg.metrics.best == "swd"  # not chosen: the tracked metric that can keep the best snapshot
    run = train(cfg, progress=False, echo=lambda m: None)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in lines] == [0.008, 0.016] and all(np.isfinite(r["swd"]) for r in lines)
    best = load_bundle(run / "best.safetensors")
    assert best.training["metrics"]["swd"] == min(r["swd"] for r in lines)
    from fewshot.train.run_dir import describe_run

    assert describe_run(run)["best"]["metric"] == "swd"
    assert (run / "copies.png").is_file()  # the copy check's sheet of the last measurement, in the run folder
