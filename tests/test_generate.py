"""Generation: seeded latents as the official tools draw them, truncation, walks, mixing sheets, CLI errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_G
from float32_bounds import assert_network_close
from official_format import make_official_pickle
from PIL import Image

from fewshot import generate as gen
from fewshot import image_output
from fewshot.checkpoint import save_bundle
from fewshot.errors import FewshotError

SEEDS = [0, 1, 42, 85, 1000]


@pytest.fixture(scope="module")
def G() -> torch.nn.Module:
    return make_tiny_G(3).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, G: torch.nn.Module) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "G.safetensors"
    return save_bundle(path, {"G_ema": G})


def official_image(G: torch.nn.Module, seed: int, psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
    """The official generate.py recipe for one seed, spelled out: float64 latent, one forward, quantise."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim))
    with torch.no_grad():
        img = G(z, None, truncation_psi=psi, noise_mode=noise_mode)
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.to(torch.int16) - b.to(torch.int16)).abs().max())


# ------------------------------------------------------------------------------------------ parsing


def test_parse_seeds_ranges_lists_and_order() -> None:
    assert gen.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert gen.parse_seeds(" 10 , 2-3 ") == [10, 2, 3]
    assert gen.parse_seeds("5") == [5]
    assert gen.parse_seeds("4294967295") == [2**32 - 1]


@pytest.mark.parametrize("text", ["", "1,,2", "a", "3-1", "-5", "1-", "1.5", "4294967296", "0-x"])
def test_parse_seeds_rejects_malformed(text: str) -> None:
    with pytest.raises(FewshotError):
        gen.parse_seeds(text)


def test_parse_grid() -> None:
    assert gen.parse_grid("2x3") == gen.GridShape(rows=2, cols=3)
    assert gen.parse_grid("8X8").cells == 64
    for bad in ("3", "0x4", "2x", "axb", "2x3x4"):
        with pytest.raises(FewshotError):
            gen.parse_grid(bad)


# ------------------------------------------------------------------------------------------ latents


def test_seed_latents_are_the_official_randomstate_draws() -> None:
    seeds = [0, 7, 2**32 - 1]
    z = gen.seed_latents(seeds, 512)
    expected = np.concatenate([np.random.RandomState(s).randn(1, 512) for s in seeds])
    assert z.dtype == torch.float32 and z.shape == (3, 512)
    assert torch.equal(z, torch.from_numpy(expected).float())


def test_trunc_z_redraws_only_outliers_deterministically() -> None:
    plain = gen.seed_latent(11, 512)
    truncated = gen.seed_latent(11, 512, trunc_z=1.0)
    assert np.abs(truncated).max() <= 1.0
    inside = np.abs(plain) <= 1.0
    assert np.array_equal(truncated[inside], plain[inside])
    assert not np.array_equal(truncated, plain)
    assert np.array_equal(truncated, gen.seed_latent(11, 512, trunc_z=1.0))
    with pytest.raises(FewshotError):
        gen.seed_latents([1], 8, trunc_z=0.0)


# ------------------------------------------------------------------------------------------ sampling


def test_batched_sampling_matches_the_official_per_seed_recipe(G: torch.nn.Module) -> None:
    for psi in (1.0, 0.6):
        batched = gen.generate_images(G, SEEDS, psi=psi, batch_size=len(SEEDS))
        for seed, image in zip(SEEDS, batched, strict=True):
            assert max_diff(image, official_image(G, seed, psi)) <= 1


def test_sampling_twice_gives_identical_bytes(tmp_path: Path, G: torch.nn.Module) -> None:
    for mode in ("const", "random"):
        runs = []
        for name in ("a", "b"):
            gen.sample_to_folder(G, SEEDS, tmp_path / mode / name, psi=0.7, noise_mode=mode,
                                 grid=gen.GridShape(2, 2), batch_size=2)
            runs.append({p.name: p.read_bytes() for p in sorted((tmp_path / mode / name).iterdir())})
        assert runs[0] == runs[1]
        assert set(runs[0]) == {f"seed{s:04d}.png" for s in SEEDS} | {"grid.png"}


