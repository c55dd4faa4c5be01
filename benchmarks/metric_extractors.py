"""Images/s of the metric extractors (FID Inception-v3, VGG-16) as fewshot runs them vs the plain networks.

fewshot's extractors are ``fewshot.frozen.prepare_frozen``-ed: BatchNorms folded into the convolutions and the
3x3 stride-1 convolutions by Winograd on the CPU. The plain networks load the same (random) weights and run
torch's layers as they are. Both are timed interleaved, in one process, on the same uint8 batch; the
largest relative difference of their features is printed too.

    .venv/bin/python benchmarks/metric_extractors.py --batch 16 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64, help="size of the uint8 images fed in")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import tempfile

    import torchvision

    from fewshot.extractors import extractor_spec
    from fewshot.extractors._frozen import FrozenExtractor, frozen_network
    from fewshot.extractors._inception_net import FIDInceptionV3
    from fewshot.extractors._modules import VGG16Fc2
    from fewshot.host_memory import keep_freed_memory

    keep_freed_memory()
    torch.manual_seed(0)
    inception_state = FIDInceptionV3().state_dict()
    for key, value in inception_state.items():  # trained-like BatchNorm statistics: folding is not a no-op
        if key.endswith("running_var"):
            inception_state[key] = 0.5 + torch.rand(value.shape)
    vgg_state = torchvision.models.vgg16(weights=None).state_dict()

    pairs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extractor, state, plain_net in (
            ("inception-v3-fid (299 px)", "inception-v3-fid", inception_state, FIDInceptionV3()),
            ("vgg16 (224 px)", "vgg16", vgg_state, VGG16Fc2(torchvision.models.vgg16(weights=None))),
        ):
            spec = extractor_spec(extractor)
            path = Path(tmp) / f"{extractor}.pth"
            torch.save(state, path)
            prepared = FrozenExtractor(spec, frozen_network(spec, path), fingerprint="0" * 64)
            (plain_net.net if isinstance(plain_net, VGG16Fc2) else plain_net).load_state_dict(state)
            # The same preprocessing code, the untouched network.
            plain = FrozenExtractor(spec, plain_net.eval().requires_grad_(False), fingerprint="0" * 64)
            pairs[name] = (prepared, plain)

    images = torch.randint(0, 256, (args.batch, 3, args.resolution, args.resolution), dtype=torch.uint8)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{args.resolution} px uint8 in, best of {args.rounds} interleaved rounds")
    for name, (prepared, plain) in pairs.items():
        with torch.no_grad():
            prepared.extract(images), plain.extract(images)  # warm-up
            times: dict[str, list[float]] = {"fewshot": [], "plain": []}
            for _ in range(args.rounds):
                for label, extractor in (("fewshot", prepared), ("plain", plain)):
                    start = time.perf_counter()
                    out = extractor.extract(images)
                    times[label].append(time.perf_counter() - start)
            ours, theirs = prepared.extract(images), plain.extract(images)
        error = max(float((ours[k] - theirs[k]).abs().max() / theirs[k].abs().max()) for k in ours)
        best = {label: min(v) for label, v in times.items()}
        print(f"{name:>26}: fewshot {args.batch / best['fewshot']:6.2f} img/s, plain {args.batch / best['plain']:6.2f} "
              f"img/s, {best['plain'] / best['fewshot']:.2f}x; max relative feature difference {error:.1e} "
              f"(medians {statistics.median(times['fewshot']):.2f} / {statistics.median(times['plain']):.2f} s)")
        del out


if __name__ == "__main__":
    main()
