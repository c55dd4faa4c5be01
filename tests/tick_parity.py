"""One tick of every preset, hashed: the fixture that holds a refactor to bit-identical training.

``python tests/tick_parity.py OUT.json [PRESET ...]`` trains each preset for one tick (two batches, every lazy
phase included) on tiny networks fine-tuned from a seeded tiny base (of the preset's network family), with a
seeded random ResNet-18 file for Reg-DGM and a toy DISP extractor, and writes, as JSON, this machine's kernel
fingerprint (:func:`kernel_fingerprint`), ``{preset: sha256 of every tensor of the final snapshot}`` and
``{preset: summary}`` (:func:`tensor_summary`). ``python tests/tick_parity.py --record [PRESET ...]`` adds the
results to ``tests/fixtures/tick_parity.json``: the hashes to this machine's kernel family, the summaries where a
preset has none. Record only from code whose ticks match a recorded family (a green ``make test``): the fixture
holds the training as it was, not as it is.

The run uses the libraries' portable kernel paths, set before torch is imported: oneDNN held to SSE4.1, ATen's
scalar kernels, MKL in its conditional numerical reproducibility mode, one thread, and fewshot's reference ops
(which define the compiled ones; tests/test_ops.py holds the two together). oneDNN is also switched off
(:func:`portable_torch`): its convolutions run on its own JIT sgemm, whose blocking follows the cache sizes it
detects, so even at SSE4.1 an AMD EPYC and an Intel Xeon summed in different orders (every hash differed);
without it PyTorch convolves by im2col on MKL's sgemm.

Even so the hashes are not the same on every x86-64 CPU: MKL ignores its reproducibility branch on a CPU that is
not Intel's (on an AMD EPYC with AVX-512 every ``MKL_CBWR`` value but ``COMPATIBLE`` gave one result and
``COMPATIBLE`` another, neither the Intel one). So the fixture keeps one table of hashes per kernel family, and a
machine is placed in a family by its kernel fingerprint, else by agreeing with the family's hashes on some preset.
A machine of no recorded family compares the summaries instead, within :data:`SUMMARY_TOLERANCE` (and says so):
that catches a lost phase or loss term, not a changed rounding.
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
import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tick_parity.json"
# How far (relative to its norm) a network tensor's summary may move between kernel families. Measured on one AMD
# EPYC between MKL's COMPATIBLE and AUTO branches with ATen's scalar and AVX-512 kernels: 1.3e-3 at most (adafm, a
# toRGB bias), under 1e-6 in most presets -- float32 roundings that one tick of Adam amplifies where a gradient is
# near zero. What it catches, measured the same way: G's learning rate 10% off (3e-2 to 1.4e-1), path length
# dropped (0.4 to 1.2), the EMA half-life changed (0.15 to 1); not R1's gamma 10% off (under 4e-4).
SUMMARY_TOLERANCE = 1e-2

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


def snapshot_tensors(path: Path) -> dict:
    """Every tensor of a snapshot: each network's state dict and the training state, by one flat key."""
    from fewshot.checkpoint import load_bundle

    bundle = load_bundle(path, with_state=True)
    items = {f"net.{n}.{k}": v for n, net in bundle.networks.items() for k, v in net.state_dict().items()}
    items.update({f"state.{k}": v for k, v in bundle.state_tensors.items()})
    return {key: items[key].detach().contiguous().cpu() for key in sorted(items)}


