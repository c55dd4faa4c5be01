"""Record what NVIDIA's StyleGAN3 code draws for two tiny networks: tests/fixtures/stylegan3_parity.npz.

tests/test_stylegan3.py checks that fewshot draws the same images (same seed, same ``--translate`` /
``--rotate`` / ``--trunc``) from the same weights. This script is the side-by-side run that made the
fixture; it needs a checkout of https://github.com/NVlabs/stylegan3 (never committed here: NVIDIA
Source Code License-NC) and runs it on the CPU, where its custom ops fall back to their reference code.

What it does:

1. builds a tiny stylegan3-t and stylegan3-r generator (32 px) with fewshot, seeded, every tensor moved
   off its initial value and rounded to a float16-representable float32 (so the fixture stores the weights
   exactly in half the bytes);
2. builds the official ``training.networks_stylegan3.Generator`` with the same kwargs, loads those weights
   and pickles ``{G, D, G_ema}`` with the official persistence (a genuine pickle, module source embedded);
3. runs the official ``gen_images.py`` on it (a copy whose ``torch.device('cuda')`` reads ``'cpu'``), once per
   setting, for its PNGs; and calls the official network as gen_images.py does for the float outputs;
4. imports the genuine pickle with fewshot's safe loader and renders the same settings with
   ``fewshot.synthesis.generate_images`` under ``fewshot.equivariance.transformed_input``;
5. writes the weights (float16, exact), the settings, the official float outputs (float16) and the measured
   differences.

Usage::

    python scripts/sg3_parity_fixtures.py --official /tmp/upstream/sg3 [--workdir /tmp/sg3run]

Missing third-party modules the official code imports but never uses here (``requests``, ``pkg_resources``)
are replaced by stubs in the work folder.
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Two tiny nets: T (3x3 convs, Kaiser filters) and R (1x1 convs, radial filters, doubled channels, as train.py).
NETS = {
    "T": dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=3, mapping_kwargs={"num_layers": 2},
              channel_base=128, channel_max=8),
    "R": dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=32, img_channels=3, mapping_kwargs={"num_layers": 2},
              channel_base=128, channel_max=16, conv_kernel=1, use_radial_filters=True),
}
# (seed, translate, rotate, psi): as gen_images.py's --seeds, --translate, --rotate, --trunc.
SETTINGS = [(0, (0.0, 0.0), 0.0, 1.0), (1, (0.3, -0.2), 0.0, 1.0), (2, (0.0, 0.0), 25.0, 0.7),
            (3, (0.1, 0.25), -40.0, 1.0)]
DESIGNED = ("up_filter", "down_filter", "transform")  # buffers the constructor designs: not stored
STUBS = {
    "requests.py": "# stub: dnnlib imports requests only for downloads\n",
    "pkg_resources.py": ("def parse_version(v):  # stub: conv2d_gradfix compares torch versions with it\n"
                         "    return tuple(int(p) if p.isdigit() else 0 for p in v.split('+')[0].split('.')[:3])\n"),
}


def fixture_weights(kwargs: dict, seed: int) -> dict[str, torch.Tensor]:
    """Seeded fewshot weights, moved off their initial values, rounded to float16-representable values."""
    from fewshot.nets.stylegan3 import StyleGAN3Generator

    torch.manual_seed(seed)
    G = StyleGAN3Generator(**kwargs)
    gen = torch.Generator().manual_seed(seed + 100)
    state = {}
    for name, t in G.state_dict().items():
        if name.endswith(DESIGNED):
            continue
        t = t + torch.randn(t.shape, generator=gen) * 0.2 if not name.endswith(("freqs", "phases")) else t
        state[name] = t.half().float()
    G.load_state_dict(state, strict=False)
    calibrate_magnitudes(G, gen)
    return {name: t.half().float() for name, t in G.state_dict().items() if not name.endswith(DESIGNED)}


def calibrate_magnitudes(G: torch.nn.Module, gen: torch.Generator) -> None:
    """Give each layer's ``magnitude_ema`` about the mean square of what it sees (within +-20%), as training
    leaves it: with the initial 1.0 an untrained network's signal fades layer by layer to a nearly flat picture."""
    z = torch.from_numpy(np.random.RandomState(123).randn(8, G.z_dim)).float()
    with torch.no_grad():
        ws = G.mapping(z, None).unbind(dim=1)
        x = G.synthesis.input(ws[0])
        for layer, w in zip(G.synthesis.layers(), ws[1:], strict=True):
            layer.magnitude_ema.copy_(x.square().mean() * (0.8 + 0.4 * torch.rand([], generator=gen)))
            x = layer(x, w)


