"""What watching costs a run (#25): the TensorBoard scalars of one tick, the grid image and the report page of
one snapshot, and a short tiny run with the events on and off.

    .venv/bin/python benchmarks/watch.py [--ticks 200] [--grids 50] [--grid-px 256]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fewshot.train import run_dir as layout
from fewshot.watch.report import write_report
from fewshot.watch.tfevents import EventWriter

RECORD = {"tick": 0, "kimg": 4.0, "sec_per_tick": 60.0, "sec_per_kimg": 15.0, "loss_G": 1.2, "loss_D": 0.9,
          "D_real": 0.4, "D_fake": -0.3, "r1_penalty": 0.05, "pl_penalty": 0.2, "aug_p": 0.12, "aug_rt": 0.55,
          "lr_g": 0.002, "lr_d": 0.002, "pl_mean": 0.5, "mem_mb": 2000.0, "time": 600.0, "eta_sec": 3600.0}


def fake_run(root: Path, ticks: int, grids: int, grid_px: int) -> Path:
    """A run folder with ``ticks`` log lines and ``grids`` sample grids of 8x4 images of ``grid_px`` px."""
    run = layout.new_run_dir(root, "bench")
    rng = np.random.default_rng(0)
    with layout.log_path(run).open("w") as fh:
        for tick in range(ticks):
            fh.write(json.dumps({**RECORD, "tick": tick, "kimg": 4.0 * (tick + 1),
                                 "loss_G": float(rng.normal(1, 0.1))}) + "\n")
    layout.config_path(run).write_text('kimg = 1000\npreset = "bench"\n')
    # Smooth colour fields plus a little grain: about as compressible as a grid of photos (pure noise is 3x bigger)
    coarse = Image.fromarray((rng.random((grid_px // 4, grid_px * 2, 3)) * 255).astype(np.uint8))
    smooth = np.asarray(coarse.resize((grid_px * 8, grid_px * 4), Image.Resampling.BICUBIC)).astype(np.int16)
    grain = rng.integers(-6, 7, smooth.shape)
    grid = Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))
    grid.save(layout.reals_path(run))
    for index in range(grids):
        grid.save(layout.fakes_path(run, (index + 1) * 4000 * ticks // grids))
    return run


def timed(action, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        action()
    return (time.perf_counter() - start) / repeats


def tiny_run_seconds(root: Path, events: bool, ticks: int) -> tuple[float, float]:
    """Sum of sec_per_tick of a tiny CPU run (tests' TINY networks, a snapshot every tick), events on or off; and
    the seconds spent inside the loop's watch hooks (timed around each call)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_train import tiny_cfg

    import fewshot.train.loop as loop

    spent = [0.0]

    def timing(hook):
        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return wrapped

    saved = {name: getattr(loop, name) for name in ("on_tick", "on_snapshot", "on_finish")}
    for name, hook in saved.items():
        setattr(loop, name, timing(hook))
    os.environ["FEWSHOT_TENSORBOARD"] = "1" if events else "0"
    try:
        run = loop.train(tiny_cfg(root / ("on" if events else "off"), kimg=0.008 * ticks), progress=False,
                         plan=False, echo=lambda m: None)
    finally:
        for name, hook in saved.items():
            setattr(loop, name, hook)
    return sum(r["sec_per_tick"] for r in layout.read_records(layout.log_path(run)) if "tick" in r), spent[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--grids", type=int, default=50)
    parser.add_argument("--grid-px", type=int, default=256)
    parser.add_argument("--tiny-ticks", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = fake_run(root, args.ticks, args.grids, args.grid_px)
        writer = EventWriter(root / "events")
        step = iter(range(10**9))
        per_tick = timed(lambda: writer.tick(RECORD, next(step)), 200)
        grid = layout.list_fakes(run)[-1][1]
        per_image = timed(lambda: writer.image(grid, next(step)), 5)
        writer.close()
        from fewshot.watch import report

        def fresh_report() -> None:
            report._URI_CACHE.clear()  # a fresh process: `fewshot report RUN`
            write_report(run)

        per_report = timed(fresh_report, 3)
        write_report(run)
        per_refresh = timed(lambda: write_report(run), 3)  # the training process: grids already scaled
        size = layout.report_path(run).stat().st_size / 2**20
        print(f"tick scalars (18 values, flushed): {per_tick * 1e3:.2f} ms")
        print(f"grid image 8x4 of {args.grid_px} px ({grid.stat().st_size / 2**20:.1f} MB PNG): "
              f"{per_image * 1e3:.0f} ms")
        print(f"report.html, {args.ticks} ticks, {args.grids} grids of {args.grid_px} px: {per_report:.2f} s "
              f"({size:.1f} MB); refreshed by the training process: {per_refresh:.2f} s")
        off = min(tiny_run_seconds(root / f"a{i}", False, args.tiny_ticks) for i in range(2))
        on = min(tiny_run_seconds(root / f"b{i}", True, args.tiny_ticks) for i in range(2))
        print(f"tiny CPU run, {args.tiny_ticks} ticks, snapshot each tick (sum of sec_per_tick, best of 2): "
              f"events off {off[0]:.2f} s (hooks: report only {off[1]:.3f} s), "
              f"on {on[0]:.2f} s (hooks {on[1]:.3f} s = {on[1] / on[0]:.1%})")

if __name__ == "__main__":
    main()
