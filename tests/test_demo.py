"""The demo of the main job: built-in source/target domains, the shipped base, the before/after sheet."""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshot.data import DEMO_DOMAINS, demo_domain, demo_images, is_builtin_source
from fewshot.errors import FewshotError

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "fewshot" / "assets" / "demo-base.safetensors"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


# ---- the built-in domains --------------------------------------------------------------------------


def test_data_source_names() -> None:
    assert demo_domain("demo") == "discs" and demo_domain("demo:discs") == "discs"
    assert demo_domain("demo:rings") == "rings"
    assert demo_domain("./demo") is None and demo_domain("demos") is None and demo_domain("") is None
    assert is_builtin_source("") and is_builtin_source("demo:rings") and not is_builtin_source("/data/faces")
    with pytest.raises(FewshotError, match="unknown built-in data set 'demo:ringz'") as info:
        demo_domain("demo:ringz")
    assert "demo:rings" in (info.value.hint or "")
    with pytest.raises(FewshotError, match="unknown demo domain"):
        demo_images(4, 8, domain="stripes")


def test_target_domain_differs_measurably_from_the_source() -> None:
    """Rings on dark backgrounds vs discs on pastel gradients: darker overall, and hollow where a disc is full."""
    source, target = demo_images(64, 32, seed=0), demo_images(64, 32, seed=0, domain="rings")
    assert target.images.shape == source.images.shape == (64, 3, 32, 32)
    assert torch.equal(target.images, demo_images(64, 32, seed=0, domain="rings").images)  # deterministic
    luma_source = source.images.float().mean(dim=1)  # [N, H, W], 0-255
    luma_target = target.images.float().mean(dim=1)
    # Most target pixels are background below 40 (the night palette's brightest channel mean is 31);
    # source backgrounds are gradients between palette colours, almost never that dark.
    dark_target = (luma_target < 40).float().mean()
    dark_source = (luma_source < 40).float().mean()
    assert dark_target > 0.6 and dark_source < 0.1, (dark_target, dark_source)
    # Saturation (max - min channel): neon rings are far more saturated than the pastel discs.
    sat = lambda x: (x.images.float().amax(dim=1) - x.images.float().amin(dim=1))  # noqa: E731
    bright_target = luma_target > 80
    assert sat(target)[bright_target].mean() > 1.3 * sat(source)[luma_source > 80].mean()
    assert set(DEMO_DOMAINS) == {"discs", "rings"}


def test_training_images_of_a_builtin_domain_come_from_the_config() -> None:
    from fewshot.config import resolve_config
    from fewshot.train.networks import load_training_images

    cfg = resolve_config(None, {"data": "demo:rings", "max_images": 5})
    images = load_training_images(cfg, 16, progress=False)
    assert torch.equal(images.images, demo_images(5, 16, seed=0, domain="rings").images)
    assert "'rings'" in images.describe()


def test_a_run_on_a_builtin_domain_resumes_on_it() -> None:
    from fewshot.train.run_dir import resumed_data_source

    assert resumed_data_source("demo:rings", None, "latest", print) == ("demo:rings", False)
    assert resumed_data_source("demo:rings", "demo:rings", "latest", print) == ("demo:rings", False)
    with pytest.raises(FewshotError, match="trains on demo:rings, not demo"):
        resumed_data_source("demo:rings", "demo", "latest", print)


# ---- the shipped base -------------------------------------------------------------------------------


def test_shipped_base_resolves_offline_loads_and_is_small(monkeypatch: pytest.MonkeyPatch) -> None:
    from fewshot.checkpoint import load_bundle, read_header
    from fewshot.hub import checkpoint_registry, resolve_checkpoint

    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")  # no download is tried, none is needed
    monkeypatch.delenv("FEWSHOT_CHECKPOINT_REGISTRY", raising=False)
    path = resolve_checkpoint("demo-base", offline=True)
    assert path.resolve() == ASSET.resolve()
    assert path.stat().st_size <= 2 * 2**20
    entry = checkpoint_registry()["demo-base"]
    assert entry.package == "assets/demo-base.safetensors" and entry.resolution == 32 and entry.sha256
    header = read_header(path)
    assert set(header.specs) == {"G_ema", "D"}  # G is left out: a fine-tune starts G from G_ema
    assert header.provenance["made_by"] == "scripts/make_demo_base.py"
    bundle = load_bundle(path)
    G = bundle.generator
    assert G.img_resolution == 32 and G.z_dim == 64
    assert all(t.dtype == torch.float32 for t in bundle.networks["D"].state_dict().values())
    images = G(torch.randn(2, G.z_dim), None, noise_mode="const")
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