def official_side(work: Path, name: str, state: dict[str, torch.Tensor]) -> tuple[Path, list]:
    """The genuine official pickle of the weights, gen_images.py's PNGs and the official float outputs."""
    import gen_images
    import legacy
    import PIL.Image
    from training.networks_stylegan2 import Discriminator
    from training.networks_stylegan3 import Generator

    G = Generator(**NETS[name]).eval()
    missing, unexpected = G.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith(DESIGNED) for k in missing), (missing, unexpected)
    pkl = work / f"tiny-{name}.pkl"
    D = Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=256, channel_max=16)
    with pkl.open("wb") as fh:  # a published pickle's layout: StyleGAN3's G and G_ema beside StyleGAN2's D
        pickle.dump({"G": copy.deepcopy(G), "D": D, "G_ema": G, "augment_pipe": None}, fh)
    with pkl.open("rb") as fh:
        G = legacy.load_network_pkl(fh)["G_ema"]
    results = []
    for seed, translate, rotate, psi in SETTINGS:
        out = work / f"png-{name}-{seed}"
        subprocess.run([sys.executable, str(work / "gen_images.py"), f"--network={pkl}", f"--seeds={seed}",
                        f"--trunc={psi}", f"--translate={translate[0]},{translate[1]}", f"--rotate={rotate}",
                        f"--outdir={out}"], check=True, cwd=work, capture_output=True)
        png = np.asarray(PIL.Image.open(out / f"seed{seed:04d}.png"))
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim))
        m = np.linalg.inv(gen_images.make_transform(translate, rotate))
        G.synthesis.input.transform.copy_(torch.from_numpy(m))
        with torch.no_grad():
            raw = G(z, torch.zeros([1, 0]), truncation_psi=psi, noise_mode="const")
        assert np.array_equal((raw.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy(), png)
        results.append((raw[0].numpy(), png))
    return pkl, results


def fewshot_side(pkl: Path) -> list[np.ndarray]:
    """fewshot's images of the same settings, from the genuine pickle through the safe importer."""
    from fewshot.checkpoint import load_checkpoint
    from fewshot.equivariance import transformed_input
    from fewshot.synthesis import seeds_to_ws, synthesize

    G = load_checkpoint(pkl).generator
    outputs = []
    for seed, translate, rotate, psi in SETTINGS:
        with transformed_input(G, translate, rotate):
            outputs.append(synthesize(G, seeds_to_ws(G, [seed], psi=psi))[0].numpy())
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of NVlabs/stylegan3")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sg3run"))
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "stylegan3_parity.npz")
    args = parser.parse_args()

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    for stub, text in STUBS.items():
        (work / stub).write_text(text)
    source = (args.official / "gen_images.py").read_text()
    (work / "gen_images.py").write_text(source.replace("torch.device('cuda')", "torch.device('cpu')"))
    for folder in ("dnnlib", "torch_utils", "training"):
        shutil.copytree(args.official / folder, work / folder, dirs_exist_ok=True)
    shutil.copy(args.official / "legacy.py", work / "legacy.py")
    sys.path[:0] = [str(work)]

    fixture: dict[str, np.ndarray] = {"nets": np.array(json.dumps(NETS)), "settings": np.array(json.dumps(SETTINGS))}
    figures = {}
    for index, name in enumerate(NETS):
        state = fixture_weights(NETS[name], seed=index)
        pkl, official = official_side(work, name, state)
        ours = fewshot_side(pkl)
        # One flat float16 array per net (a zip entry per tensor would cost more than the data).
        fixture[f"{name}/layout"] = np.array(json.dumps([[key, list(value.shape)] for key, value in state.items()]))
        fixture[f"{name}/weights"] = np.concatenate([value.reshape(-1).numpy() for value in state.values()]).astype(
            np.float16)
        fixture[f"{name}/official"] = np.stack([raw for raw, _ in official]).astype(np.float16)
        diffs = [float(np.abs(mine - raw).max()) for mine, (raw, _) in zip(ours, official, strict=True)]
        levels = [int(np.abs((np.clip(mine.transpose(1, 2, 0) * 127.5 + 128, 0, 255)).astype(np.uint8).astype(int)
                             - png.astype(int)).max()) for mine, (_, png) in zip(ours, official, strict=True)]
        figures[name] = {"max_abs_diff": diffs, "max_uint8_levels": levels}
        print(f"{name}: max |fewshot - official| per setting {[f'{d:.2e}' for d in diffs]}, uint8 levels {levels}")
    fixture["figures"] = np.array(json.dumps(figures))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **fixture)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
