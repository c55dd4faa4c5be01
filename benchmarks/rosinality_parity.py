"""Side-by-side parity of fewshot's rosinality import against rosinality/stylegan2-pytorch's own code.

Needs that repository fetched outside this one (never committed):

    OMP_NUM_THREADS=1 python benchmarks/rosinality_parity.py /tmp/upstream/rosinality

For each config, builds rosinality's stock Generator and Discriminator (its own channel table), randomises
every parameter, saves a checkpoint as its train.py / convert_weight.py do (with ``latent_avg``), imports it
with fewshot, and compares for the same z: images with the stored noise buffers, images with the same random
noise (given to rosinality per layer, written into fewshot's noise buffers), images at truncation 0.5 around
``latent_avg``, and D logits on random images. Differences are in 8-bit pixel units (x 127.5 for [-1, 1]).
Then exports the imported bundle back and checks the tensors are those of the original checkpoint.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [  # (size, style_dim, n_mlp, channel_multiplier)
    (32, 64, 2, 1),
    (64, 64, 4, 1),
    (64, 128, 8, 2),
]


def _make_module():
    spec = importlib.util.spec_from_file_location("rosinality_fixture_make", ROOT / "tests/fixtures/rosinality/make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_config(model, make, size: int, style_dim: int, n_mlp: int, multiplier: int, folder: Path) -> dict:
    from fewshot.checkpoint import bundle_from_foreign
    from fewshot.rosinality import rosinality_checkpoint

    rng = torch.Generator().manual_seed(size + style_dim)
    g_ema = model.Generator(size, style_dim, n_mlp, channel_multiplier=multiplier).eval()
    d = model.Discriminator(size, channel_multiplier=multiplier).eval()
    make.randomise(g_ema, rng)
    make.randomise(d, rng)
    latent_avg = torch.randn([style_dim], generator=rng)
    path = folder / f"r{size}.pt"
    torch.save({"g_ema": g_ema.state_dict(), "d": d.state_dict(), "latent_avg": latent_avg}, path)
    bundle, _ = bundle_from_foreign(path)
    G, D = bundle.networks["G_ema"], bundle.networks["D"]
    z = torch.randn([4, style_dim], generator=rng)
    noise = [torch.randn(b.shape, generator=rng) for b in g_ema.noises.buffers()]
    result = {"config": f"{size} px, style_dim {style_dim}, n_mlp {n_mlp}, channel_multiplier {multiplier}"}
    with torch.no_grad():
        theirs, _ = g_ema([z], randomize_noise=False)
        result["const noise"] = (G(z, None, noise_mode="const") - theirs).abs().max().item() * 127.5
        theirs_trunc, _ = g_ema([z], randomize_noise=False, truncation=0.5, truncation_latent=latent_avg[None])
        ours_trunc = G(z, None, truncation_psi=0.5, noise_mode="const")
        result["truncation 0.5"] = (ours_trunc - theirs_trunc).abs().max().item() * 127.5
        theirs_noise, _ = g_ema([z], noise=noise)
        buffers = [m for m in G.modules() if hasattr(m, "noise_const")]
        for module, n in zip(buffers, noise, strict=True):
            module.noise_const.copy_(n[0, 0])
        result["same random noise"] = (G(z, None, noise_mode="const") - theirs_noise).abs().max().item() * 127.5
        images = torch.randn([4, 3, size, size], generator=rng)
        result["D logits"] = (D(images) - d(images)).abs().max().item()
        result["image range"] = f"{theirs.min().item():.2f}..{theirs.max().item():.2f}"
    bundle, _ = bundle_from_foreign(path)
    back = rosinality_checkpoint(bundle.networks)
    original = torch.load(path, weights_only=True)
    result["export bit-exact"] = all(
        set(back[key]) == set(original[key]) and all(torch.equal(back[key][k], v) for k, v in original[key].items())
        for key in ("g_ema", "d")
    ) and torch.equal(back["latent_avg"], original["latent_avg"])
    return result


def main(repo: str) -> None:
    make = _make_module()
    model = make.load_upstream(repo)
    with tempfile.TemporaryDirectory() as tmp:
        for config in CONFIGS:
            print(run_config(model, make, *config, Path(tmp)), flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/upstream/rosinality")
