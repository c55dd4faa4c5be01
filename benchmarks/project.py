"""Projection speed: time per image and per step of ``fewshot project``'s loop, beside the official projector's.

For each resolution it builds what ``fewshot train --resolution R`` builds (train.py's ``--cfg auto``:
``Generator(512, 0, 512, R, 3)``, 2 mapping layers, channel_base 16384, random weights) and times
:func:`fewshot.projector.project` for ``--steps`` and for 2 steps: the difference over ``steps - 2`` is the
time per step, the rest (the w statistics of 10000 mapped latents, the copy of G, the target's features) the
fixed cost of an image.

With ``--official DIR`` (a checkout of NVlabs/stylegan2-ada-pytorch, e.g. fetched to /tmp/upstream) the same
timings are taken of its ``projector.project`` on its own ``training.networks.Generator`` holding the same
weights. Its VGG-16 is a TorchScript file (``vgg16.pt``, code fewshot does not load, and not downloadable
here): it is replaced by the same LPIPS distance fewshot uses (``fewshot.perceptual``, its ``embed`` of the
[0, 255] images the official loop passes, rescaled to [-1, 1]), so both loops pay for the same VGG-16 and the
comparison is of the loops and the generators. Without the VGG-16 weights file both use a random trunk
(``load_lpips(random_trunk=True)``): the same arithmetic, so the same time. On the CPU the official network runs
its plain-PyTorch reference ops (its CUDA plugins do not run on CPU tensors).

    .venv/bin/python benchmarks/project.py [--resolutions 32,64] [--steps 12] [--official /tmp/upstream/sg2ada] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
import types
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fewshot.nets import Generator  # noqa: E402
from fewshot.perceptual import load_lpips  # noqa: E402
from fewshot.projector import ProjectSettings, project  # noqa: E402


def build_generator(resolution: int) -> Generator:
    torch.manual_seed(0)
    G = Generator(512, 0, 512, resolution, 3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 16384})
    return G.eval().requires_grad_(False)


def target_of(G: Generator) -> torch.Tensor:
    with torch.no_grad():
        img = G(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1)), None, noise_mode="const")
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0]


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class OfficialVGG(torch.nn.Module):
    """Stands in for the official vgg16.pt: its call ``vgg16(images_0_255, resize_images=False,
    return_lpips=True)`` returns features whose squared distance is LPIPS, here fewshot's embedding."""

    def __init__(self, lpips) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.lpips = lpips

    def forward(self, images: torch.Tensor, resize_images: bool = False, return_lpips: bool = True) -> torch.Tensor:
        return self.lpips.embed(images / 127.5 - 1)


@contextlib.contextmanager
def official_projector(folder: Path, lpips):  # type: ignore[no-untyped-def]
    """The official ``project`` function and Generator class, with its VGG-16 download replaced."""
    sys.path.insert(0, str(folder))
    for unused in ("requests", "imageio"):  # imported at the top of dnnlib and projector.py; project() needs neither
        sys.modules.setdefault(unused, types.ModuleType(unused))
    import dnnlib
    import projector
    from training.networks import Generator as OfficialGenerator

    with mock.patch.object(dnnlib.util, "open_url", lambda *a, **k: contextlib.nullcontext(None)), \
            mock.patch.object(torch.jit, "load", lambda *a, **k: OfficialVGG(lpips)):
        yield projector.project, OfficialGenerator


def official_copy(OfficialGenerator, G: Generator) -> torch.nn.Module:  # type: ignore[no-untyped-def]
    off = OfficialGenerator(**G.init_kwargs)
    off.load_state_dict(G.state_dict())
    return off.eval().requires_grad_(False)


def row(label: str, short: float, long: float, steps: int) -> str:
    per_step = (long - short) / (steps - 2)
    fixed = short - 2 * per_step
    return f"| {label} | {per_step * 1000:.0f} ms | {fixed:.2f} s | {fixed + 1000 * per_step:.0f} s |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", default="32,64")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--official", type=Path, default=None, help="a stylegan2-ada-pytorch checkout")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        lpips, trunk = load_lpips(), "VGG-16 weights"
    except Exception:  # noqa: BLE001 - no weights file here: the same network with random weights
        lpips, trunk = load_lpips(random_trunk=True), "random-weight VGG-16 trunk"
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, LPIPS on a {trunk}, {args.steps} vs 2 steps, CPU")
    print("| loop | per step | per image, fixed (w stats, target) | 1000-step image |")
    print("|---|---|---|---|")
    stack = contextlib.ExitStack()
    official = stack.enter_context(official_projector(args.official, lpips)) if args.official else None
    agreement = []
    with stack:
        for resolution in (int(r) for r in args.resolutions.split(",")):
            G = build_generator(resolution)
            target = target_of(G)
            ours = [timed(lambda n=n, G=G, target=target: project(G, target, lpips, ProjectSettings(steps=n), seed=303))
                    for n in (2, args.steps)]
            print(row(f"fewshot, {resolution} px", *ours, args.steps), flush=True)
            if official is not None:
                off_project, OfficialGenerator = official
                off_G = official_copy(OfficialGenerator, G)
                theirs = [timed(lambda n=n, f=off_project, G=off_G, t=target: f(G, t, num_steps=n, device=torch.device("cpu")))
                          for n in (2, args.steps)]
                print(row(f"official projector.py, {resolution} px", *theirs, args.steps), flush=True)
                agreement.append((resolution, same_path(G, off_G, off_project, target, lpips, args.steps)))
    for resolution, (w_diff, w_moved, loop_only) in agreement:
        print(f"{resolution} px, {args.steps} steps from the same seed: max |w_fewshot - w_official| = {w_diff:.2e} "
              f"(w moved {w_moved:.2e} from its start); the loops alone, on one network and synthesis: {loop_only:.2e}")


def same_path(G, off_G, off_project, target, lpips, steps: int) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Both loops from seed 303: the official one draws its noise maps and w noise from torch's global generator
    seeded so (as its command does), fewshot from a generator of its own, in the same order, so the two
    optimise along the same path and differ only by float32 rounding (other conv kernels, other sums).
    The third figure: the official loop on fewshot's network, and fewshot's loop through the same (fused)
    synthesis the official loop calls: the loops alone."""
    import fewshot.projector

    ours = project(G, target, lpips, ProjectSettings(steps=steps), seed=303).w_steps
    torch.manual_seed(303)
    theirs = off_project(off_G, target, num_steps=steps, device=torch.device("cpu"))
    with mock.patch.object(fewshot.projector, "inference_kwargs", lambda device: {}):
        fused = project(G, target, lpips, ProjectSettings(steps=steps), seed=303).w_steps
    torch.manual_seed(303)
    loop_only = float((fused - off_project(G, target, num_steps=steps, device=torch.device("cpu"))).abs().max())
    return float((ours - theirs).abs().max()), float((ours[-1] - ours[0]).abs().max()), loop_only


if __name__ == "__main__":
    os.environ.setdefault("FEWSHOT_OFFLINE", "1")
    main()
