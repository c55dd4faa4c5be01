"""Class labels and class-conditional bases: dataset.json and sub-folder labels, conditional fine-tuning from an
official-format conditional pickle (exact resume, per-class samples), --class N, from scratch with labels, and
the one-line refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy
import pytest
import torch
from conftest import make_tiny_D, make_tiny_G
from official_format import make_official_pickle

from fewshot.checkpoint import load_bundle, load_checkpoint, read_header
from fewshot.config import resolve_config
from fewshot.errors import FewshotError
from fewshot.train.loop import train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(
    resolution=32, z_dim=32, w_dim=32, map_layers=2, channel_base=256, channel_max=32, num_fp16_res=0,
    conv_clamp=None, batch=4, mbstd_group=2, tick_kimg=0.008, snap=1, keep=10, r1_interval=2, pl_interval=2,
    gamma=0.5, aug="ada", aug_p=0.3, ada_kimg=0.05, sample_grid=(2, 2), device="cpu", seed=3, mirror=True,
)
CLASSES = ("cats", "dogs", "owls")


def _quiet(_message: str) -> None:
    return None


def _png(path: Path, colour: int, seed: int) -> None:
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 64, (32, 32, 3), generator=gen, dtype=torch.uint8)
    pixels[..., colour % 3] += 150  # each class its own colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.numpy()).save(path)


def labelled_folder(root: Path, per_class: int = 3, layout: str = "json") -> Path:
    """``per_class`` PNGs of each of three classes: in sub-folders named after the classes (``folders``), or in
    the official dataset tool's numbered folders with a dataset.json (``json``)."""
    entries = []
    for k, name in enumerate(CLASSES):
        for i in range(per_class):
            rel = f"{name}/{i}.png" if layout == "folders" else f"0000{i % 2}/img{k}{i:03d}.png"
            _png(root / rel, k, seed=10 * k + i)
            entries.append([rel, k])
    if layout == "json":
        (root / "dataset.json").write_text(json.dumps({"labels": entries}))
    return root


def conditional_base(path: Path, c_dim: int = 3) -> Path:
    G = make_tiny_G(1, c_dim=c_dim)
    D = make_tiny_D(2, c_dim=c_dim)
    return make_official_pickle(path, G=G, D=D, G_ema=G)


def cfg_for(tmp_path: Path, data: Path | str, **extra):
    return resolve_config(None, {**TINY, "data": str(data), "outdir": str(tmp_path / "runs"), "name": "t", **extra})


def _tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    bundle = load_bundle(run_dir / "final.safetensors")
    return {f"{n}.{k}": v for n, net in bundle.networks.items() for k, v in net.state_dict().items()}


def test_dataset_json_labels_follow_the_kept_images(tmp_path):
    from fewshot.data import load_images
    from fewshot.labels import read_labels

    data = labelled_folder(tmp_path / "d")
    (data / "00000" / "img0000.png").write_bytes(b"not a png")  # skipped by the loader: needs no label
    images = load_images(data, 32, max_images=7, progress=False)
    labels = read_labels(data, images.names, "auto")
    assert labels.num_classes == 3 and labels.source == "dataset.json"
    assert labels.indices.tolist() == [int(n.split("/img")[1][0]) for n in images.names]
    assert len(labels.indices) == 7
    archive = tmp_path / "d.zip"  # the same in a zip, as the official dataset tool writes it
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(data.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(data).as_posix())
    zipped = load_images(archive, 32, progress=False)
    assert torch.equal(read_labels(archive, zipped.names, "auto").indices,
                       read_labels(data, zipped.names, "auto").indices)
    assert read_labels(data, images.names, "none") is None
    entries = json.loads((data / "dataset.json").read_text())["labels"]
    kept = [e for e in entries if e[0] != images.names[0]]
    (data / "dataset.json").write_text(json.dumps({"labels": kept}))
    with pytest.raises(FewshotError, match="have no label"):
        read_labels(data, images.names, "auto")


