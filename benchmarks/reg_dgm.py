"""Added cost of Reg-DGM per generator step (resnet18, random weights), `paired` vs `mean` (CPU or CUDA).

Tiny G at 32 px, batch 8: time G forward + a stand-in adversarial loss + backward, without the term, with
the paired estimator (one more resnet18 forward on the real batch per step) and with the mean estimator.
32 px images are upsampled ×8 to 256 px before resnet18, as the official code does; fewshot folds that
upsampling into resnet18's stem and its BatchNorms into the convolutions (``fewshot.extractors._fused_resnet``).
``--plain`` also times both estimators with the plain resnet18 (explicit upsampling, BatchNorm layers; its
3x3 convolutions still by Winograd), interleaved in the same run.

Run: ``python benchmarks/reg_dgm.py [--steps 6] [--threads N] [--device cuda] [--plain] [--resolution 256]``. Prints seconds per
step (median; device-synchronised on CUDA).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--plain", action="store_true", help="also time the plain resnet18 (no fused stem or BN)")
    parser.add_argument("--resolution", type=int, default=32, help="G's and the reals' size (32: upsampled x8)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        from fewshot.host_memory import keep_freed_memory

        keep_freed_memory()  # as `fewshot train` does on the CPU
    if args.threads:
        torch.set_num_threads(args.threads)

    import torchvision

    from fewshot.nets import Generator
    from fewshot.regularizers import build_regularizer

    torch.manual_seed(0)
    res = args.resolution
    G = Generator(32, 0, 32, res, 3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 512 * res // 32, "channel_max": 64}).to(device)
    reals = torch.randint(0, 256, (64, 3, res, res), dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "resnet18-random.pth"
        torch.save(torchvision.models.resnet18().state_dict(), weights)
        t0 = time.perf_counter()
        regs = {
            name: build_regularizer("reg-dgm", model="resnet18", lam=1.0, estimator=name, real_images=reals,
                                    weights_path=weights, mirror=True, device=device)
            for name in ("paired", "mean")
        }
        setup = time.perf_counter() - t0
        if args.plain:
            from fewshot.cuda.winograd import use_winograd

            plain = torchvision.models.resnet18()
            plain.load_state_dict(torch.load(weights, weights_only=True))
            use_winograd(plain.eval().requires_grad_(False))
            for name in ("paired", "mean"):
                regs[f"{name}-plain"] = build_regularizer(
                    "reg-dgm", model=plain, lam=1.0, estimator=name, real_images=reals, mirror=True, device=device)
    opt = torch.optim.Adam(G.parameters(), lr=1e-4)

    def step(reg) -> None:
        z = torch.randn(args.batch, G.z_dim, device=device)
        img = G(z, torch.zeros(args.batch, 0, device=device))
        loss = torch.nn.functional.softplus(-img.mean(dim=(1, 2, 3))).mean()  # stand-in for softplus(-D(G(z)))
        if reg is not None:
            batch = reals[torch.randint(0, reals.shape[0], (args.batch,))].to(device).float() / 127.5 - 1
            loss = loss + reg.generator_loss(img, batch if reg.requires_real_batch else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {name: [] for name in ("none", *regs)}
    for name in times:
        for _ in range(3 if device.type == "cuda" else 1):
            step(regs.get(name))  # warm-up (cuDNN algorithm search on CUDA)
    # Interleaved so that load from other processes hits all three alike.
    for _ in range(args.steps):
        for name in times:
            t = time.perf_counter()
            step(regs.get(name))
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v) for name, v in times.items()}
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, threads {torch.get_num_threads()}"
    factor = regs["mean"].factor
    print(f"torch {torch.__version__}, {where}, batch {args.batch}, {res} px -> {res * factor} px resnet18")
    print(f"setup (2 regularizers, {reals.shape[0]} reals + flips): {setup:.2f} s")
    for name in times:
        print(f"{name:>12}: {med[name] * 1000:8.1f} ms/step (median of {args.steps})")
    for suffix in ("", "-plain") if args.plain else ("",):
        added_paired = med["paired" + suffix] - med["none"]
        added_mean = med["mean" + suffix] - med["none"]
        print(f"added by paired{suffix}: {added_paired * 1000:8.1f} ms/step")
        print(f"added by mean{suffix}:   {added_mean * 1000:8.1f} ms/step  "
              f"({100 * added_mean / added_paired:.0f}% of paired{suffix})")

    # Where the two differ: `paired` adds a forward without graph (F, the reals); both pay the fake's
    # forward with graph and its input-gradient backward (B). mean / paired = (F + B) / (2F + B).
    extractor = regs["mean"].extractor
    x = regs["mean"].preprocess(torch.rand(args.batch, 3, res, res, device=device) * 2 - 1)  # what resnet18 gets

    def timed(fn) -> float:
        fn()  # warm-up
        runs = []
        for _ in range(args.steps):
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - t)
        return statistics.median(runs)

    def forward_no_graph() -> None:
        with torch.no_grad():
            extractor(x)

    def forward_backward() -> None:
        xg = x.clone().requires_grad_()
        torch.autograd.grad(extractor(xg).square().sum(), xg)

    f, fb = timed(forward_no_graph), timed(forward_backward)
    print(f"resnet18 alone on {tuple(x.shape)} (its stem upsamples x{factor}): forward without graph F {f * 1000:.1f} ms, forward + input "
          f"gradient {fb * 1000:.1f} ms (B = {(fb - f) * 1000:.1f} ms); (F + B) / (2F + B) = {fb / (fb + f):.2f}")


if __name__ == "__main__":
    main()
