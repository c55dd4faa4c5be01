"""Seconds to evaluate FID/KID with 5k generated images at 64 px, measured on a few and extrapolated.

Uses a 64 px generator with the default (auto-config) widths and the FID Inception with random
weights (same cost as the real ones). Generation and feature extraction are timed per image on
``--n`` fakes and scaled to ``--target``; the FID/KID math is run at full size on synthetic features.

    .venv/bin/python benchmarks/metrics.py --n 64 --batch 32
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="fakes actually generated and extracted")
    parser.add_argument("--target", type=int, default=5000, help="fakes to extrapolate to")
    parser.add_argument("--n-real", type=int, default=100, help="real-set size for the KID/FID math")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import tempfile
    from pathlib import Path

    from fewshot.extractors import extractor_spec
    from fewshot.extractors._frozen import FrozenExtractor, frozen_network
    from fewshot.extractors._inception_net import FIDInceptionV3
    from fewshot.loading import prepare_device
    from fewshot.metrics import fid_from_features, generate_fakes, kid_from_features
    from fewshot.nets import Generator

    device = prepare_device(torch.device(args.device))  # as `fewshot metrics` does
    torch.manual_seed(0)
    G = Generator(512, 0, 512, 64, 3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 16384, "channel_max": 512}).eval().to(device)
    net = FIDInceptionV3()
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    spec = extractor_spec("inception-v3-fid")
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(net.state_dict(), Path(tmp) / "inception.pth")
        extractor = FrozenExtractor(spec, frozen_network(spec, Path(tmp) / "inception.pth"), "random").to(device)

    # Warm-up batch (allocator, kernels) so the timed part is the steady state.
    with torch.no_grad():
        warm = next(generate_fakes(G, 4, 4, 1.0, 123, device))
        extractor(warm)

    gen_s = feat_s = 0.0
    with torch.no_grad():
        batches = generate_fakes(G, args.n, args.batch, 1.0, 0, device)
        while True:
            t0 = time.perf_counter()
            try:
                images = next(batches)
            except StopIteration:
                break
            t1 = time.perf_counter()
            extractor(images)
            t2 = time.perf_counter()
            gen_s += t1 - t0
            feat_s += t2 - t1

    rng = np.random.default_rng(0)
    real = rng.normal(size=(args.n_real, 2048)).astype(np.float32)
    fake = rng.normal(size=(args.target, 2048)).astype(np.float32)
    t0 = time.perf_counter()
    fid_from_features(real, fake)
    fid_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    kid_from_features(real, fake)
    kid_s = time.perf_counter() - t0

    scale = args.target / args.n
    total = (gen_s + feat_s) * scale + fid_s + kid_s
    print(f"device {device}, torch threads {torch.get_num_threads()}, measured on {args.n} fakes "
          f"(batch {args.batch}), extrapolated to {args.target}")
    print(f"  generator 64 px      {1000 * gen_s / args.n:8.1f} ms/img  -> {gen_s * scale:8.1f} s")
    print(f"  Inception @299 px    {1000 * feat_s / args.n:8.1f} ms/img  -> {feat_s * scale:8.1f} s")
    print(f"  FID math (2048-d, {args.n_real} real / {args.target} fake)      {fid_s:8.2f} s")
    print(f"  KID math (100 subsets of {min(1000, args.n_real, args.target)})          {kid_s:8.2f} s")
    print(f"  total for {args.target} fakes (real set cached)            {total:8.1f} s")


if __name__ == "__main__":
    main()
