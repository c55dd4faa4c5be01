"""End-to-end CPU runs on the real images in ../shared/data (skipped where that folder is absent).

A tiny 32 px base is trained briefly on CelebA, then fine-tuned on the 10-shot sketches with
every transfer method, and on 100 flowers with resume; samples and checkpoints must appear and
exported generators must load as plain StyleGAN2 bundles.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fewshot.checkpoint import load_bundle
from fewshot.config import resolve_config
from fewshot.train.loop import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (DATA / "celeba-10k.zip").exists(), reason="../shared/data is not available"),
]

TINY = dict(
    resolution=32, z_dim=32, w_dim=32, map_layers=2, channel_base=256, channel_max=32, num_fp16_res=0,
    conv_clamp=None, batch=4, mbstd_group=2, tick_kimg=0.008, snap=1, r1_interval=4, pl_interval=4,
    pl_weight=0.0, gamma=0.5, sample_grid=(2, 2), device="cpu", seed=1,
)


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def celeba_base(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("base")
    cfg = resolve_config(None, dict(TINY, data=str(DATA / "celeba-10k.zip"), max_images=64, kimg=0.016,
                                    aug="none", outdir=str(out), name="celeba"))
    run = train(cfg, progress=False, echo=quiet)
    return run / "final.safetensors"


@pytest.mark.parametrize(
    "transfer, extra",
    [("finetune", {}), ("freezed", {"freeze_d": 1}), ("general-part", {"general": (1, 1)}),
     ("adafm", {"general": (1, 1)})],
)
def test_each_transfer_method_fine_tunes_on_ten_sketches(celeba_base, tmp_path, transfer, extra):
    cfg = resolve_config(None, dict(TINY, data=str(DATA / "sketches-10"), base=str(celeba_base), kimg=0.008,
                                    aug="ada", transfer=transfer, outdir=str(tmp_path), name=transfer, **extra))
    run = train(cfg, progress=False, echo=quiet)
    assert (run / "samples" / "reals.png").exists() and list((run / "samples").glob("fakes_*.png"))
    final = load_bundle(run / "final.safetensors")  # exported: a plain StyleGAN2 bundle (AdaFM folded)
    assert not any("adafm" in k for k in final.networks["G_ema"].state_dict())
    base = load_bundle(celeba_base)
    if transfer in ("freezed", "general-part", "adafm"):
        # The D block nearest the image is frozen: identical to the base.
        assert torch.equal(final.networks["D"].b32.conv0.weight, base.networks["D"].b32.conv0.weight)
    if transfer == "general-part":
        assert torch.equal(final.networks["G"].synthesis.b32.conv1.weight, base.networks["G"].synthesis.b32.conv1.weight)


def test_adafm_run_resumes_from_its_snapshot(celeba_base, tmp_path):
    cfg = resolve_config(None, dict(TINY, data=str(DATA / "sketches-10"), base=str(celeba_base), kimg=0.008,
                                    aug="ada", transfer="adafm", general=(1, 1), outdir=str(tmp_path), name="a"))
    run = train(cfg, progress=False, echo=quiet)
    resumed = train(cfg, resume=str(run), kimg_override=0.016, progress=False, echo=quiet)
    log = [json.loads(x) for x in (resumed / "log.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in log] == [0.008, 0.016]


def test_hundred_flowers_train_and_resume(celeba_base, tmp_path):
    cfg = resolve_config(None, dict(TINY, data=str(DATA / "flowers-8k.zip"), max_images=100, base=str(celeba_base),
                                    kimg=0.008, aug="diffaug", outdir=str(tmp_path), name="flowers"))
    run = train(cfg, progress=False, echo=quiet)
    resumed = train(cfg, resume="latest", kimg_override=0.016, progress=False, echo=quiet)
    assert resumed == run and (run / "final.safetensors").exists()