def test_conditional_fine_tune_from_an_official_pickle_resumes_exactly_and_samples_per_class(tmp_path):
    data = labelled_folder(tmp_path / "d")
    base = conditional_base(tmp_path / "cond.pkl")
    said: list[str] = []
    straight = train(cfg_for(tmp_path, data, base=str(base), kimg=0.016, name="straight"), progress=False,
                     echo=said.append)
    assert "labels from dataset.json: 3 classes (0: 3, 1: 3, 2: 3)" in "\n".join(said)
    first = train(cfg_for(tmp_path, data, base=str(base), kimg=0.008, name="split"), progress=False, echo=_quiet)
    resumed = train(cfg_for(tmp_path, data, base=str(base)), resume=str(first), kimg_override=0.016,
                    progress=False, echo=_quiet)
    a, b = _tensors(straight), _tensors(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    base_G = load_checkpoint(base).networks["G_ema"]
    changed = _tensors(straight)
    assert not torch.equal(changed["G.mapping.embed.weight"], base_G.state_dict()["mapping.embed.weight"])
    header = read_header(straight / "final.safetensors")
    assert header.specs["G"].init_kwargs["c_dim"] == 3 and header.specs["D"].init_kwargs["c_dim"] == 3
    assert header.training["labels"] == {"classes": 3, "source": "dataset.json"}

    from fewshot.synthesis import class_labels, seed_latents

    G = load_bundle(straight / "final.safetensors").networks["G_ema"].eval()
    z = seed_latents([0, 1], G.z_dim)
    with torch.no_grad():
        per_class = [G(z, class_labels(G, 2, k), noise_mode="const") for k in range(3)]
    assert not torch.equal(per_class[0], per_class[1]) and not torch.equal(per_class[1], per_class[2])


def test_train_with_class_n_and_the_dataset_labels_distribution(tmp_path):
    """--class N: every image is class N, for reals and fakes alike; with labels, fakes' labels are drawn from
    the data (here all of one class, so every drawn label is that class)."""
    from fewshot.train.setup import Request, setup

    data = labelled_folder(tmp_path / "d")
    (data / "dataset.json").unlink()
    base = conditional_base(tmp_path / "cond.pkl")
    from contextlib import ExitStack

    with ExitStack() as held:
        run = setup(cfg_for(tmp_path, data, base=str(base), class_index=2), Request(plan=False), _quiet, held)
        real, real_c, _, phase_c = run.draw(torch.Generator().manual_seed(0))
        assert real_c.argmax(1).tolist() == [2] * 4 and all(c.argmax(1).tolist() == [2] * 4 for c in phase_c)
        assert run.grid_priors.argmax(1).tolist() == [2] * 4
    with ExitStack() as held:  # labelled: the fixed-latent grid has one class per row, reals.png the same classes
        labelled_folder(tmp_path / "labelled")
        run = setup(cfg_for(tmp_path, tmp_path / "labelled", base=str(base), name="grid"), Request(plan=False),
                    _quiet, held)
        assert run.grid_priors.argmax(1).tolist() == [0, 0, 1, 1]
        from fewshot.train.labels import grid_cells

        _, shown = grid_cells(run.images.labels, 2, 2)
        assert run.images.labels.indices[shown].tolist() == [0, 0, 1, 1]
    done = train(cfg_for(tmp_path, data, base=str(base), class_index=2, kimg=0.008, name="c2"), progress=False,
                 echo=_quiet)
    assert read_header(done / "final.safetensors").training["labels"] == {"classes": 3, "source": "--class 2"}
    with pytest.raises(FewshotError, match="out of range"):
        train(cfg_for(tmp_path, data, base=str(base), class_index=3), dry_run=True, progress=False, echo=_quiet)


def test_scratch_with_folder_labels_builds_conditional_networks_and_names_the_classes(tmp_path):
    data = labelled_folder(tmp_path / "d", layout="folders")
    said: list[str] = []
    train(cfg_for(tmp_path, data, labels="folders"), dry_run=True, progress=False, echo=said.append)
    assert "labels from folders: 3 classes (cats: 3, dogs: 3, owls: 3)" in "\n".join(said)
    done = train(cfg_for(tmp_path, data, labels="folders", kimg=0.008), progress=False, echo=_quiet)
    header = read_header(done / "final.safetensors")
    assert header.specs["G"].init_kwargs["c_dim"] == 3 and header.specs["D"].init_kwargs["c_dim"] == 3
    assert header.training["labels"] == {"classes": 3, "source": "folders", "names": list(CLASSES)}
    final = done / "final.safetensors"
    info = _cli("info", str(final), home=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "classes: 3 (0 cats, 1 dogs, 2 owls; sample one with --class N or a name)" in info.stdout
    sheet = tmp_path / "sheet"
    every = _cli("sample", str(final), "--class", "all", "--seeds", "0-1", "--outdir", str(sheet), "--device", "cpu",
                 home=tmp_path)
    assert every.returncode == 0, every.stderr
    from PIL import Image

    grid = torch.from_numpy(numpy.array(Image.open(sheet / "grid.png")))
    assert grid.shape == (3 * 32, 2 * 32, 3)  # one row per class, a column per seed
    rows = grid.view(3, 32, 2 * 32, 3)
    assert not torch.equal(rows[0], rows[1]) and not torch.equal(rows[1], rows[2])
    by_name = _cli("sample", str(final), "--class", "owls", "--seeds", "1", "--outdir", str(tmp_path / "owls"),
                   "--device", "cpu", home=tmp_path)
    assert by_name.returncode == 0, by_name.stderr
    assert (Image.open(tmp_path / "owls" / "seed0001.png").tobytes()
            == Image.open(sheet / "class02-owls" / "seed0001.png").tobytes())
    mixed = _cli("mix", str(final), "--rows", "1", "--cols", "2", "--class", "dogs", "--out", str(tmp_path / "m.png"),
                 "--device", "cpu", home=tmp_path)
    assert mixed.returncode == 0 and (tmp_path / "m.png").exists(), mixed.stderr
    bad = _cli("sample", str(final), "--class", "bats", "--outdir", str(tmp_path / "bats"), home=tmp_path)
    assert bad.returncode == 1 and "its classes: cats, dogs, owls" in bad.stderr
    # Without --labels folders the class folders are plain folders: an unconditional run, as before.
    plain = train(cfg_for(tmp_path, data, kimg=0.008, name="plain"), progress=False, echo=_quiet)
    assert read_header(plain / "final.safetensors").specs["G"].init_kwargs["c_dim"] == 0


def test_unconditional_base_ignores_labels_and_disp_refuses_a_conditional_base(tmp_path):
    data = labelled_folder(tmp_path / "d")
    plain = make_official_pickle(tmp_path / "plain.pkl", G=make_tiny_G(1), D=make_tiny_D(2), G_ema=make_tiny_G(1))
    said: list[str] = []
    train(cfg_for(tmp_path, data, base=str(plain)), dry_run=True, progress=False, echo=said.append)
    assert any(line.startswith("note: the base is unconditional, so the dataset.json labels are ignored")
               for line in said)
    conditional = conditional_base(tmp_path / "c.pkl")
    with pytest.raises(FewshotError, match="already conditional"):  # DISP's priors take the conditioning path
        train(cfg_for(tmp_path, data, base=str(conditional), disp=True), dry_run=True, progress=False, echo=_quiet)
    with pytest.raises(FewshotError, match="DISP conditions on instance priors"):
        train(cfg_for(tmp_path, data, base=str(conditional), class_index=0, disp=True), dry_run=True,
              progress=False, echo=_quiet)


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    # Reference ops: a fresh FEWSHOT_HOME would otherwise build the compiled ones first (minutes on a busy CPU).
    env = dict(os.environ, FEWSHOT_HOME=str(home), FEWSHOT_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO),
               FEWSHOT_OPS="reference")
    return subprocess.run([sys.executable, "-m", "fewshot", *args], capture_output=True, text=True, env=env,
                          timeout=240, cwd=REPO)


def test_cli_unlabelled_data_with_a_conditional_base_is_one_line_offering_class_or_labels(tmp_path):
    data = labelled_folder(tmp_path / "d")
    (data / "dataset.json").unlink()
    base = conditional_base(tmp_path / "cond.pkl")
    done = _cli("train", str(data), "--base", str(base), "--preset", "ada", "--dry-run", home=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) <= 2 and lines[0].startswith("error: the base is class-conditional (3 classes) but the "
                                                   "images have no labels")
    assert "--class N" in done.stderr and "dataset.json" in done.stderr
    ok = _cli("train", str(data), "--base", str(base), "--preset", "ada", "--class", "1", "--dry-run",
              home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "class_index = 1" in ok.stdout
