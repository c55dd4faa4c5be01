"""Seconds per kimg of the 10-shot adaptation presets against plain fine-tuning, on the CPU.

    .venv/bin/python benchmarks/ten_shot_methods.py [--data ../shared/data/sketches-10] [--base demo-base]
        [--kimg 0.4] [--presets stylegan2,ewc,cdc]

Each preset trains from the same base on the same images with its own schedule (batch 4 for all three here);
the figure is the median of the tick lines' sec_per_kimg after the first tick (which pays one-time costs).
EWC's Fisher estimate, paid once when the run starts, is timed on its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from fewshot.config import resolve_config
from fewshot.train.loop import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sketches-10"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--base", default="demo-base")
    parser.add_argument("--kimg", type=float, default=0.4)
    parser.add_argument("--presets", default="stylegan2,ewc,cdc")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            cfg = resolve_config(preset, dict(data=args.data, base=args.base, kimg=args.kimg, tick_kimg=0.1,
                                              batch=4, snap=0, device="cpu", outdir=tmp, name=preset))
            start = time.perf_counter()
            run = train(cfg, progress=False, echo=lambda _m: None, plan=False)
            wall = time.perf_counter() - start
            ticks = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"tick"' in line]
            per_kimg = statistics.median(t["sec_per_kimg"] for t in ticks[1:] or ticks)
            setup = wall - sum(t["sec_per_tick"] for t in ticks)
            print(f"{preset:10s} {per_kimg:7.1f} s/kimg   setup and writing {setup:5.1f} s   "
                  f"loss_reg {ticks[-1].get('loss_reg', 0):.4g}")


if __name__ == "__main__":
    main()
