"""rosinality/stylegan2-pytorch checkpoints: import (against images made by rosinality's own code), export, safety.

The fixture (tests/fixtures/rosinality, written by its make.py with the fetched upstream repository) is a
checkpoint saved by rosinality's code and the images / logits its networks produced for stored latents.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_G
from safetensors.torch import load_file

from fewshot.checkpoint import bundle_from_foreign, export_rosinality, load_bundle, load_checkpoint, save_bundle
from fewshot.errors import FewshotError
from fewshot.rosinality import MEAN_LATENT_SAMPLES, rosinality_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "rosinality"
CKPT = FIXTURE / "ckpt.pt"
PIXEL = 1 / 127.5  # one 8-bit level of an image in [-1, 1]
# D logits are sums over ~10^3 products in float32 (unit roundoff 6e-8) along either implementation's order.
LOGIT_TOL = 1e-4


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """``fewshot ARGS`` in this process (its entry point, so errors render as the user sees them):
    (exit code, stdout, stderr). In-process: a subprocess per call costs a torch import each."""
    from fewshot.cli.main import main

    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "fewshot-home"))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            code = 0
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def reference():
    return load_file(str(FIXTURE / "reference.safetensors"))


@pytest.fixture(scope="module")
def imported():
    bundle, training = bundle_from_foreign(CKPT)
    return bundle, training


def test_images_and_logits_match_rosinalitys_own(imported, reference):
    bundle, training = imported
    assert set(bundle.networks) == {"G", "G_ema", "D"}
    with torch.no_grad():
        for name, key in (("G_ema", "img"), ("G", "img_g")):
            img = bundle.networks[name](reference["z"], None, noise_mode="const")
            assert (img - reference[key]).abs().max() < PIXEL, name
        D = bundle.networks["D"]
        assert (D(reference["img"]) - reference["d_logits"]).abs().max() < LOGIT_TOL
        assert (D(reference["d_input"]) - reference["d_logits_input"]).abs().max() < LOGIT_TOL
    # The two generators differ, so a swapped g / g_ema would fail above.
    assert (reference["img"] - reference["img_g"]).abs().max() > 10 * PIXEL
    assert training == {"augment_p": 0.25}
    prov = bundle.provenance
    assert prov["source_format"].startswith("rosinality") and len(prov["source_sha256"]) == 64
    assert prov["rosinality_args"]["size"] == 16 and f"{MEAN_LATENT_SAMPLES} mapped z" in prov["truncation"]
    syn = bundle.networks["G_ema"].init_kwargs["synthesis_kwargs"]
    assert syn["conv_clamp"] is None and syn["architecture"] == "skip"


def test_latent_avg_becomes_w_avg(tmp_path, imported):
    data = torch.load(CKPT, weights_only=False)  # our own fixture
    data["latent_avg"] = torch.arange(16, dtype=torch.float32)
    path = tmp_path / "with_avg.pt"
    torch.save(data, path)
    bundle, _ = bundle_from_foreign(path)
    assert torch.equal(bundle.networks["G_ema"].mapping.w_avg, data["latent_avg"])
    assert "latent_avg" in bundle.provenance["truncation"]
    data["latent_avg"] = data["latent_avg"][None].repeat(6, 1)  # one row per layer (e4e's ckpts hold [n_latent, w])
    torch.save(data, path)
    bundle, _ = bundle_from_foreign(path)
    assert torch.equal(bundle.networks["G_ema"].mapping.w_avg, torch.arange(16, dtype=torch.float32))
    # Without latent_avg: rosinality's mean_latent, from a fixed seed (the same every time).
    again, _ = bundle_from_foreign(CKPT)
    assert torch.equal(again.networks["G_ema"].mapping.w_avg, imported[0].networks["G_ema"].mapping.w_avg)


def test_legacy_torch_save_format_is_read_too(tmp_path, imported):
    data = torch.load(CKPT, weights_only=False)
    path = tmp_path / "old.pt"
    torch.save(data, path, _use_new_zipfile_serialization=False)
    bundle = load_checkpoint(path)
    for name, net in imported[0].networks.items():
        for key, value in net.state_dict().items():
            assert torch.equal(bundle.networks[name].state_dict()[key], value), key


def test_cli_convert_info_export_round_trip(tmp_path, cli):
    bundle_path = tmp_path / "base.safetensors"
    code, _, err = cli("convert", str(CKPT), str(bundle_path))
    assert code == 0, err
    code, out, err = cli("info", str(bundle_path))
    assert code == 0, err
    assert "source_format=rosinality" in out and "truncation: w_avg = mean of 4096" in out

    out = tmp_path / "fine.pt"
    code, _, err = cli("convert", str(bundle_path), str(out), "--to", "rosinality")
    assert code == 0, err
    # What rosinality's code loads: the same keys and tensors as the checkpoint its own code saved.
    original, exported = torch.load(CKPT, weights_only=False), torch.load(out, weights_only=True)
    for key in ("g_ema", "g", "d"):
        assert set(exported[key]) == set(original[key]), key
        for name, value in original[key].items():
            assert torch.equal(exported[key][name], value), f"{key}.{name}"
    # The fixture's scaled-down channel table fits no channel_multiplier of rosinality's stock table: said so.
    assert exported["args"] == {"size": 16, "latent": 16, "n_mlp": 2} and "channel_multiplier" in err
    bundle = load_bundle(bundle_path)
    assert torch.equal(exported["latent_avg"], bundle.networks["G_ema"].mapping.w_avg)

    # ... and back: bit-exact the bundle it came from.
    again, _ = bundle_from_foreign(out)
    for name, net in bundle.networks.items():
        for key, value in net.state_dict().items():
            assert torch.equal(again.networks[name].state_dict()[key], value), f"{name}.{key}"
    assert "latent_avg" in again.provenance["truncation"]


class _Shell:
    """Unpickles as ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_pt_with_code_is_refused_and_runs_nothing(tmp_path, cli):
    marker = tmp_path / "pwned"
    evil = tmp_path / "550000.pt"
    sd = torch.load(CKPT, weights_only=False)["g_ema"]
    torch.save({"g_ema": sd, "args": _Shell(f"touch '{marker}'")}, evil)
    with pytest.raises(FewshotError, match=r"refusing to load .*posix\.system") as info:
        load_checkpoint(evil)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    code, _, err = cli("convert", str(evil), str(tmp_path / "x.safetensors"))
    assert code == 1 and len(err.strip().splitlines()) <= 2, err
    assert "Traceback" not in err and "refusing to load" in err
    assert not marker.exists() and not (tmp_path / "x.safetensors").exists()


def test_not_a_rosinality_layout(tmp_path):
    data = torch.load(CKPT, weights_only=False)
    del data["g_ema"]["conv1.noise.weight"]
    path = tmp_path / "broken.pt"
    torch.save(data, path)
    with pytest.raises(FewshotError, match="missing 'conv1.noise.weight'"):
        load_checkpoint(path)
    data = torch.load(CKPT, weights_only=False)
    data["g_ema"]["extra.weight"] = torch.zeros(1)
    torch.save(data, path)
    with pytest.raises(FewshotError, match="unexpected 1 tensor"):
        load_checkpoint(path)


def test_export_refuses_what_rosinality_cannot_hold(tmp_path):
    G = make_tiny_G()
    conditional = type(G)(**{**G.init_kwargs, "c_dim": 3})
    with pytest.raises(FewshotError, match="class-conditional"):
        rosinality_checkpoint({"G_ema": conditional})
    path = save_bundle(tmp_path / "c.safetensors", {"G": conditional})
    with pytest.raises(FewshotError, match="G cannot be written in rosinality's format: it is class-conditional"):
        export_rosinality(path, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()
    json.dumps(rosinality_checkpoint({"G_ema": G})["args"])  # plain values only
