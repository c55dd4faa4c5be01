"""What keeping weight-derived tensors buys (fewshot.cuda.derived), A/B in one process on the CPU.

The Winograd transform U(W) of each 3x3 filter bank and the demodulation's sum_k W^2 are computed once per
weight while it is unchanged. Here the keeping is switched off by patching ``derived`` to always compute,
and the two variants run interleaved, best (sampling) or median (Reg-DGM) of the rounds:

- sampling: ``iter_sample_batches`` on the 64 px ``--cfg auto`` generator, batch 8 and batch 1;
- Reg-DGM: the term (resnet18, random weights) on ``[8, 3, 32, 32]`` fakes, forward + backward, ``mean``
  and ``paired``.

    .venv/bin/python benchmarks/kept_transforms.py [--rounds 3] [--images 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def switched(kept: bool) -> ExitStack:
    """A context in which ``derived`` keeps (True) or always recomputes (False), wherever it was imported."""
    import fewshot.cuda.winograd as winograd
    import fewshot.nets.layers as layers

    stack = ExitStack()
    if not kept:
        for module in (winograd, layers):
            stack.enter_context(mock.patch.object(module, "derived", lambda weight, tag, compute: compute(weight)))
    return stack


def sampling(rounds: int, images: int) -> None:
    from fewshot.loading import prepare_device
    from fewshot.nets import Generator
    from fewshot.synthesis import iter_sample_batches

    prepare_device(torch.device("cpu"))
    torch.manual_seed(0)
    G = Generator(512, 0, 512, 64, 3, mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 16384})
    G = G.eval().requires_grad_(False)
    seeds = list(range(images))

    def rate(batch: int, kept: bool) -> float:
        with switched(kept):
            start = time.perf_counter()
            for _ in iter_sample_batches(G, seeds, psi=0.7, noise_mode="const", batch_size=batch):
                pass
            return images / (time.perf_counter() - start)

    for batch in (8, 1):
        rate(batch, True), rate(batch, False)  # warm-up
        got: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(rounds):
            for kept in (True, False):
                got[kept].append(rate(batch, kept))
        best = {kept: max(values) for kept, values in got.items()}
        print(f"sampling batch {batch}: kept {best[True]:.2f} images/s, recomputed {best[False]:.2f} "
              f"({best[True] / best[False]:.2f}x)")


def reg_dgm(rounds: int) -> None:
    import torchvision

    from fewshot.regularizers import build_regularizer

    torch.manual_seed(0)
    reals = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "resnet18-random.pth"
        torch.save(torchvision.models.resnet18().state_dict(), weights)
        regs = {name: build_regularizer("reg-dgm", model="resnet18", lam=1.0, estimator=name, real_images=reals,
                                        weights_path=weights, mirror=True) for name in ("paired", "mean")}
    fake = torch.randn(8, 3, 32, 32)

    def seconds(name: str, kept: bool) -> float:
        with switched(kept):
            x = fake.clone().requires_grad_()
            start = time.perf_counter()
            regs[name].generator_loss(x, reals[:8] if name == "paired" else None).backward()
            return time.perf_counter() - start

    for name in regs:
        seconds(name, True), seconds(name, False)  # warm-up
    got: dict[tuple[str, bool], list[float]] = {}
    for _ in range(rounds):
        for name in regs:
            for kept in (True, False):
                got.setdefault((name, kept), []).append(seconds(name, kept))
    for name in ("mean", "paired"):
        on, off = statistics.median(got[(name, True)]), statistics.median(got[(name, False)])
        print(f"Reg-DGM {name}: kept {on:.3f} s, recomputed {off:.3f} s ({off / on:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=32, help="images per sampling phase")
    args = parser.parse_args()
    from fewshot.host_memory import keep_freed_memory

    keep_freed_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    sampling(args.rounds, args.images)
    reg_dgm(max(args.rounds, 5))


if __name__ == "__main__":
    main()