def test_the_wheel_carries_the_shipped_base() -> None:
    with open(REPO / "pyproject.toml", "rb") as fh:
        package_data = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["fewshot"]
    relative = ASSET.relative_to(REPO / "fewshot").as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in package_data), package_data


def test_a_package_entry_with_the_wrong_hash_or_no_file_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    from fewshot.hub import resolve_checkpoint

    registry = tmp_path / "reg.toml"
    registry.write_text('[demo-base]\npackage = "assets/demo-base.safetensors"\nsha256 = "' + "0" * 64 + '"\n'
                        '[gone]\npackage = "assets/not-shipped.safetensors"\n')
    monkeypatch.setenv("FEWSHOT_CHECKPOINT_REGISTRY", str(registry))
    with pytest.raises(FewshotError, match="sha256 mismatch"):
        resolve_checkpoint("demo-base", offline=True)
    with pytest.raises(FewshotError, match="missing from this installation"):
        resolve_checkpoint("gone", offline=True)


# ---- the before/after sheet -------------------------------------------------------------------------


def test_sheet_has_the_expected_size_and_panels() -> None:
    from conftest import make_tiny_G

    from fewshot.demo import LABEL_HEIGHT, PANEL_GAP, before_after_sheet
    from fewshot.generate import generate_images, make_grid

    base, tuned = make_tiny_G(0).eval(), make_tiny_G(1).eval()
    reals = demo_images(20, 32, seed=0, domain="rings").images
    seeds, scale = list(range(6)), 2
    sheet = before_after_sheet(base, tuned, reals, seeds, grid=(3, 2), labels=("a", "b", "c"), scale=scale)
    panel_h, panel_w = 2 * 32 * scale, 3 * 32 * scale
    assert sheet.dtype == np.uint8
    assert sheet.shape == (3, LABEL_HEIGHT + panel_h + PANEL_GAP, 3 * panel_w + 4 * PANEL_GAP)

    def panel(i: int) -> np.ndarray:
        x = PANEL_GAP + i * (panel_w + PANEL_GAP)
        return sheet[:, LABEL_HEIGHT:LABEL_HEIGHT + panel_h, x:x + panel_w][:, ::scale, ::scale]

    # Same seeds in both generator panels, the first reals in the middle, pixel for pixel.
    assert np.array_equal(panel(0), make_grid(generate_images(base, seeds), (3, 2)))
    assert np.array_equal(panel(1), make_grid(reals[:6], (3, 2)))
    assert np.array_equal(panel(2), make_grid(generate_images(tuned, seeds), (3, 2)))
    assert (sheet[:, :LABEL_HEIGHT] < 128).any()  # the captions are drawn
    with pytest.raises(FewshotError, match="7 seeds for a 3x2 grid"):
        before_after_sheet(base, tuned, reals, range(7), grid=(3, 2))


# ---- the demo recipe ----------------------------------------------------------------------------------


def test_one_tick_of_the_demo_recipe_runs_and_makes_its_sheet(tmp_path: Path) -> None:
    from PIL import Image

    from fewshot.config import resolve_config
    from fewshot.demo import main as sheet_main
    from fewshot.train.loop import train

    cfg = resolve_config("demo", {"kimg": 0.032, "tick_kimg": 0.032, "outdir": str(tmp_path), "name": "demo"})
    assert (cfg.base, cfg.data, cfg.device) == ("demo-base", "demo:rings", "cpu")
    run = train(cfg, progress=False, echo=lambda m: None)
    assert run is not None and (run / "final.safetensors").is_file()
    assert sheet_main([str(run), "--seeds", "0-3", "--grid", "2x2", "--scale", "1"]) == 0
    with Image.open(run / "before-after.png") as sheet:
        assert sheet.size == (3 * 64 + 4 * 8, 22 + 64 + 8)


def test_the_sheet_needs_a_fine_tuning_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fewshot.checkpoint import save_bundle
    from fewshot.config import resolve_config
    from fewshot.demo import main as sheet_main
    from fewshot.nets import Generator

    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, mapping_kwargs={"num_layers": 1},
                  synthesis_kwargs={"channel_base": 64, "channel_max": 8})
    bundle = save_bundle(tmp_path / "scratch.safetensors", {"G_ema": G},
                         training={"config": resolve_config(None, {"data": "demo"}).to_dict()})
    assert sheet_main([str(bundle)]) == 1
    assert "trained from scratch" in capsys.readouterr().err