def test_psi_zero_gives_the_w_avg_image_for_every_seed(G: torch.nn.Module) -> None:
    images = gen.generate_images(G, SEEDS, psi=0.0)
    w_avg = G.mapping.w_avg.reshape(1, 1, -1).repeat(1, G.num_ws, 1)
    with torch.no_grad():
        expected = gen.to_uint8(G.synthesis(w_avg, noise_mode="const"))[0]
    assert all(max_diff(image, expected) <= 1 for image in images)
    assert max_diff(gen.generate_images(G, [1], psi=1.0)[0], expected) > 1  # w_avg is not every image


def test_psi_one_equals_no_truncation(G: torch.nn.Module) -> None:
    z = gen.seed_latents(SEEDS, G.z_dim)
    with torch.no_grad():
        untruncated = G.mapping(z, None)
    assert torch.equal(gen.seeds_to_ws(G, SEEDS, psi=1.0), untruncated)
    assert torch.equal(gen.seeds_to_ws(G, SEEDS, psi=1.0, trunc_cutoff=2), untruncated)


def test_cutoff_touches_only_the_first_k_ws(G: torch.nn.Module) -> None:
    raw = gen.seeds_to_ws(G, SEEDS, psi=1.0)
    cut = gen.seeds_to_ws(G, SEEDS, psi=0.5, trunc_cutoff=3)
    assert torch.equal(cut[:, 3:], raw[:, 3:])
    assert_network_close(cut[:, :3], G.mapping.w_avg.lerp(raw[:, :3], 0.5), [1, 1, 1])  # lerp: 3 roundings at most
    assert not torch.allclose(cut[:, :3], raw[:, :3])


def test_existing_files_are_kept_unless_overwrite(tmp_path: Path, G: torch.nn.Module) -> None:
    gen.sample_to_folder(G, [1, 2], tmp_path)
    marker = tmp_path / "seed0001.png"
    marker.write_bytes(b"user's file")
    report = gen.sample_to_folder(G, [1, 2, 3], tmp_path)
    assert marker.read_bytes() == b"user's file"
    assert [p.name for p in report.written] == ["seed0003.png"] and len(report.kept) == 2
    gen.sample_to_folder(G, [1], tmp_path, overwrite=True)
    assert Image.open(marker).size == (32, 32)


def test_writer_threads_write_the_same_files_in_the_same_order(tmp_path: Path, G: torch.nn.Module) -> None:
    seeds = list(range(10))
    inline = gen.sample_to_folder(G, seeds, tmp_path / "inline", batch_size=3, writers=0)
    threaded = gen.sample_to_folder(G, seeds, tmp_path / "threads", batch_size=3, writers=3)
    assert [p.name for p in threaded.written] == [p.name for p in inline.written] == [f"seed{s:04d}.png" for s in seeds]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(inline.written, threaded.written, strict=True))


