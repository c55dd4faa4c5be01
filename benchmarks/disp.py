"""DISP costs on this machine: prior-bank extraction (VGG-16 fc7, random weights in the upstream format),
GMM fitting by EM on a VGG-sized bank, prior draws, and a DISP training step against a plain one.

    .venv/bin/python benchmarks/disp.py [--images 8] [--bank 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def timed(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8, help="images encoded with VGG-16")
    parser.add_argument("--bank", type=int, default=1000, help="priors in the synthetic bank for the GMM")
    parser.add_argument("--components", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    import torchvision

    from fewshot.data import demo_images
    from fewshot.disp.bank import build_prior_bank
    from fewshot.disp.priors import fit_gmm, mixup

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU only")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vgg16-397923af.pth"
        torch.save(torchvision.models.vgg16(weights=None).state_dict(), path)
        registry = Path(tmp) / "weights.toml"
        registry.write_text('[vgg16]\nfilename = "vgg16-397923af.pth"\nurl = "http://127.0.0.1:9/v.pth"\n')
        os.environ.update(FEWSHOT_WEIGHTS_REGISTRY=str(registry), FEWSHOT_WEIGHTS_VGG16=str(path),
                          FEWSHOT_OFFLINE="1")
        images = demo_images(n=args.images, resolution=64, seed=0)
        build_prior_bank(images, "vgg16")  # load + warm-up
        images.mirror = True
        sec = timed(lambda: build_prior_bank(images, "vgg16"))
        print(f"VGG-16 bank, {args.images} images + flips at 64 px (224 px input): {sec:.2f} s "
              f"= {sec / (2 * args.images) * 1000:.0f} ms per image")

    bank = torch.randn(args.bank, 4096)
    sec = timed(lambda: fit_gmm(bank, args.components, "diag", seed=0))
    gmm = fit_gmm(bank, args.components, "diag", seed=0)
    print(f"GMM fit (diag, K={args.components}) on {args.bank}x4096 priors: {sec:.2f} s ({gmm.iterations} EM iterations)")
    gen = torch.Generator().manual_seed(0)
    print(f"draw 1000 priors: mixup {timed(lambda: mixup(bank, 1000, gen), 5) * 1000:.1f} ms, "
          f"gmm {timed(lambda: gmm.sample(1000, gen), 5) * 1000:.1f} ms")

    from fewshot.disp.nets import condition_generator, projection_discriminator
    from fewshot.nets import Discriminator, Generator
    from fewshot.train.loss import LossWeights, StyleGAN2Loss

    class NoAug(torch.nn.Module):
        def forward(self, x):
            return x

        def remember_fakes(self, x):
            pass

        def replace_reals(self, x):
            return x

        def accumulate(self, x):
            pass

    torch.manual_seed(0)
    G = Generator(512, 0, 512, 64, 3, mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 4096})
    D = Discriminator(0, 64, 3, channel_base=4096, epilogue_kwargs={"mbstd_group_size": 4})
    CG, PD = condition_generator(G, 4096), projection_discriminator(D, 4096)
    batch = 8
    real, z, c = torch.randn(batch, 3, 64, 64), torch.randn(batch, 512), torch.randn(batch, 4096)
    for name, g, d, cond, kind in (("plain logistic", G, D, None, "logistic"), ("DISP hinge", CG, PD, c, "hinge")):
        loss = StyleGAN2Loss(g, d, NoAug(), LossWeights(r1_gamma=1.0, pl_weight=0, adversarial=kind))
        g.requires_grad_(True)
        d.requires_grad_(True)

        def step(loss: StyleGAN2Loss = loss, cond: torch.Tensor | None = cond) -> None:
            for phase in ("Gmain", "Dmain"):
                loss.accumulate_gradients(phase, real, cond, z, cond, gain=1)

        step()
        print(f"Gmain+Dmain, batch {batch}, 64 px, channel_base 4096, {name}: {timed(step, 3):.3f} s")


if __name__ == "__main__":
    main()