def tensor_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for key, value in snapshot_tensors(path).items():
        digest.update(key.encode())
        digest.update(str(value.dtype).encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def tensor_summary(path: Path) -> dict[str, list[float]]:
    """``{key: [norm, projection]}`` of each floating network tensor: its L2 norm and its dot product with a fixed
    random unit vector of signs (numpy's PCG64, seeded by the key: the same on every machine), in float64."""
    import numpy as np

    summary = {}
    for key, value in snapshot_tensors(path).items():
        if not key.startswith("net.") or not value.is_floating_point():
            continue
        flat = value.double().flatten().numpy()
        signs = np.random.default_rng(zlib.crc32(key.encode())).choice((-1.0, 1.0), flat.size) / math.sqrt(flat.size)
        summary[key] = [float(f"{np.linalg.norm(flat):.9g}"), float(f"{signs @ flat:.9g}")]
    return summary


def kernel_fingerprint() -> str:
    """sha256 of float32 results of the kernels a tick runs, on fixed inputs under the portable paths: MKL's sgemm
    (mm, addmm, bmm), PyTorch's im2col convolutions forward and backward, strided and transposed, and ATen's
    reductions and pointwise maths. Two machines with one fingerprint sum in the same orders."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    x, w = rand(2, 8, 11, 11).requires_grad_(), rand(16, 8, 3, 3).requires_grad_()
    y = F.conv2d(x, w, padding=1)
    results = [
        rand(37, 53) @ rand(53, 29), torch.addmm(rand(29), rand(64, 300), rand(300, 29)),
        torch.bmm(rand(4, 17, 33), rand(4, 33, 9)), y, *torch.autograd.grad(y.square().sum(), [x, w]),
        F.conv2d(rand(2, 8, 12, 12), rand(16, 8, 3, 3), stride=2), F.conv_transpose2d(rand(2, 8, 6, 6),
                                                                                    rand(8, 16, 3, 3), stride=2),
        rand(1000).exp().sum(), rand(3, 500).square().mean(dim=1), rand(999).abs().add(0.1).rsqrt().log().sum(),
    ]
    digest = hashlib.sha256()
    for value in results:
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def summary_differences(now: dict[str, list[float]], recorded: dict[str, list[float]],
                        tolerance: float = SUMMARY_TOLERANCE) -> list[str]:
    """The tensors whose summary moved by more than ``tolerance`` of the recorded norm (or that came or went)."""
    moved = [f"{key} (missing)" for key in recorded if key not in now]
    moved += [f"{key} (new)" for key in now if key not in recorded]
    for key, (norm, projection) in recorded.items():
        if key in now:
            change = max(abs(now[key][0] - norm), abs(now[key][1] - projection))
            if change > tolerance * norm or (norm == 0 and change > 0):
                moved.append(f"{key} ({change / max(norm, 1e-30):.1e} of its norm)")
    return moved


def family_of(families: list[dict], kernels: str, hashes: dict[str, str]) -> dict | None:
    """The recorded family of these kernels: the one with this fingerprint, else the one that agrees with
    ``hashes`` on the most presets (at least one), else None."""
    for family in families:
        if family.get("kernels") == kernels:
            return family
    agreeing = [(sum(family["hashes"].get(name) == digest for name, digest in hashes.items()), i)
                for i, family in enumerate(families)]
    count, index = max(agreeing, default=(0, -1))
    return families[index] if count > 0 else None


def compare(now: dict, families: list[dict], summaries: dict[str, dict]) -> tuple[list[str], str | None]:
    """``now`` (``{"kernels", "hashes", "summaries"}``) against the recorded families and summaries: the
    failures, and a note when no family is this machine's (the summaries decided)."""
    family = family_of(families, now["kernels"], now["hashes"])
    failures, by_summary = [], []
    for name, digest in sorted(now["hashes"].items()):
        if family is not None and name in family["hashes"]:
            if digest != family["hashes"][name]:
                failures.append(f"{name}: not the tensors recorded for these kernels ({family['machine']})")
        elif name not in summaries:
            failures.append(f"{name}: nothing recorded (record: python tests/tick_parity.py --record {name})")
        else:
            by_summary.append(name)
            moved = summary_differences(now["summaries"][name], summaries[name])
            if moved:
                failures.append(f"{name}: {len(moved)} tensors moved, e.g. {', '.join(moved[:3])}")
    note = None
    if by_summary:
        where = ("no recorded kernel family holds their hashes" if family is None
                 else f"the family of {family['machine']} has no hashes for them")
        note = (f"{', '.join(by_summary)}: compared by summary within {SUMMARY_TOLERANCE:g} ({where}; kernel "
                f"fingerprint {now['kernels'][:16]}, record it with python tests/tick_parity.py --record)")
    return failures, note


def one_tick(preset: str, folder: Path, fixtures: dict[str, str], family_bases: dict[str, str]) -> Path:
    from fewshot.config import resolve_config
    from fewshot.train.loop import train

    overrides = dict(TINY, outdir=str(folder / "runs"), name=preset, disp_extractor=TOY_EXTRACTOR, **fixtures)
    family = resolve_config(preset, {"data": "demo"}).arch  # a preset that names a family fine-tunes a base of it
    overrides["base"] = family_bases.get(family, overrides["base"])
    run = train(resolve_config(preset, overrides), progress=False, echo=lambda m: None, plan=False)
    return sorted((run / "checkpoints").glob("snapshot-*.safetensors"))[-1]


def machine_name() -> str:
    import platform

    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def portable_torch() -> None:
    """The in-process half of the portable paths: one thread, and no oneDNN (see the module's docstring)."""
    import torch

    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False


def main(argv: list[str]) -> None:
    from fewshot.config import list_presets

    portable_torch()
    record = argv[:1] == ["--record"]
    out = FIXTURE if record else Path(argv[0])
    presets = argv[1:] or list_presets()
    register_toy_extractor()
    result = {"kernels": kernel_fingerprint(), "hashes": {}, "summaries": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fixtures = _fixtures(folder)
        family_bases = stylegan3_bases(folder)
        for preset in presets:
            snapshot = one_tick(preset, folder, fixtures, family_bases)
            result["hashes"][preset] = tensor_digest(snapshot)
            result["summaries"][preset] = tensor_summary(snapshot)
    if record:
        result = record_into(json.loads(FIXTURE.read_text()), result)
    out.write_text(fixture_text(result))


def fixture_text(value: dict) -> str:
    """Indented JSON with each summary's pair of numbers on its key's line."""
    text = json.dumps(value, indent=1, sort_keys=True)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def record_into(fixture: dict, result: dict) -> dict:
    """The fixture with ``result``'s hashes in this machine's family (a new one where none is) and its
    summaries for the presets that had none."""
    family = family_of(fixture["families"], result["kernels"], result["hashes"])
    if family is None:
        family = {"machine": machine_name(), "kernels": result["kernels"], "hashes": {}}
        fixture["families"].append(family)
    family["kernels"] = family.get("kernels") or result["kernels"]
    family["hashes"].update(result["hashes"])
    for name, summary in result["summaries"].items():
        fixture["summaries"].setdefault(name, summary)
    return fixture


if __name__ == "__main__":
    main(sys.argv[1:])
