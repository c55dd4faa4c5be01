"""Training engine: config resolution, loss values, exact resume, signals, atomic snapshots, DDP."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from float32_bounds import assert_network_close, fan_ins, fan_outs

from fewshot.checkpoint import load_bundle, save_bundle
from fewshot.config import derive_hyper, resolve_config
from fewshot.errors import FewshotError
from fewshot.nets import Discriminator, Generator
from fewshot.train.loop import lazy_opt_kwargs, train
from fewshot.train.loss import LossWeights, StyleGAN2Loss

REPO = Path(__file__).resolve().parents[1]

TINY = dict(
    data="demo", resolution=32, z_dim=32, w_dim=32, map_layers=2, channel_base=256, channel_max=32,
    num_fp16_res=0, conv_clamp=None, batch=4, mbstd_group=2, tick_kimg=0.008, snap=1, keep=10,
    r1_interval=2, pl_interval=2, pl_weight=2.0, gamma=0.5, aug="ada", aug_p=0.3, ada_kimg=0.05,
    sample_grid=(2, 2), device="cpu", max_images=16, seed=3,
)
TINY_SET = [f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY.items() if k != "data"]


@pytest.fixture
def tiny_nets():
    from conftest import make_tiny_D, make_tiny_G

    G, D = make_tiny_G(), make_tiny_D()
    G.requires_grad_(False)
    D.requires_grad_(False)
    return G, D


def tiny_cfg(tmp_path: Path, **extra):
    values = dict(TINY, outdir=str(tmp_path / "runs"), name="t")
    values.update(extra)
    return resolve_config(None, values)


# ---- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value, wanted", [
    ("gamma", -1.0, ">= 0"), ("r1_interval", 0, "at least 1"), ("style_mixing", 1.5, "in [0, 1]"),
    ("lr", 0.0, "> 0"), ("keep", 0, "at least 1"), ("metrics_n", 1, "at least 2"),
])
def test_numeric_knobs_out_of_range_are_refused_at_resolution(key, value, wanted):
    with pytest.raises(FewshotError, match=rf"^{key} must be {re.escape(wanted)}, got {value}$"):
        resolve_config("ada", {key: value})


def test_preset_extends_and_overrides_win():
    cfg = resolve_config("demo", {"kimg": 7, "aug": "diffaug"})
    assert cfg.base == "demo-base" and cfg.kimg == 7.0
    assert cfg.aug == "diffaug"  # the override wins over the parent's aug = "none"
    assert cfg.transfer.method == "adafm" and cfg.specific == "finetune"  # from the adafm preset, which demo extends
    assert cfg.preset == "demo" and cfg.description


@pytest.mark.parametrize(
    "overrides, message",
    [({"aug": "magic"}, "bad value for aug"), ({"kimg": "lots"}, "bad value for kimg"),
     ({"colour": 1}, "unknown config key"), ({"resolution": 48}, "power of two"),
     ({"batch": 6, "batch_gpu": 4}, "multiple of batch_gpu")],
)
def test_bad_config_values_are_one_clear_error(overrides, message):
    with pytest.raises(FewshotError, match=message):
        resolve_config(None, overrides)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(FewshotError) as err:
        resolve_config("nonexistent", {})
    assert "ada" in (err.value.hint or "")


def test_auto_hyperparameters_follow_the_official_formulas():
    cfg = resolve_config(None, {})
    hyper = derive_hyper(cfg, 256, fine_tuning=True)
    assert hyper.batch == 16 and hyper.map_layers == 2 and hyper.channel_base == 16384
    assert math.isclose(hyper.gamma, 0.0002 * 256**2 / 16)
    assert math.isclose(hyper.ema_kimg, 16 * 10 / 32)
    assert hyper.ada_kimg == 100.0  # fine-tuning
    scratch = derive_hyper(cfg, 256, fine_tuning=False)
    assert scratch.ada_kimg == 500.0
    # G_ema ramp-up: official train.py sets ema_rampup = None when it starts from a network; from scratch 0.05.
    assert hyper.ema_rampup is None and scratch.ema_rampup == 0.05
    assert derive_hyper(resolve_config(None, {"ema_rampup": 0.1}), 256, fine_tuning=True).ema_rampup == 0.1
    paper = derive_hyper(resolve_config(None, {"cfg": "paper256"}), 256, fine_tuning=True)
    assert (paper.batch, paper.gamma, paper.lr_g, paper.ema_kimg, paper.map_layers) == (64, 1.0, 0.0025, 20.0, 8)
    assert paper.mbstd_group == 8 and hyper.mbstd_group == 4


def test_auto_batch_lr_and_mbstd_follow_train_py_at_every_scale():
    cfg = resolve_config(None, {})
    # train.py: mb = max(min(gpus * min(4096 // res, 32), 64), gpus); lrate 0.002 from 1024 px.
    assert derive_hyper(cfg, 32, fine_tuning=True, world_size=4).batch == 64  # 4 x 32 capped at 64
    assert derive_hyper(cfg, 1024, fine_tuning=True, world_size=8).batch == 32  # 8 x 4
    big = derive_hyper(cfg, 1024, fine_tuning=True)
    assert (big.batch, big.lr_g, big.lr_d, big.channel_base) == (4, 0.002, 0.002, 32768)
    assert derive_hyper(cfg, 512, fine_tuning=True).lr_g == 0.0025
    # The mbstd group is min(auto mb // gpus, 4), from the auto batch even under --batch (D clamps it to its batch).
    assert derive_hyper(resolve_config(None, {"batch": 2}), 256, fine_tuning=True).mbstd_group == 4
    assert derive_hyper(cfg, 1024, fine_tuning=True).mbstd_group == 4
    for name, group in (("paper512", 8), ("paper1024", 4), ("stylegan2", 4)):
        assert derive_hyper(resolve_config(None, {"cfg": name}), 512, fine_tuning=True).mbstd_group == group


def test_lazy_regularisation_scales_lr_and_betas():
    kw = lazy_opt_kwargs(0.0025, 16)
    c = 16 / 17
    assert math.isclose(kw["lr"], 0.0025 * c)
    assert kw["betas"][0] == 0.0 and math.isclose(kw["betas"][1], 0.99**c)


# ---- loss ---------------------------------------------------------------------------------------


class Identity(torch.nn.Module):
    p = torch.zeros([])

    def forward(self, x):
        return x

    def replace_reals(self, x):
        return x

    def remember_fakes(self, x):
        pass

    def accumulate(self, logits):
        pass


def test_loss_values_match_hand_computation(tiny_nets):
    G, D = tiny_nets
    loss = StyleGAN2Loss(G, D, Identity(), LossWeights(r1_gamma=2.0, pl_weight=0.0, style_mixing=0.0))
    z = torch.randn(4, G.z_dim)
    real = torch.rand(4, 3, 32, 32) * 2 - 1

    torch.manual_seed(11)
    expected_G = F.softplus(-D(G.synthesis(G.mapping(z, None)))).mean()
    torch.manual_seed(11)
    G.requires_grad_(True)  # as the loop does for the G phases
    stats = loss.accumulate_gradients("Gmain", real, None, z, None, gain=1)
    G.requires_grad_(False)
    D.requires_grad_(True)
    # Tolerances: float32 rounding through the layers each loss passed (float32_bounds) and its mean over 4.
    assert_network_close(stats["loss_G"], expected_G, fan_ins(G) + fan_ins(D) + [4])

    torch.manual_seed(12)
    with torch.no_grad():
        fake = G.synthesis(G.mapping(z, None, skip_w_avg_update=True))
    expected_D = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()
    torch.manual_seed(12)
    stats = loss.accumulate_gradients("Dmain", real, None, z, None, gain=1)
    assert_network_close(stats["loss_D"], expected_D, fan_ins(G) + fan_ins(D) + [4, 1])

    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x)
    expected_r1 = grad.square().sum([1, 2, 3]).mean()
    stats = loss.accumulate_gradients("Dreg", real, None, z, None, gain=16)
    assert_network_close(stats["r1_penalty"], expected_r1, fan_ins(D) + fan_outs(D) + [3 * 32 * 32, 4])


def test_gmain_gradient_is_the_gradient_of_the_loss(tiny_nets):
    G, D = tiny_nets
    G.requires_grad_(True)
    loss = StyleGAN2Loss(G, D, Identity(), LossWeights(r1_gamma=0.0, pl_weight=0.0, style_mixing=0.0))
    z = torch.randn(2, G.z_dim)
    torch.manual_seed(5)
    loss.accumulate_gradients("Gmain", torch.zeros(2, 3, 32, 32), None, z, None, gain=4)
    got = G.synthesis.b32.torgb.bias.grad.clone()
    G.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    (F.softplus(-D(G.synthesis(G.mapping(z, None, skip_w_avg_update=True)))).mean() * 4).backward()
    # Float32 rounding forward through G and D, back through D, and the bias gradient's sum over 2 x 32 x 32 pixels.
    assert_network_close(got, G.synthesis.b32.torgb.bias.grad, fan_ins(G) + fan_ins(D) + fan_outs(D) + [2 * 32 * 32])


# ---- runs, resume, snapshots --------------------------------------------------------------------


def _final_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final.safetensors"))


def test_resume_is_exact(tmp_path):
    straight = train(tiny_cfg(tmp_path, kimg=0.016, name="straight"), progress=False, echo=lambda m: None)
    first = train(tiny_cfg(tmp_path, kimg=0.008, name="split"), progress=False, echo=lambda m: None)
    assert (first / "final.safetensors").exists()
    resumed = train(tiny_cfg(tmp_path), resume=str(first), kimg_override=0.016, progress=False,
                    echo=lambda m: None)
    assert resumed == first

    a, b = _final_tensors(straight), _final_tensors(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in log] == [0.008, 0.016]
    assert (resumed / "samples" / "reals.png").exists()
    assert list((resumed / "samples").glob("fakes_*.png"))
    # The snapshot carries p, optimiser moments and counters; its header alone rebuilds the nets.
    snaps = sorted((resumed / "checkpoints").glob("snapshot-*.safetensors"))
    bundle = load_bundle(snaps[-1], with_state=True)
    assert bundle.training["progress"]["cur_nimg"] == 16
    assert any(k.startswith("opt_G.") for k in bundle.state_tensors)
    assert 0.0 <= bundle.training["augment_p"] <= 1.0


def test_a_run_gives_the_process_its_torch_settings_back(tmp_path):
    """--deterministic switches torch's deterministic algorithms on for the run; a program calling train() gets
    its own settings back afterwards, also when the run fails."""
    assert not torch.are_deterministic_algorithms_enabled()
    run = train(tiny_cfg(tmp_path, kimg=0.004, deterministic=True, name="det"), progress=False, echo=lambda m: None)
    assert (run / "final.safetensors").exists()
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(FewshotError):
        train(tiny_cfg(tmp_path, deterministic=True, data=str(tmp_path / "missing")), progress=False,
              echo=lambda m: None)
    assert not torch.are_deterministic_algorithms_enabled()


def _png_folder(folder: Path, count: int, seed: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    for i in range(count):
        pixels = torch.randint(0, 256, (32, 32, 3), generator=gen, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return folder


def test_resume_survives_an_unreadable_snapshot_and_moved_data(tmp_path, monkeypatch):
    """A truncated newest snapshot is set aside and the one before is used; moved data is named again
    on resume, other images are refused there and noted in place; a new DATA never silently replaces the run's."""
    data = _png_folder(tmp_path / "faces", 8, seed=0)
    monkeypatch.chdir(tmp_path)  # a relative DATA is stored absolute: resumable from anywhere
    run = train(tiny_cfg(tmp_path, data="faces", kimg=0.016), progress=False, echo=lambda m: None)
    monkeypatch.chdir(REPO)
    snaps = sorted((run / "checkpoints").glob("snapshot-*.safetensors"))
    assert [s.name for s in snaps] == ["snapshot-000000008.safetensors", "snapshot-000000016.safetensors"]
    stored = load_bundle(snaps[-1], with_state=True).training
    assert stored["data"]["images"] == 8 and stored["config"]["data"] == str(data.resolve())
    snaps[-1].write_bytes(snaps[-1].read_bytes()[:5000])  # a partial copy

    other = _png_folder(tmp_path / "other", 8, seed=1)
    with pytest.raises(FewshotError, match="trains on .*faces, not .*other"):
        train(tiny_cfg(tmp_path), resume=str(run), data_override=str(other), progress=False, echo=lambda m: None)
    assert snaps[-1].exists()  # a refused resume changes nothing

    moved = tmp_path / "moved"
    data.rename(moved)
    with pytest.raises(FewshotError, match="no longer exists") as info:
        train(tiny_cfg(tmp_path), resume=str(run), progress=False, echo=lambda m: None)
    assert "NEW_PLACE" in info.value.hint
    with pytest.raises(FewshotError, match="differ from those this run started on"):
        train(tiny_cfg(tmp_path), resume=str(run), data_override=str(other), progress=False, echo=lambda m: None)

    said: list[str] = []
    train(tiny_cfg(tmp_path), resume=str(run), data_override=str(moved), kimg_override=0.016, progress=False,
          echo=said.append)
    text = "\n".join(said)
    assert "resuming from snapshot-000000008" in text and "aside as snapshot-000000016.safetensors.unreadable" in text
    assert "reading this run's images from" in text and "note:" not in text
    assert (run / "checkpoints" / "snapshot-000000016.safetensors.unreadable").exists()
    resumed = load_bundle(run / "checkpoints" / "snapshot-000000016.safetensors", with_state=True)
    assert resumed.training["progress"]["cur_nimg"] == 16 and resumed.training["config"]["data"] == str(moved)

    _png_folder(moved / "more", 1, seed=2)  # an image added in place: the run goes on and says so
    said.clear()
    train(tiny_cfg(tmp_path), resume=str(run), kimg_override=0.024, progress=False, echo=said.append)
    assert any("note:" in line and "8 -> 9 images" in line for line in said)


