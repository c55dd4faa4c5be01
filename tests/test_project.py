"""Projection (NVIDIA's projector recipe), projected_w.npz, rendering through a fine-tune, SeFa directions and edits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_G, perturb_
from PIL import Image

from fewshot.checkpoint import save_bundle
from fewshot.editing import edit_ws, load_directions, sefa_directions, style_affines
from fewshot.errors import FewshotError
from fewshot.perceptual import load_lpips
from fewshot.projector import (
    ProjectSettings,
    load_projected_w,
    noise_regularization,
    project,
    render_ws,
    save_projected_w,
    w_stats,
)

STEPS = 100  # enough for a tiny G (the official 1000 are for 512-dim ws at 1024 px)


def in_range_G(seed: int = 3) -> torch.nn.Module:
    """A tiny G whose images lie mostly inside [-1, 1] (the perturbed test nets saturate half their pixels,
    and a clipped target is no image the generator draws) and whose noise strengths are zero: the projector
    redraws the noise maps from its seed, so the stored ones the target was drawn with cannot come back."""
    G = make_tiny_G(seed).eval().requires_grad_(False)
    with torch.no_grad():
        for name, tensor in G.named_parameters():
            if name.endswith(("torgb.weight", "torgb.bias")):
                tensor.mul_(0.25)
            if name.endswith("noise_strength"):
                tensor.zero_()
    return G


@pytest.fixture(scope="module")
def G() -> torch.nn.Module:
    return in_range_G()


@pytest.fixture(scope="module")
def lpips():
    return load_lpips(random_trunk=True, seed=1)


@pytest.fixture(scope="module")
def known(G):
    """A w the generator draws (seed 5's, truncated 0.7 towards the sampled average) and its image. Projection is
    a non-convex search: from w_avg, 100 steps reach seeds 2, 3 and 5 of 0-5 here, the others stop in another
    basin (as real projections of some photos do)."""
    w_avg, _ = w_stats(G)
    z = torch.from_numpy(np.random.RandomState(5).randn(1, G.z_dim)).float()
    w_true = w_avg[0].lerp(G.mapping(z, None), 0.7)
    return w_true, render_ws(G, w_true)[0], w_avg


@pytest.fixture(scope="module")
def projection(G, lpips, known):
    return project(G, known[1], lpips, ProjectSettings(steps=STEPS), seed=1)


def _mean_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def test_projecting_a_drawn_image_recovers_its_w(G, known, projection):
    w_true, target, w_avg = known
    start = render_ws(G, w_avg.expand(1, G.num_ws, G.w_dim))[0]
    found = render_ws(G, projection.w, projection.noise)[0]
    assert _mean_abs(found, target) < 0.1 * _mean_abs(start, target)
    start_dist = float((w_avg[0, 0] - w_true[0, 0]).norm())
    assert float((projection.w[0] - w_true[0]).norm(dim=-1).max()) < 0.2 * start_dist
    assert projection.distances[-1] < 0.02 * projection.distances[0]
    assert projection.w.shape == (1, G.num_ws, G.w_dim) and projection.w_steps.shape == (STEPS, G.num_ws, G.w_dim)
    assert torch.equal(projection.w[0], projection.w_steps[-1])
    for buf in projection.noise.values():  # renormalised after every step
        assert abs(float(buf.mean())) < 1e-5 and abs(float(buf.square().mean()) - 1) < 1e-4


def test_wplus_optimises_a_w_per_layer(G, lpips, known):
    found = project(G, known[1], lpips, ProjectSettings(steps=4, wplus=True), seed=1)
    assert not torch.equal(found.w[0, 0], found.w[0, 1])
    one = project(G, known[1], lpips, ProjectSettings(steps=4), seed=1)
    assert torch.equal(one.w[0, 0], one.w[0, -1])
    again = project(G, known[1], lpips, ProjectSettings(steps=4), seed=1)
    assert torch.equal(one.w, again.w)  # the seed fixes the noise maps and the w noise


def test_learning_rate_ramp_and_noise_regulariser_are_the_official_ones():
    s = ProjectSettings(steps=1000)
    assert s.learning_rate(0) == 0.0
    assert s.learning_rate(25) == pytest.approx(0.05)  # halfway up the linear rampup
    assert s.learning_rate(500) == pytest.approx(0.1)
    assert s.learning_rate(875) == pytest.approx(0.05)  # halfway down the cosine rampdown
    assert s.w_noise_scale(0, 2.0) == pytest.approx(0.1) and s.w_noise_scale(750, 2.0) == 0.0
    assert isinstance(s.w_noise_scale(10, 2.0), np.float32)  # the official float32 arithmetic, to the last bit
    flat = torch.ones(16, 16)  # perfectly correlated: (1)^2 twice at 16, 8
    assert float(noise_regularization([flat])) == pytest.approx(4.0)


def test_projected_w_round_trips_and_renders_proj_png(tmp_path, G, projection):
    path = save_projected_w(tmp_path / "projected_w.npz", projection.w, projection.noise)
    with np.load(path) as npz:  # the official layout: key w, float32 [1, num_ws, w_dim]
        assert npz["w"].dtype == np.float32 and npz["w"].shape == (1, G.num_ws, G.w_dim)
    ws, noise = load_projected_w(path, G)
    assert torch.equal(ws, projection.w)
    assert torch.equal(render_ws(G, ws, noise), render_ws(G, projection.w, projection.noise))
    np.savez(tmp_path / "official.npz", w=projection.w[:, :1].numpy())  # a w broadcast to every layer
    assert load_projected_w(tmp_path / "official.npz", G)[0].shape == (1, G.num_ws, G.w_dim)
    np.savez(tmp_path / "bad.npz", w=np.zeros((1, 3, 7), np.float32))
    with pytest.raises(FewshotError, match="takes"):
        load_projected_w(tmp_path / "bad.npz", G)


def test_sefa_directions_are_orthonormal_and_the_top_one_moves_the_image_most(G):
    found = sefa_directions(G, k=6)
    torch.testing.assert_close(found.vectors @ found.vectors.T, torch.eye(6), atol=1e-5, rtol=0)
    assert bool((found.eigenvalues[:-1] >= found.eigenvalues[1:]).all())
    assert [len(a) for a in style_affines(G)] == [1] * G.num_ws  # one affine per w; the last: the final ToRGB
    ws = G.mapping(torch.from_numpy(np.random.RandomState(0).randn(8, G.z_dim)).float(), None)
    layers = range(G.num_ws)

    def change(direction: torch.Tensor) -> float:
        moved = edit_ws(ws, direction, [-1.0, 1.0], layers)
        images = [G.synthesis(m, noise_mode="const").float() for m in moved]
        return float((images[1] - images[0]).abs().mean())

    rng = torch.Generator().manual_seed(0)
    randoms = [torch.randn(G.w_dim, generator=rng) for _ in range(6)]
    top = change(found.vectors[0])
    assert all(top > change(r / r.norm()) for r in randoms)


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from fewshot.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.fixture
def random_lpips(monkeypatch):
    """The CLI's LPIPS with a random trunk (no VGG-16 file here)."""
    real = load_lpips
    monkeypatch.setattr("fewshot.perceptual.load_lpips", lambda *a, device="cpu", **k: real(random_trunk=True, seed=1))


def test_cli_project_renders_through_a_fine_tune_and_sample_w_renders_it_again(tmp_path, G, known, random_lpips,
                                                                               capsys):
    base = save_bundle(tmp_path / "base.safetensors", {"G_ema": G})
    tuned_G = perturb_(in_range_G(), seed=9, scale=0.05)
    run = tmp_path / "run"
    run.mkdir()
    tuned = save_bundle(run / "final.safetensors", {"G_ema": tuned_G})  # a run folder stands for its export
    photo = tmp_path / "photo.png"
    Image.fromarray(known[1].permute(1, 2, 0).numpy()).resize((48, 40)).save(photo)  # not square: cropped
    out = tmp_path / "out"
    code, stdout, err = run_cli(["project", str(photo), "--ckpt", str(base), "--render-with", str(run),
                                 "--steps", "8", "--outdir", str(out), "--device", "cpu", "--video"], capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"target.png", "proj.png", "projected_w.npz", "rendered.png", "sheet.png",
                                               "proj.mp4"}
    assert Image.open(out / "sheet.png").size == (3 * 32, 32)
    w, noise = load_projected_w(out / "projected_w.npz", G)
    rendered = np.asarray(Image.open(out / "rendered.png")).transpose(2, 0, 1)
    assert np.array_equal(rendered, render_ws(tuned_G, w, noise)[0].numpy())
    assert not np.array_equal(rendered, np.asarray(Image.open(out / "proj.png")).transpose(2, 0, 1))

    again = tmp_path / "again"
    code, _, err = run_cli(["sample", str(base), "--w", str(out / "projected_w.npz"), "--outdir", str(again),
                            "--device", "cpu"], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(again / "proj00.png")), np.asarray(Image.open(out / "proj.png")))
    code, _, err = run_cli(["sample", str(tuned), "--w", str(out / "projected_w.npz"), "--outdir", str(tmp_path / "t"),
                            "--psi", "0.5", "--device", "cpu"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["project", str(photo), "--ckpt", str(base), "--outdir", str(out), "--steps", "2"], capsys)
    assert code == 1 and "exists" in err and "Traceback" not in err


def test_cli_directions_and_edit_with_a_bases_directions_on_its_fine_tune(tmp_path, G, capsys):
    base = save_bundle(tmp_path / "base.safetensors", {"G_ema": G})
    tuned = save_bundle(tmp_path / "tuned.safetensors", {"G_ema": perturb_(in_range_G(), seed=9, scale=0.05)})
    directions = tmp_path / "dirs.npz"
    code, _, err = run_cli(["directions", str(base), "--k", "3", "--out", str(directions), "--seeds", "0-1",
                            "--device", "cpu"], capsys)
    assert code == 0, err
    assert load_directions(directions, G.w_dim).vectors.shape == (3, G.w_dim)
    assert Image.open(tmp_path / "dirs.png").size == (7 * 32, 3 * 2 * 32)
    code, _, err = run_cli(["edit", str(tuned), "--directions", str(directions), "--seeds", "0-2", "--direction", "1",
                            "--layers", "0-3", "--out", str(tmp_path / "edit.png"), "--device", "cpu"], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "edit.png").size == (7 * 32, 3 * 32)
    np.savez(tmp_path / "w.npz", w=G.mapping(torch.zeros(1, G.z_dim), None).numpy())
    code, _, err = run_cli(["edit", str(base), "--w", str(tmp_path / "w.npz"), "--direction", "0", "--frames", "4",
                            "--out", str(tmp_path / "edit.gif"), "--device", "cpu"], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "edit.gif").n_frames == 4
    code, _, err = run_cli(["edit", str(base), "--seeds", "0", "--direction", "5", "--directions", str(directions),
                            "--out", str(tmp_path / "x.png")], capsys)
    assert code == 1 and "out of range" in err


def test_cli_project_offline_without_vgg16_is_one_line(tmp_path, G, known, monkeypatch, capsys):
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    base = save_bundle(tmp_path / "base.safetensors", {"G_ema": G})
    photo = tmp_path / "photo.png"
    Image.fromarray(known[1].permute(1, 2, 0).numpy()).save(photo)
    code, stdout, err = run_cli(["project", str(photo), "--ckpt", str(base), "--outdir", str(tmp_path / "o"),
                                 "--steps", "2", "--device", "cpu"], capsys)
    assert code == 1
    assert err.startswith("error: ") and "vgg16" in err.lower() and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