def test_image_writer_keeps_few_images_waiting_and_raises_the_first_failure(
    tmp_path: Path, G: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = [torch.full((3, 8, 8), i, dtype=torch.uint8) for i in range(12)]
    with gen.ImageWriter(writers=1) as writer:  # 12 images through a queue of at most 4
        for i, image in enumerate(images):
            writer.submit(image, tmp_path / f"{i}.png", "png")
            assert len(writer._pending) <= 4
    assert [p.name for p in writer.written] == [f"{i}.png" for i in range(12)]
    assert np.asarray(Image.open(tmp_path / "11.png"))[0, 0, 0] == 11

    real_write = gen.write_file

    def failing_write(path: Path, data: bytes) -> None:
        if path.name == "seed0003.png":
            raise FewshotError(f"cannot write {path}: disk full")
        real_write(path, data)

    monkeypatch.setattr(image_output, "write_file", failing_write)  # where ImageWriter looks it up
    with pytest.raises(FewshotError, match="seed0003.png: disk full"):
        gen.sample_to_folder(G, list(range(6)), tmp_path / "full", batch_size=2, writers=2)
    assert not list((tmp_path / "full").glob(".*.tmp"))  # no torn temp files left behind


def test_save_image_grid_layout(tmp_path: Path) -> None:
    images = torch.stack([torch.full((3, 4, 6), 10 * (i + 1), dtype=torch.uint8) for i in range(5)])
    path = gen.save_image_grid(images, tmp_path / "g.png", grid=(3, 2))  # 3 columns, 2 rows
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (8, 18, 3)
    assert pixels[0, 0, 0] == 10 and pixels[0, 6, 0] == 20 and pixels[0, 12, 0] == 30
    assert pixels[4, 0, 0] == 40 and pixels[4, 6, 0] == 50 and pixels[4, 12, 0] == 0  # unfilled cell is black
    with pytest.raises(FewshotError):
        gen.save_image_grid(images, tmp_path / "small.png", grid=(2, 2))


# ------------------------------------------------------------------------------------------ loading


def test_load_generator_prefers_g_ema_and_reads_pickles(tmp_path: Path) -> None:
    G_train, G_ema = make_tiny_G(1).eval(), make_tiny_G(2).eval()
    both = save_bundle(tmp_path / "both.safetensors", {"G": G_train, "G_ema": G_ema})
    only_g = save_bundle(tmp_path / "g.safetensors", {"G": G_train})
    pkl = make_official_pickle(tmp_path / "net.pkl", G_ema=G_ema, snapshot=False)
    reference = official_image(G_ema, 5)
    assert max_diff(gen.generate_images(gen.load_generator(both), [5])[0], reference) <= 1
    assert max_diff(gen.generate_images(gen.load_generator(pkl), [5])[0], reference) <= 1
    assert max_diff(gen.generate_images(gen.load_generator(only_g), [5])[0], official_image(G_train, 5)) <= 1


def test_run_folder_resolves_best_then_final_then_newest_snapshot(tmp_path: Path, G: torch.nn.Module) -> None:
    run = tmp_path / "runs" / "00003-name"
    (run / "checkpoints").mkdir(parents=True)
    for kimg in ("000040", "000120", "000080"):
        save_bundle(run / "checkpoints" / f"snapshot-{kimg}.safetensors", {"G_ema": G})
    assert gen.resolve_run_folder(run).name == "snapshot-000120.safetensors"
    save_bundle(run / "final.safetensors", {"G_ema": G})
    assert gen.resolve_run_folder(run).name == "final.safetensors"
    save_bundle(run / "best.safetensors", {"G_ema": G})
    assert gen.load_generator(run).num_ws == G.num_ws
    assert gen.resolve_run_folder(run).name == "best.safetensors"
    with pytest.raises(FewshotError, match="without a checkpoint"):
        gen.load_generator(tmp_path / "runs")


# ------------------------------------------------------------------------------------------ walks


def test_slerp_endpoints_and_norm() -> None:
    # Float32 rounding (float32_bounds): the 16-term norms and cosine, acos, sines and quotients, the weighted sum;
    # random 16-d directions are far from parallel, where acos would amplify the cosine's rounding.
    ks = [16, 16, 16, 1, 1, 1, 1, 1, 1]
    a, b = torch.randn(4, 16), torch.randn(4, 16)
    assert_network_close(gen.slerp(a, b, 0.0), a, ks)
    assert_network_close(gen.slerp(a, b, 1.0), b, ks)
    unit_a, unit_b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    assert_network_close(gen.slerp(unit_a, unit_b, 0.3).norm(dim=1), torch.ones(4), ks + [16, 16, 1])
    assert_network_close(gen.slerp(a, 2 * a, 0.5), 1.5 * a, ks)  # parallel: plain lerp


def test_walk_frame_counts_and_seamless_loop(G: torch.nn.Module) -> None:
    steps = 4
    looped = list(gen.iter_walk_frames(G, [1, 7, 9], steps=steps, loop=True, psi=0.8, batch_size=5))
    closed = list(gen.iter_walk_frames(G, [1, 7, 9, 1], steps=steps, loop=False, psi=0.8, batch_size=5))
    assert len(looped) == 3 * steps and len(closed) == 3 * steps + 1
    # The looped walk is the closed one minus its repeated last frame: frame "last + 1" is the first.
    for a, b in zip(looped, closed[:-1], strict=True):
        assert max_diff(a, b) <= 1
    assert max_diff(closed[-1], looped[0]) <= 1
    # Keyframes are the seeds' own pictures.
    assert max_diff(looped[0], official_image(G, 1, 0.8)) <= 1
    assert max_diff(looped[steps], official_image(G, 7, 0.8)) <= 1
    z_walk = list(gen.iter_walk_frames(G, [1, 7], steps=3, space="z"))
    assert len(z_walk) == 4 and max_diff(z_walk[-1], official_image(G, 7)) <= 1


def test_walk_grid_tiles_follow_their_own_seeds(G: torch.nn.Module) -> None:
    frames = list(gen.iter_walk_frames(G, [1, 2, 3, 4, 5, 6], steps=2, grid=gen.GridShape(1, 3)))
    assert len(frames) == 3 and frames[0].shape == (3, 32, 96)
    # Tile t walks seeds[2t] -> seeds[2t+1].
    for tile, (first, last) in enumerate([(1, 2), (3, 4), (5, 6)]):
        assert max_diff(frames[0][:, :, 32 * tile : 32 * (tile + 1)], official_image(G, first)) <= 1
        assert max_diff(frames[-1][:, :, 32 * tile : 32 * (tile + 1)], official_image(G, last)) <= 1
    with pytest.raises(FewshotError, match="multiple of 3"):
        list(gen.iter_walk_frames(G, [1, 2, 3, 4], grid=gen.GridShape(1, 3)))


# ------------------------------------------------------------------------------------------ mixing


def test_style_mix_sheet_geometry_and_cells(G: torch.nn.Module) -> None:
    rows, cols, styles = [85, 100], [55, 821, 3], [0, 1, 2]
    sheet = torch.from_numpy(gen.style_mix_sheet(G, rows, cols, styles, psi=0.9))
    assert sheet.shape == (3, 32 * 3, 32 * 4)

    def cell(r: int, c: int) -> torch.Tensor:
        return sheet[:, 32 * r : 32 * (r + 1), 32 * c : 32 * (c + 1)]

    assert int(cell(0, 0).max()) == 0  # top-left blank
    for c, seed in enumerate(cols, start=1):
        assert max_diff(cell(0, c), official_image(G, seed, 0.9)) <= 1
    for r, seed in enumerate(rows, start=1):
        assert max_diff(cell(r, 0), official_image(G, seed, 0.9)) <= 1
    ws = gen.seeds_to_ws(G, rows + cols, psi=0.9)
    mixed = ws[1].clone()  # row 100 with layers 0-2 of column 821
    mixed[styles] = ws[3][styles]
    with torch.no_grad():
        expected = gen.to_uint8(G.synthesis(mixed[None], noise_mode="const"))[0]
    assert max_diff(cell(2, 2), expected) <= 1
    assert max_diff(cell(2, 2), cell(2, 0)) > 1 and max_diff(cell(2, 2), cell(0, 2)) > 1
    # Taking every layer from the column seed gives the column's picture.
    full = torch.from_numpy(gen.style_mix_sheet(G, [85], [55], list(range(G.num_ws))))
    assert max_diff(full[:, 32:, 32:], full[:, :32, 32:]) <= 1


# ------------------------------------------------------------------------------------------ CLI


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from fewshot.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_cli_sample_writes_seed_files_and_grid(tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["sample", str(bundle), "--n", "6", "--grid", "2x3", "--outdir", str(out),
                               "--psi", "0.7", "--batch", "4"], capsys)
    assert code == 0, stdout
    assert sorted(p.name for p in out.iterdir()) == ["grid.png"] + [f"seed{i:04d}.png" for i in range(6)]
    assert Image.open(out / "grid.png").size == (96, 64)
    seed3 = torch.from_numpy(np.array(Image.open(out / "seed0003.png"))).permute(2, 0, 1)
    assert max_diff(seed3, official_image(gen.load_generator(bundle), 3, 0.7)) <= 1
    code, _, _ = run_cli(["sample", str(bundle), "--seeds", "7", "--outdir", str(out), "--format", "jpg"], capsys)
    assert code == 0 and Image.open(out / "seed0007.jpg").format == "JPEG"


def test_cli_interpolate_gif_loops_with_expected_frames(tmp_path: Path, bundle: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    gif = tmp_path / "walk.gif"
    code, _, err = run_cli(["interpolate", str(bundle), "--seeds", "1,7,9", "--steps", "5", "--loop",
                            "--fps", "25", "--out", str(gif), "--strip"], capsys)
    assert code == 0, err
    with Image.open(gif) as im:
        assert im.n_frames == 15 and im.info["loop"] == 0 and im.info["duration"] == 40
    assert Image.open(tmp_path / "walk-strip.png").size == (15 * 32, 32)
    frames = tmp_path / "frames"
    code, _, err = run_cli(["interpolate", str(bundle), "--seeds", "1,7", "--steps", "3", "--out", f"{frames}/"],
                           capsys)
    assert code == 0, err
    assert sorted(p.name for p in frames.iterdir()) == [f"frame{i:05d}.png" for i in range(4)]


def test_cli_interpolate_mp4(tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    mp4 = tmp_path / "walk.mp4"
    code, _, err = run_cli(["interpolate", str(bundle), "--seeds", "1,2", "--steps", "6", "--loop",
                            "--space", "z", "--out", str(mp4)], capsys)
    assert code == 0, err
    reader = imageio_ffmpeg.read_frames(str(mp4))
    meta = next(reader)
    assert meta["size"] == (32, 32) and sum(1 for _ in reader) == 12


def test_cli_mix_sheet(tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mix.png"
    code, _, err = run_cli(["mix", str(bundle), "--rows", "85,100,75", "--cols", "55,821", "--styles", "0-6",
                            "--out", str(out)], capsys)
    assert code == 0, err
    assert Image.open(out).size == (3 * 32, 4 * 32)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sample", "{ckpt}", "--seeds", "1-x"], "malformed seed"),
        (["sample", "{ckpt}", "--psi", "3"], "psi"),
        (["sample", "{ckpt}", "--seeds", "1-4", "--grid", "3x3"], "needs 9 seeds"),
        (["sample", "{ckpt}", "--format", "bmp"], "image format"),
        (["sample", "{ckpt}", "--outdir", "{blocker}/sub"], "cannot create output folder"),
        (["sample", "{ckpt}", "--trunc-cutoff", "99", "--outdir", "{tmp}/o"], "trunc-cutoff"),
        (["sample", "{tmp}/missing.safetensors", "--outdir", "{tmp}/o"], "missing.safetensors"),
        (["sample", "{ckpt}", "--seeds", "1", "--n", "4"], "either --seeds or --n"),
        (["sample", "{ckpt}", "--writers", "-1"], "--writers"),
        (["interpolate", "{ckpt}", "--seeds", "1", "--out", "{tmp}/w.gif"], "a walk needs at least 2 seeds"),
        (["interpolate", "{ckpt}", "--seeds", "1,2", "--out", "{tmp}/w.avi"], "unknown output"),
        (["interpolate", "{ckpt}", "--seeds", "1,2", "--space", "q", "--out", "{tmp}/w.gif"], "latent space"),
        (["mix", "{ckpt}", "--rows", "1", "--cols", "2", "--styles", "0-40", "--out", "{tmp}/m.png"], "style layer"),
        (["mix", "{ckpt}", "--rows", "1", "--cols", "2", "--out", "{tmp}/m.tiff"], "image format"),
    ],
)
def test_cli_bad_input_is_one_error_line(
    args: list[str], needle: str, tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should go")
    filled = [a.format(ckpt=bundle, tmp=tmp_path, blocker=blocker) for a in args]
    code, _, err = run_cli(filled, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert len(lines) <= 2 and "Traceback" not in err  # the message, at most one hint


def test_cli_mp4_without_imageio_ffmpeg_says_what_to_install(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import now raises ImportError
    code, _, err = run_cli(["interpolate", str(bundle), "--seeds", "1,2", "--out", str(tmp_path / "w.mp4")], capsys)
    assert code == 1 and "imageio-ffmpeg" in err and "fewshot[video]" in err
    assert not (tmp_path / "w.mp4").exists()