def test_a_full_disk_stops_the_run_with_one_line_and_it_resumes(tmp_path, monkeypatch):
    import errno

    from fewshot.train import loop

    real_save, calls = loop.save_bundle, []

    def save_until_the_disk_fills(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(loop, "save_bundle", save_until_the_disk_fills)
    with pytest.raises(FewshotError, match="could not write the snapshot at 0.016 kimg: No space left") as info:
        train(tiny_cfg(tmp_path, kimg=0.016), progress=False, echo=lambda m: None)
    run = calls[0].parent.parent
    assert "snapshot-000000008.safetensors is intact" in info.value.hint and f"--resume {run}" in info.value.hint
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["snapshot-000000008.safetensors"]  # the resume point
    monkeypatch.setattr(loop, "save_bundle", real_save)
    train(tiny_cfg(tmp_path), resume=str(run), progress=False, echo=lambda m: None)
    assert (run / "final.safetensors").exists() and (run / "checkpoints" / "snapshot-000000016.safetensors").exists()


def test_metrics_never_cost_the_training(tmp_path, monkeypatch):
    """Metric weights that are missing stop a run before it starts (no run folder); an evaluation that fails
    mid-run still leaves the snapshot of the training it evaluated."""
    from fewshot.train import loop

    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    monkeypatch.setenv("FEWSHOT_OPS", "reference")  # a fresh FEWSHOT_HOME would rebuild the compiled ops
    for var in ("FEWSHOT_WEIGHTS_INCEPTION_V3_FID", "FEWSHOT_WEIGHTS_VGG16"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(FewshotError, match="inception-v3-fid"):
        train(tiny_cfg(tmp_path, metrics=("fid",)), progress=False, echo=lambda m: None)
    assert not (tmp_path / "runs").exists()

    def failing_evaluation(*args, **kwargs):
        raise RuntimeError("the evaluation broke")

    monkeypatch.setattr(loop, "_maybe_metrics", failing_evaluation)
    with pytest.raises(RuntimeError, match="the evaluation broke"):
        train(tiny_cfg(tmp_path, kimg=0.016), progress=False, echo=lambda m: None)
    snaps = list((tmp_path / "runs").glob("*/checkpoints/snapshot-000000008.safetensors"))
    assert len(snaps) == 1 and load_bundle(snaps[0], with_state=True).training["progress"]["cur_nimg"] == 8


def test_a_run_is_written_by_one_process_at_a_time(tmp_path):
    from fewshot.train.run_dir import describe_run, run_lock

    run = train(tiny_cfg(tmp_path, kimg=0.008), progress=False, echo=lambda m: None)
    assert not (run / ".lock").exists()  # released and removed with the run: a finished run holds no stale lock
    assert describe_run(run)["training_now"] is None
    with run_lock(run):  # another trainer holds the run
        assert describe_run(run)["training_now"] == os.getpid()
        with pytest.raises(FewshotError, match=rf"is being trained by another process \(pid {os.getpid()}\)"):
            train(tiny_cfg(tmp_path), resume=str(run), kimg_override=0.016, progress=False, echo=lambda m: None)
    assert (run / "checkpoints" / "snapshot-000000008.safetensors").exists()
    train(tiny_cfg(tmp_path), resume=str(run), kimg_override=0.016, progress=False, echo=lambda m: None)
    assert (run / "checkpoints" / "snapshot-000000016.safetensors").exists()


def test_info_on_a_run_folder_tells_how_far_it_got(tmp_path):
    from typer.testing import CliRunner

    from fewshot.cli import app, register_commands
    from fewshot.train.run_dir import describe_run

    register_commands()
    run = train(tiny_cfg(tmp_path, kimg=0.008), progress=False, echo=lambda m: None)
    with (run / "metrics.jsonl").open("w") as fh:
        fh.write('{"kimg": 0.004, "fid": 91.5}\n{"kimg": 0.008, "fid": 80.25}\n{"kimg": 0.0')  # last line cut short
    with (run / "log.jsonl").open("a") as fh:
        fh.write('{"tick": 9, "kimg"')  # a crash mid-line
    summary = describe_run(run)
    assert summary["preset"] is None and summary["data"] == "demo" and summary["target_kimg"] == 0.008
    assert summary["done_kimg"] == 0.008 and summary["last_tick"]["kimg"] == 0.008
    assert summary["best"] == {"metric": "fid", "value": 80.25, "kimg": 0.008}
    assert summary["snapshots"] == ["snapshot-000000008.safetensors"] and summary["exports"] == ["final.safetensors"]

    result = CliRunner().invoke(app, ["info", str(run)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{run}  [run folder]" and "trained 0.008 of 0.008 kimg (tick 0" in lines[2]
    assert "best fid 80.25 at 0.008 kimg" in result.output and "--resume" not in result.output
    assert f"{run / 'final.safetensors'}  [fewshot bundle" in result.output  # then the checkpoint it stands for
    (run / "final.safetensors").unlink()  # only the snapshot left: info stands on it
    result = CliRunner().invoke(app, ["info", str(run), "--json"])
    assert json.loads(result.output)["run"]["exports"] == []


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", FEWSHOT_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "fewshot", *args], capture_output=True, text=True, timeout=240, env=env)


def test_resume_with_the_same_command_and_only_differing_values_refused(tmp_path):
    """The command that started a run, with --resume latest added, continues it; a raised --kimg becomes the run's
    target (config.toml, info); a recipe value that differs is refused by name with both values; a finished run
    is left as it is."""
    out = tmp_path / "runs"
    command = ["train", "demo", "--preset", "scratch", "--base", "none", "--outdir", str(out), "--name", "same",
               "--quiet"] + [a for s in TINY_SET for a in ("--set", s)]
    first = _cli(*command, "--kimg", "0.008")
    assert first.returncode == 0, first.stderr
    run = next(out.glob("*-same"))
    again = _cli(*command, "--kimg", "0.016", "--resume", "latest")
    assert again.returncode == 0, again.stderr
    assert (run / "checkpoints" / "snapshot-000000016.safetensors").exists()
    assert "kimg = 0.016" in (run / "config.toml").read_text()
    info = _cli("info", str(run), "--json")
    assert json.loads(info.stdout)["run"]["target_kimg"] == pytest.approx(0.016)

    refused = _cli(*command, "--kimg", "0.024", "--resume", "latest", "--lr", "0.1", "--set", "gamma=2")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    first_line = refused.stderr.splitlines()[0]
    assert "lr (derived) -> 0.1" in first_line and "gamma 0.5 -> 2.0" in first_line
    assert "kimg" not in first_line and "preset" not in first_line

    final = run / "final.safetensors"
    stamp = final.stat().st_mtime_ns
    finished = _cli(*command, "--kimg", "0.016", "--resume", "latest")
    assert finished.returncode == 0, finished.stderr
    assert "already finished at 0.016 kimg" in finished.stdout
    assert final.stat().st_mtime_ns == stamp and len(list((run / "checkpoints").glob("*.safetensors"))) == 2
    assert not (run / ".lock").exists()


def _image_folder(folder: Path, side: int, count: int = 3) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (side, side), (40 * i, 90, 20)).save(folder / f"{i}.png")
    return folder


FINE_TUNING_PRESETS = sorted(set(__import__("fewshot.config", fromlist=["list_presets"]).list_presets())
                             - {"demo", "scratch", "stylegan3-t", "stylegan3-r"})


@pytest.mark.parametrize("preset", FINE_TUNING_PRESETS)
def test_every_fine_tuning_preset_names_its_default_base_by_image_size(tmp_path, preset):
    """Without --base a fine-tuning preset fine-tunes NVIDIA's FFHQ transfer source nearest the images' size (the
    smallest at or above it); --base none trains from scratch; a given --base is used as given."""
    # (image side, the power of two the data gives, the base, whether the images are resized to another size)
    for side, size, wanted, resized in ((256, 256, "ffhq256", False), (64, 64, "ffhq256", True),
                                        (600, 512, "ffhq512", False), (1024, 1024, "ffhq1024", False)):
        cfg = resolve_config(preset, {"data": str(_image_folder(tmp_path / f"{side}", side))})
        assert cfg.base == wanted, (side, cfg.base)
        assert cfg.base_note.startswith(f"default of {preset} for {size} px images")
        assert ("resized to 256 px" in cfg.base_note) == resized
    assert resolve_config(preset, {"data": str(tmp_path / "256"), "resolution": 512}).base == "ffhq512"
    scratch = resolve_config(preset, {"data": str(tmp_path / "256"), "base": "none"})
    assert scratch.base is None and scratch.base_note == "--base none"
    mine = resolve_config(preset, {"data": str(tmp_path / "256"), "base": "/models/G.safetensors"})
    assert (mine.base, mine.base_note) == ("/models/G.safetensors", "--base")


def test_scratch_presets_and_the_library_default_train_from_scratch(tmp_path):
    data = str(_image_folder(tmp_path / "imgs", 256))
    assert resolve_config("scratch", {"data": data}).base is None
    assert resolve_config("scratch", {"data": data}).base_note == "the scratch preset trains from scratch"
    assert resolve_config(None, {"data": data}).base is None  # the library without a preset: nothing implicit


def test_cli_fine_tunes_the_presets_default_base_from_a_populated_cache(tmp_path):
    """`fewshot train DATA --preset reg-ada` offline, with ffhq256 in the cache: the dry run says which base and
    why, and shows the architecture of the base (not the preset's scratch values)."""
    from conftest import make_tiny_D, make_tiny_G
    from official_format import make_official_pickle

    from fewshot.hub import checkpoint_registry, url_cache_path

    home = tmp_path / "home"
    cached = url_cache_path(checkpoint_registry()["ffhq256"].url, root=home / "checkpoints" / "downloads")
    cached.parent.mkdir(parents=True)
    G = make_tiny_G(1, img_resolution=256, synthesis_kwargs={"channel_base": 256, "channel_max": 16})
    D = make_tiny_D(2, img_resolution=256, channel_base=256, channel_max=16)
    make_official_pickle(cached, G=G, D=D, G_ema=G)
    data = _image_folder(tmp_path / "faces", 256)
    env = dict(os.environ, FEWSHOT_HOME=str(home), FEWSHOT_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "fewshot", "train", str(data), "--preset", "reg-ada", "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    assert ("base: ffhq256 (default of reg-ada for 256 px images; --base REF to choose another, --base none to "
            "train from scratch)") in done.stdout
    for line in ("resolution = 256", "channel_max = 16", "channel_base = 256", "z_dim = 32", 'preset = "reg-ada"'):
        assert f"\n{line}\n" in done.stdout, line
    default = subprocess.run([sys.executable, "-m", "fewshot", "train", str(data), "--dry-run"],
                             capture_output=True, text=True, env=env, timeout=240)
    assert default.returncode == 0, default.stderr
    assert default.stdout.startswith("preset: ada (the default") and "default of ada for 256 px" in default.stdout


def test_the_plan_is_shown_before_training_and_its_warm_up_changes_nothing(tmp_path):
    """The plan (images, kimg, s/kimg from a timed warm-up step, ETA, snapshot size, memory) comes before the run
    folder; the warm-up is undone, so a run with the plan equals a run without it bit for bit (APA's stored fakes,
    ADA's statistics, the path-length mean and w_avg all go back)."""
    said: list[str] = []
    with_plan = train(tiny_cfg(tmp_path, name="plan", aug="ada+apa", kimg=0.016), progress=False, echo=said.append)
    without = train(tiny_cfg(tmp_path, name="noplan", aug="ada+apa", kimg=0.016), progress=False,
                    echo=lambda m: None, plan=False)
    text = "\n".join(said)
    assert text.index("plan: 16 images at 32 px, 0.016 kimg to go (4 batches of 4)") < text.index("run folder:")
    assert re.search(r"time: ~[\d.]+ s/kimg from a timed warm-up step \(Gmain [\d.]+s, Greg [\d.]+s, Dmain "
                     r"[\d.]+s, Dreg [\d.]+s\) -> ETA \d", text)
    assert re.search(r"memory: peak ~[\d.]+ (MB|GB) \(process", text)
    assert re.search(r"disk: snapshot ~[\d.]+ (kB|MB) x 10 kept", text)
    assert re.search(r"tick 0 .* eta \d", text)
    a = load_bundle(with_plan / "final.safetensors", with_state=True)
    b = load_bundle(without / "final.safetensors", with_state=True)
    for name in ("G", "G_ema", "D"):
        for key, value in a.networks[name].state_dict().items():
            assert torch.equal(value, b.networks[name].state_dict()[key]), (name, key)
    sa, sb = (load_bundle(sorted((run / "checkpoints").glob("*.safetensors"))[-1], with_state=True)
              for run in (with_plan, without))
    for key, value in sa.state_tensors.items():
        assert torch.equal(value, sb.state_tensors[key]), key


def test_a_run_that_needs_more_than_a_day_says_so():
    from fewshot.train.plan import StepEstimate, plan_lines

    slow = StepEstimate({"Gmain": 30.0}, sec_per_kimg=900.0, peak_memory_mb=7800)
    lines = plan_lines(images=100, resolution=256, kimg_left=200, batch=16, estimate=slow, snapshot_size=637 * 2**20,
                       export_size=300 * 2**20, keep=3, device=torch.device("cpu"))
    assert "ETA 2d 2h" in lines[1] and "peak ~7.6 GB" in lines[2] and "snapshot ~637.0 MB x 3 kept" in lines[3]
    assert "more than a day" in lines[4] and "--kimg 96" in lines[4]
    quick = StepEstimate({"Gmain": 0.1}, sec_per_kimg=10.0, peak_memory_mb=100)
    assert not any("more than a day" in line for line in plan_lines(
        images=100, resolution=32, kimg_left=200, batch=16, estimate=quick, snapshot_size=1, export_size=1, keep=3,
        device=torch.device("cpu")))


def test_an_unwritable_outdir_or_preview_path_is_refused_before_any_image_is_decoded(tmp_path, monkeypatch):
    import fewshot.data

    def no_decoding(*args, **kwargs):
        raise AssertionError("images were decoded before the output folder was checked")

    monkeypatch.setattr(fewshot.data, "load_images", no_decoding)
    monkeypatch.setattr(fewshot.data, "demo_images", no_decoding)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(FewshotError, match=r"--outdir .*a-file/runs cannot be written: .*a-file is not a folder"):
        train(tiny_cfg(tmp_path, outdir=str(blocker / "runs")), progress=False, echo=lambda m: None)
    with pytest.raises(FewshotError, match="--aug-preview's folder .*cannot be written"):
        train(tiny_cfg(tmp_path), aug_preview=blocker / "grid.png", progress=False, echo=lambda m: None)
    if os.geteuid() != 0:  # root may write anywhere: the permission case is real only for other users
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(FewshotError, match="cannot be written"):
            train(tiny_cfg(tmp_path, outdir=str(locked / "runs")), progress=False, echo=lambda m: None)


def test_dry_run_with_reg_dgm_loads_no_weights(tmp_path, monkeypatch):
    """Offline, no extractor weights anywhere: the dry run still answers, and says where weights would come from."""
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    out: list[str] = []
    assert train(tiny_cfg(tmp_path, reg_lambda=0.5, reg_model="resnet18"), dry_run=True, echo=out.append) is None
    assert out[-1].startswith("Reg-DGM: resnet18, lambda 0.5, estimator mean; weights: resnet18 missing")
    with pytest.raises(FewshotError, match="unknown Reg-DGM feature extractor"):
        train(tiny_cfg(tmp_path, reg_lambda=0.5, reg_model="resnet17"), dry_run=True, echo=out.append)
    with pytest.raises(FewshotError, match="resnet18"):  # the run itself needs them and says so
        train(tiny_cfg(tmp_path, reg_lambda=0.5, reg_model="resnet18", kimg=0.004), echo=out.append, progress=False)


def test_dry_run_prints_config_and_trainable_counts(tmp_path, capsys):
    out: list[str] = []
    with pytest.raises(FewshotError, match="transfer 'freezed' keeps layers of a pretrained network frozen"):
        train(tiny_cfg(tmp_path, transfer="freezed", freeze_d=1), dry_run=True, echo=out.append)
    base = tmp_path / "base.safetensors"
    G = Generator(32, 0, 32, 32, 3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 256, "channel_max": 32, "num_fp16_res": 0, "conv_clamp": None})
    D = Discriminator(0, 32, 3, channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=None,
                      epilogue_kwargs={"mbstd_group_size": 2})
    save_bundle(base, {"G": G, "G_ema": G, "D": D})
    assert train(tiny_cfg(tmp_path, transfer="freezed", freeze_d=1, base=str(base), resolution=64), dry_run=True,
                 echo=out.append) is None
    text = "\n".join(out)
    assert "note: resolution 64 ignored: the base makes 32 px images" in text
    assert "freeze_d = 1" in text and "trainable" in text
    assert not (tmp_path / "runs").exists()

    # The resolved config shows what is built: the base's architecture, not the preset's scratch values.
    out.clear()
    train(tiny_cfg(tmp_path, base=str(base), channel_max=512, num_fp16_res=4, conv_clamp=256, z_dim=512,
                   map_layers=None), dry_run=True, echo=out.append)
    text = "\n".join(out)
    for line in ("channel_max = 32", "num_fp16_res = 0", "z_dim = 32", "map_layers = 2", "resolution = 32"):
        assert f"\n{line}\n" in text, line


def test_from_scratch_without_resolution_takes_it_from_the_data(tmp_path):
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 36), (i * 60, 90, 20)).save(folder / f"{i}.png")
    out: list[str] = []
    cfg = tiny_cfg(tmp_path, data=str(folder), resolution=None)
    assert train(cfg, dry_run=True, echo=out.append) is None
    text = "\n".join(out)
    assert "resolution 32 from the data (median short side 36 px over 3 images)" in text
    assert "3 images from folder" in text and "-> 32x32" in text
    with pytest.raises(FewshotError, match="demo images needs --resolution"):
        train(tiny_cfg(tmp_path, resolution=None), dry_run=True, echo=out.append)


def test_nonfinite_loss_stops_with_a_clear_message(tmp_path):
    from fewshot.train.loop import Progress, _check_finite

    with pytest.raises(FewshotError, match="diverged at 0.0 kimg.*loss_G"):
        _check_finite({"loss_G": float("nan"), "loss_D": 0.5}, Progress(), None)


def _write_bad_folder(folder: Path) -> None:
    from PIL import Image

    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(6):
        arr = (torch.rand(40, 48, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"img{i}.png")
    Image.fromarray(arr).convert("CMYK").save(folder / "cmyk.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.png").write_text("this is text")


def test_cli_train_on_messy_folder_survives_sigint_and_resumes(tmp_path):
    """A corrupt JPEG, a text file and a CMYK image: trains; Ctrl-C writes a snapshot; resume finishes."""
    data = tmp_path / "messy"
    _write_bad_folder(data)
    out = tmp_path / "runs"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "fewshot", "train", str(data), "--base", "none", "--outdir", str(out), "--name", "messy",
            "--quiet", "--kimg", "1000"] + [a for s in TINY_SET for a in ("--set", s) if not s.startswith("max_images")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    log = None
    while time.time() < deadline:
        logs = list(out.glob("*/log.jsonl"))
        if logs and logs[0].read_text().strip():
            log = logs[0]
            break
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    assert log is not None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume latest" in stderr
    assert "skipped" in stdout.lower()  # the summary names the files it could not use
    run = log.parent
    snaps = list((run / "checkpoints").glob("snapshot-*.safetensors"))
    assert snaps
    done_nimg = load_bundle(sorted(snaps)[-1], with_state=True).training["progress"]["cur_nimg"]

    resume = subprocess.run(
        [sys.executable, "-m", "fewshot", "train", "--resume", "latest", "--outdir", str(out),
         "--kimg", str((done_nimg + 4) / 1000), "--quiet"],
        capture_output=True, text=True, env=env, timeout=240,
    )
    assert resume.returncode == 0, resume.stderr
    assert (run / "final.safetensors").exists()
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert records[-1]["kimg"] == pytest.approx((done_nimg + 4) / 1000)


def _train_command(out: Path) -> str:
    sets = " ".join(f"--set {s}" for s in TINY_SET)
    return (f"{sys.executable} -m fewshot train demo --base none --outdir {out} --name stop --kimg 1000 --snap 1000 "
            f"{sets}")


def _wait_for_first_tick(out: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for log in out.glob("*/log.jsonl"):
            if '"tick"' in log.read_text():
                return log.parent
        assert proc.poll() is None, "the run ended before its first tick"
        time.sleep(0.3)
    raise AssertionError("no tick within the time limit")


def _stopped_run(run: Path, cause: str, code: int) -> dict:
    """The run stopped with a resumable snapshot and said why in its log."""
    from fewshot.train.run_dir import load_snapshot

    snaps = sorted((run / "checkpoints").glob("snapshot-*.safetensors"))
    assert snaps, "no snapshot written"
    load_snapshot(snaps[-1])  # readable and holding the training state
    events = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"event"' in x]
    stop = [e for e in events if e["event"] == "stop"]
    assert stop and stop[-1]["cause"] == cause and stop[-1]["exit_code"] == code, events
    assert not (run / ".lock").exists()  # released on the way out: the run can be resumed at once
    return {"events": events, "snapshot": snaps[-1]}


@pytest.mark.parametrize("how", ["ctrl-c-through-tee", "head-1", "closed-terminal"])
def test_every_stop_leaves_a_resumable_snapshot(tmp_path, how):
    """Ctrl-C reaching both the run and its `| tee`, a reader that takes one line (`| head -1`), and a terminal
    that closes (SIGHUP, then EIO on every write): the batch finishes, a snapshot is written, the exit code is the
    shell's, and what could not be shown is in log.jsonl."""
    out = tmp_path / "runs"
    env = dict(os.environ, OMP_NUM_THREADS="1", FEWSHOT_OFFLINE="1")
    code_file = tmp_path / "code"
    if how == "closed-terminal":
        import pty
        import threading

        master, slave = pty.openpty()
        proc = subprocess.Popen(_train_command(out).split(), stdin=slave, stdout=slave, stderr=slave, env=env,
                                start_new_session=True)
        os.close(slave)
        shown: list[bytes] = []

        def drain() -> None:
            try:
                while chunk := os.read(master, 4096):
                    shown.append(chunk)
            except OSError:
                pass

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        run = _wait_for_first_tick(out, proc)
        os.close(master)  # the terminal is gone: writes to it fail with EIO from now on
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=240) == 129
        result = _stopped_run(run, "SIGHUP", 129)
        assert any(e["event"] == "message" and "stopped by SIGHUP" in e["text"] for e in result["events"])
        return
    pipe = "tee " + str(tmp_path / "tee.log") if how == "ctrl-c-through-tee" else "head -1"
    script = f"{_train_command(out)} | {pipe}; echo ${{PIPESTATUS[0]}} > {code_file}"
    proc = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True, text=True)
    if how == "ctrl-c-through-tee":
        run = _wait_for_first_tick(out, proc)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: every process of the pipeline gets it
        _, stderr = proc.communicate(timeout=240)
        assert code_file.read_text().strip() == "130", stderr
        assert "Ctrl-C (SIGINT): stopping after this batch and writing a snapshot" in stderr and "Traceback" not in stderr
        _stopped_run(run, "SIGINT", 130)
    else:
        shown, stderr = proc.communicate(timeout=240)
        assert len(shown.splitlines()) == 1
        assert code_file.read_text().strip() == "141", stderr
        assert "Traceback" not in stderr and "Exception ignored" not in stderr
        run = next(out.glob("*-stop"))
        _stopped_run(run, "a closed output pipe", 141)
        resumed = subprocess.run([sys.executable, "-m", "fewshot", "train", "--resume", str(run), "--kimg", "0.016",
                                  "--quiet"], capture_output=True, text=True, env=env, timeout=240)
        assert resumed.returncode == 0, resumed.stderr
        assert (run / "final.safetensors").exists()


_KILL_SCRIPT = """
import sys, torch
from fewshot.checkpoint import save_bundle
from fewshot.nets import Generator
G = Generator(64, 0, 64, 64, 3, mapping_kwargs={"num_layers": 2},
              synthesis_kwargs={"channel_base": 8192, "channel_max": 256})
i = 0
print("ready", flush=True)
while True:
    with torch.no_grad():
        G.mapping.w_avg.fill_(float(i))
    save_bundle(sys.argv[1], {"G": G}, training={"i": i})
    i += 1
"""


def test_sigkill_during_checkpoint_write_leaves_a_loadable_checkpoint(tmp_path, tiny_nets):
    target = tmp_path / "ckpt.safetensors"
    G, _ = tiny_nets
    save_bundle(target, {"G": G}, training={"i": -1})
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)  # several multi-megabyte writes are in flight by now
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    bundle = load_bundle(target)  # whichever version is there, it is whole
    i = bundle.training["i"]
    assert i == -1 or float(bundle.networks["G"].mapping.w_avg[0]) == float(i)


def test_two_gloo_processes_keep_identical_weights(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    out = tmp_path / "runs"
    # `--gpus 2` relaunches the same command under torchrun with two processes (gloo on the CPU).
    args = [sys.executable, "-m", "fewshot", "train", "demo", "--base", "none", "--gpus", "2", "--outdir", str(out), "--name", "ddp",
            "--quiet", "--kimg", "0.016"]
    args += [a for s in TINY_SET for a in ("--set", s)]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = next(out.glob("*-ddp"))
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert records and all(r["ranks_in_sync"] for r in records)
    assert (run / "final.safetensors").exists()


def test_the_process_group_is_torn_down_by_the_run_not_at_exit(tmp_path, monkeypatch):
    """setup() puts distributed.shutdown on the run's exit stack: left to exit-time destructors, gloo's threads
    could abort a finished rank ("terminate called without an active exception"), failing the whole run."""
    from contextlib import ExitStack

    import torch.distributed as tdist

    import fewshot.train.setup as setup_module
    from fewshot.train import distributed
    from fewshot.train.setup import Request, setup

    calls = []
    monkeypatch.setattr(distributed, "init_from_env", lambda: distributed.DistInfo(0, 2, 0))
    monkeypatch.setattr(distributed, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(setup_module, "pick_device", lambda *a: calls.append("device") or 1 / 0)
    with pytest.raises(ZeroDivisionError), ExitStack() as held:
        setup(resolve_config("scratch", dict(TINY, outdir=str(tmp_path / "runs"))), Request(progress=False), print, held)
    assert calls == ["device", "shutdown"]  # registered before anything else could fail, run when the stack closes
    monkeypatch.undo()
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    distributed.shutdown()
    assert not tdist.is_initialized()
    distributed.shutdown()  # without a group: nothing to do


def test_reg_dgm_term_enters_the_generator_loss(tmp_path, monkeypatch):
    """The loop builds the regulariser from the config and adds its term in Gmain (toy extractor)."""
    import fewshot.regularizers.reg_dgm as reg_dgm
    from fewshot.extractors import ExtractorSpec
    from fewshot.regularizers import _reg_dgm_term

    built = {}

    def build_toy_extractor(name, weights_path=None, device="cpu"):
        built.update(model=name, weights_path=weights_path)
        torch.manual_seed(0)
        toy = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.Flatten(), torch.nn.LazyLinear(16))
        toy(torch.zeros(1, 3, 32, 32))
        return toy.to(device), ExtractorSpec(name, lambda weights_file: toy, feature_dim=16, min_input_size=32)

    class RecordedRegDGM(_reg_dgm_term.RegDGM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.update(lam=self.lam, estimator=self.estimator)

    monkeypatch.setattr(reg_dgm, "build_extractor", build_toy_extractor)
    monkeypatch.setattr(_reg_dgm_term, "RegDGM", RecordedRegDGM)
    cfg = resolve_config("reg-ada", dict(TINY, base="none", outdir=str(tmp_path / "runs"), name="reg", kimg=0.008, max_images=8,
                                          reg_lambda=0.5, reg_weights="/models/my-resnet18.pth"))
    run = train(cfg, progress=False, echo=lambda m: None)
    assert built["model"] == "resnet18" and built["lam"] == 0.5 and built["estimator"] == "mean"
    assert built["weights_path"] == "/models/my-resnet18.pth"  # --reg-weights reaches the extractor
    record = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert record["loss_reg"] > 0


def test_reg_dgm_with_resnet18_found_offline(tmp_path, monkeypatch):
    """reg-ada end to end with a ResNet-18 file found offline through the weights registry."""
    import hashlib

    import torchvision

    torch.manual_seed(0)
    cache = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cache.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cache)
    registry = tmp_path / "weights.toml"
    registry.write_text(
        '[resnet18]\nfilename = "resnet18-f37072fd.pth"\nurl = "https://download.pytorch.org/models/resnet18-f37072fd.pth"\n'
        f'sha256 = "{hashlib.sha256(cache.read_bytes()).hexdigest()}"\nlibrary_caches = ["torch_hub"]\n'
    )
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    monkeypatch.setenv("FEWSHOT_WEIGHTS_REGISTRY", str(registry))
    cfg = resolve_config("reg-ada", dict(TINY, base="none", outdir=str(tmp_path / "runs"), name="reg", kimg=0.008, max_images=8,
                                          reg_lambda=0.5))
    run = train(cfg, progress=False, echo=lambda m: None)
    record = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert record["loss_reg"] > 0


def test_metrics_during_training_write_jsonl_and_keep_best(tmp_path, monkeypatch):
    import fewshot.metrics as metrics_pkg
    from fewshot.extractors import FeatureExtractor

    class ToyInception(FeatureExtractor):
        name = "inception-v3-fid"
        resize = "none (toy)"

        def __init__(self):
            super().__init__("toy")
            self.feature_dims = {"pool": 48}
            self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

        def extract(self, images):
            x = images.float() / 127.5 - 1
            return {"pool": F.adaptive_avg_pool2d(x, 4).flatten(1)}

    real_compute = metrics_pkg.compute_metrics
    calls = []

    def compute_with_toy(generator, real_images, **kwargs):
        calls.append(kwargs)
        kwargs["extractors"].setdefault("inception-v3-fid", ToyInception())  # instead of loading Inception weights
        return real_compute(generator, real_images, cache_dir=tmp_path / "cache", **kwargs)

    monkeypatch.setattr(metrics_pkg, "compute_metrics", compute_with_toy)
    loaded = []

    def load_toy(metrics, device, into):  # the run loads its extractors before it trains
        loaded.append(tuple(metrics))
        into.setdefault("inception-v3-fid", ToyInception())
        return into

    monkeypatch.setattr(metrics_pkg, "load_metric_extractors", load_toy)
    cfg = tiny_cfg(tmp_path, kimg=0.016, metrics=("fid",), metrics_every=1, metrics_n=8)
    run = train(cfg, progress=False, echo=lambda m: None)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in lines] == [0.008, 0.016] and all(r["fid"] >= 0 for r in lines)
    assert calls[0]["n_fake"] == 8 and calls[0]["metrics"] == ("fid",)
    assert calls[0]["extractors"] is calls[1]["extractors"]  # extractors are loaded once per run
    assert loaded == [("fid",)] and isinstance(calls[0]["extractors"]["inception-v3-fid"], ToyInception)
    best = load_bundle(run / "best.safetensors")
    assert best.training["metrics"]["fid"] == min(r["fid"] for r in lines)


def test_aug_preview_writes_a_grid_and_no_run(tmp_path):
    from PIL import Image

    target = tmp_path / "preview.png"
    assert train(tiny_cfg(tmp_path), aug_preview=target, echo=lambda m: None) is None
    with Image.open(target) as img:
        assert img.size[0] >= 32 * 2 and img.mode == "RGB"
    assert not (tmp_path / "runs").exists()


def test_presets_are_found_from_an_installed_wheel_layout(tmp_path, monkeypatch):
    """A non-editable install has no repository root: presets come from <prefix>/share/fewshot/presets."""
    import sysconfig

    from fewshot import config

    installed = tmp_path / "prefix" / "share" / "fewshot" / "presets"
    installed.mkdir(parents=True)
    (installed / "mine.toml").write_text('description = "installed copy"\naug = "diffaug"\n')
    monkeypatch.setattr(config, "__file__", str(tmp_path / "site-packages" / "fewshot" / "config.py"))
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(tmp_path / "prefix"))
    assert config.find_presets_dir() == installed
    # The repository's own folder wins in a checkout.
    monkeypatch.undo()
    assert config.find_presets_dir() == REPO / "presets"


def test_wheel_ships_the_presets(tmp_path):
    """pyproject's data-files put every presets/*.toml into the wheel's data scheme."""
    import shutil
    import zipfile

    pytest.importorskip("setuptools")
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "fewshot", src / "fewshot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "presets", src / "presets")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    if out.returncode != 0 and "No module named" in out.stderr:
        pytest.skip(f"cannot build a wheel here: {out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("fewshot-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if "/data/share/fewshot/presets/" in n}
    assert shipped == {p.name for p in (REPO / "presets").glob("*.toml")}
    assert any(n.endswith("fewshot/cuda/winograd.cpp") for n in names)
