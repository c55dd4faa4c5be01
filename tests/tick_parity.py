"""One tick of every preset, hashed: the fixture that holds a refactor to bit-identical training.

``python tests/tick_parity.py OUT.json [PRESET ...]`` trains each preset for one tick (two batches, every lazy
phase included) on tiny networks fine-tuned from a seeded tiny base (of the preset's network family), with a
seeded random ResNet-18 file for Reg-DGM and a toy DISP extractor, and writes ``{preset: sha256 of every tensor
of the final snapshot}``.

The hashes must not depend on which CPU runs them, so the run uses the libraries' portable kernel paths, set
before torch is imported: oneDNN held to SSE4.1, ATen's scalar kernels, MKL in its conditional numerical
reproducibility mode (the same results on every x86-64 processor), one thread, and fewshot's reference ops
(which define the compiled ones; tests/test_ops.py holds the two together). oneDNN is also switched off
(:func:`portable_torch`): its convolutions run on its own JIT sgemm, whose blocking follows the cache sizes it
detects, so even at SSE4.1 an AMD EPYC and an Intel Xeon summed in different orders (every hash differed);
without it PyTorch convolves by im2col on MKL's sgemm, which MKL_CBWR holds to one order on every CPU.
"""

from __future__ import annotations

import os

PORTABLE_ENV = {
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "FEWSHOT_OPS": "reference",  # the plain-PyTorch definitions: no build needed, the same wherever torch runs
}

if __name__ == "__main__":
    os.environ.update(PORTABLE_ENV)

import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

TINY = dict(
    data="demo", resolution=32, z_dim=32, w_dim=32, map_layers=2, channel_base=256, channel_max=32,
    num_fp16_res=0, conv_clamp=None, batch=4, mbstd_group=2, tick_kimg=0.008, snap=1, keep=10,
    r1_interval=2, pl_interval=2, gamma=0.5, aug_p=0.3, ada_kimg=0.05, sample_grid=(2, 2), device="cpu",
    max_images=8, seed=3, kimg=0.008,
)
TOY_EXTRACTOR = "parity-toy16"


def register_toy_extractor() -> None:
    """A DISP prior extractor without weights (also for tests/test_gpu.py)."""
    import torch

    from fewshot.extractors import ExtractorSpec, Preprocess, register_extractor

    class Toy(torch.nn.Module):  # 4x4 average colours (images in [0, 1]) through a fixed random projection
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("proj", torch.randn(48, 16, generator=torch.Generator().manual_seed(7)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) @ self.proj

    register_extractor(ExtractorSpec(TOY_EXTRACTOR, lambda weights_file: Toy(), feature_dim=16, preprocess=Preprocess(),
                                     offers=("disp",), description="parity toy"), replace=True)


def _fixtures(folder: Path) -> dict[str, str]:
    """A seeded tiny base bundle and a seeded random ResNet-18 file in torchvision's format."""
    import torch
    import torchvision

    from fewshot.checkpoint import save_bundle
    from fewshot.nets import Discriminator, Generator

    torch.manual_seed(11)
    G = Generator(32, 0, 32, 32, 3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 256, "channel_max": 32, "num_fp16_res": 0, "conv_clamp": None})
    D = Discriminator(0, 32, 3, channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=None)
    gen = torch.Generator().manual_seed(12)
    with torch.no_grad():  # non-zero biases, noise strengths and w_avg, as in a trained network
        for net in (G, D):
            for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
                if tensor.is_floating_point() and not name.endswith("resample_filter"):
                    tensor.add_(torch.randn(tensor.shape, generator=gen) * 0.05)
    base = folder / "base.safetensors"
    save_bundle(base, {"G": G, "G_ema": G, "D": D})
    torch.manual_seed(13)
    resnet = folder / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    return {"base": str(base), "reg_weights": str(resnet)}


def stylegan3_bases(folder: Path) -> dict[str, str]:
    """Seeded tiny StyleGAN3-T and -R bases (4 synthesis layers) with the StyleGAN2 D, for the presets of those
    families (a base decides a run's family)."""
    import torch

    from fewshot.checkpoint import save_bundle
    from fewshot.nets import Discriminator, build_network

    bases = {}
    for family, extra in (("stylegan3-t", {}), ("stylegan3-r", {"conv_kernel": 1, "use_radial_filters": True})):
        torch.manual_seed(14)
        G = build_network("StyleGAN3Generator", dict(
            z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3, mapping_kwargs={"num_layers": 2},
            channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=None, num_layers=4, **extra))
        D = Discriminator(0, 32, 3, channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=None)
        gen = torch.Generator().manual_seed(15)
        with torch.no_grad():  # off the initial values: w_avg, the magnitude EMAs, biases
            for net in (G, D):
                for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
                    if tensor.is_floating_point() and not name.endswith(("filter", "transform")):
                        tensor.add_(torch.randn(tensor.shape, generator=gen).abs() * 0.05)
        bases[family] = str(folder / f"base-{family}.safetensors")
        save_bundle(bases[family], {"G": G, "G_ema": G, "D": D})
    return bases


def tensor_digest(path: Path) -> str:
    from fewshot.checkpoint import load_bundle

    bundle = load_bundle(path, with_state=True)
    digest = hashlib.sha256()
    items = {f"net.{n}.{k}": v for n, net in bundle.networks.items() for k, v in net.state_dict().items()}
    items.update({f"state.{k}": v for k, v in bundle.state_tensors.items()})
    for key in sorted(items):
        value = items[key].detach().contiguous().cpu()
        digest.update(key.encode())
        digest.update(str(value.dtype).encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def one_tick(preset: str, folder: Path, fixtures: dict[str, str], family_bases: dict[str, str]) -> str:
    from fewshot.config import resolve_config
    from fewshot.train.loop import train

    overrides = dict(TINY, outdir=str(folder / "runs"), name=preset, disp_extractor=TOY_EXTRACTOR, **fixtures)
    family = resolve_config(preset, {"data": "demo"}).arch  # a preset that names a family fine-tunes a base of it
    overrides["base"] = family_bases.get(family, overrides["base"])
    run = train(resolve_config(preset, overrides), progress=False, echo=lambda m: None, plan=False)
    return tensor_digest(sorted((run / "checkpoints").glob("snapshot-*.safetensors"))[-1])


def portable_torch() -> None:
    """The in-process half of the portable paths: one thread, and no oneDNN (see the module's docstring)."""
    import torch

    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False


def main(argv: list[str]) -> None:
    from fewshot.config import list_presets

    portable_torch()
    out = Path(argv[0])
    presets = argv[1:] or list_presets()
    register_toy_extractor()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fixtures = _fixtures(folder)
        family_bases = stylegan3_bases(folder)
        hashes = {preset: one_tick(preset, folder, fixtures, family_bases) for preset in presets}
    out.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
