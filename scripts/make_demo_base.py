"""Train the tiny demo base and export it as ``fewshot/assets/demo-base.safetensors`` (the `demo-base` checkpoint).

The base is a StyleGAN2 trained by fewshot itself, from scratch, on the built-in source domain ``demo``
(soft pastel discs on two-colour gradients, :func:`fewshot.data.demo_images`); `make demo` fine-tunes it
to the target domain ``demo:rings``. It ships inside the package, so the demo and the tests need no
download.

Recipe (``RECIPE`` below; fixed seeds: the run's ``seed`` and the data set's seed 0): 32 px, z/w 64,
2 mapping layers, channel_base 512, channel_max 64 (191,555 G parameters, 218,673 D), float32
throughout (conv_clamp 256, the config default), batch 16, lr 0.0025, R1 gamma 0.05 every 16 batches, no path-length term, style mixing 0.9,
ADA (bgc, target 0.6), on 2,048 source images, for ``RECIPE["kimg"]`` kimg.

What is kept: ``G_ema`` and ``D`` in float32, as the run's ``final.safetensors`` holds them (the export
below re-saves them with ``fewshot.checkpoint.save_bundle``, bit for bit). ``G`` is left out: it is the
raw, un-averaged generator, and fewshot's base loader starts a fine-tune's G from ``G_ema`` when a base has
no G (``fewshot.train.loop.base_networks``). That keeps the file at 1.6 MB, under the 2 MB limit for a
file shipped in the wheel, with no precision given up.

Figures of the shipped file (2-core AMD EPYC, torch 2.14.1, OMP_NUM_THREADS=1; BENCHMARKS.md, "Demo"):

- 240 kimg, run as 120 kimg and then ``--resume`` to 240 (fewshot resumes a CPU run exactly, so ``RECIPE``
  as written gives the same weights; the provenance, with its timings, differs). 3,272 s of wall time on a machine shared
  with other jobs (load 3-5); about 8 s of CPU per kimg (962 s of CPU for the second 120 kimg), so about
  32 CPU minutes in all, and 8.2-8.7 s/kimg of wall time while the machine was otherwise idle.
- 1,654,328 bytes (1.58 MiB); sha256 4bab42c193091ec3c4a76e89dca8cae0a715cc9a64c5e4d5b66cab3d0d3039f1.
- Samples: one or two discs on a two-colour gradient in most cells, about half with sharp edges, the rest
  soft; ADA's p ended at 0.22. Pixel statistics over 256 seeds match the source's: mean luma 145 (source
  147), 1% of pixels darker than luma 40 (source 0%), saturation of the bright pixels 100 (source 96).

Usage::

    OMP_NUM_THREADS=1 python scripts/make_demo_base.py                 # train (~32 CPU minutes), export
    python scripts/make_demo_base.py --export-only runs/00000-demo-base   # re-export a finished run

It prints the file's sha256 for the ``[demo-base]`` entry of ``presets/checkpoints.toml`` (the entry's hash
is checked whenever the base is loaded, so a re-made base needs the new hash there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's fewshot, whatever is installed
DEFAULT_OUT = REPO / "fewshot" / "assets" / "demo-base.safetensors"

# The recorded training config: everything that is not a TrainConfig default. Changing any value makes a
# different base (and needs a new sha256 in presets/checkpoints.toml).
RECIPE: dict[str, object] = dict(
    data="demo", max_images=2048, resolution=32,
    z_dim=64, w_dim=64, map_layers=2, channel_base=512, channel_max=64, num_fp16_res=0, conv_clamp=256,
    batch=16, gamma=0.05, pl_weight=0.0, aug="ada", aug_p=0.0, ada_target=0.6,
    kimg=240.0, tick_kimg=2.0, snap=5, keep=2, sample_grid=(8, 4), seed=0, device="cpu",
)


def train_base(outdir: Path, kimg: float | None, resume: Path | None = None) -> tuple[Path, float, float]:
    """Run the recipe (or continue ``resume`` to the recipe's length: on the CPU a resumed run equals the
    straight one bit for bit); returns the run folder, its wall time and its CPU time in seconds."""
    from fewshot.config import resolve_config
    from fewshot.train.loop import train

    overrides = dict(RECIPE, outdir=str(outdir), name="demo-base")
    if kimg is not None:
        overrides["kimg"] = kimg
    cfg = resolve_config(None, overrides)
    start, cpu_start = time.perf_counter(), time.process_time()
    run = train(cfg, resume=str(resume) if resume else None, kimg_override=cfg.kimg if resume else None,
                progress=False, echo=lambda line: print(line, flush=True))
    assert run is not None
    return run, time.perf_counter() - start, time.process_time() - cpu_start


def _training_seconds(run: Path) -> float | None:
    """The run's training time over all its sessions (the loop's log keeps the running total)."""
    try:
        return float(json.loads((run / "log.jsonl").read_text().splitlines()[-1])["time"])
    except (OSError, IndexError, KeyError, ValueError):
        return None


def export_base(run: Path, out: Path) -> Path:
    """Re-save the run's final G_ema and D as the shipped bundle (see the module docstring for why not G)."""
    from fewshot.checkpoint import load_bundle, read_header, save_bundle, sha256_file

    final = run / "final.safetensors" if run.is_dir() else run  # a run folder, or one of its snapshots
    run = run if run.is_dir() else final.parent.parent
    seconds = _training_seconds(run) if final.name == "final.safetensors" else None
    header = read_header(final)
    bundle = load_bundle(final, names=("G_ema", "D"))
    training = header.training or {}
    provenance = {
        "made_by": "scripts/make_demo_base.py",
        "run": run.name,
        "data": f"built-in demo set 'discs' (data source 'demo'), {RECIPE['max_images']} images, seed 0",
        "kimg": training.get("kimg"),
        "train_seconds": round(seconds, 1) if seconds is not None else None,
        "precision": "float32",
        "networks": "G_ema and D; G omitted (a fine-tune starts G from G_ema)",
        "licence": "MIT (fewshot's own network, trained on procedural images)",
    }
    path = save_bundle(out, bundle.networks, provenance=provenance,
                       training={"config": training.get("config"), "kimg": training.get("kimg"),
                                 "augment_p": training.get("augment_p")})
    size = path.stat().st_size
    print(f"wrote {path} ({size:,} bytes, {size / 2**20:.2f} MiB)")
    print(f'sha256 = "{sha256_file(path)}"   # for [demo-base] in presets/checkpoints.toml')
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=REPO / "runs", help="where the training run folder goes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the exported bundle")
    parser.add_argument("--kimg", type=float, default=None, help="override the recipe's length (for trials only)")
    parser.add_argument("--export-only", type=Path, default=None, metavar="RUN",
                        help="export a finished run folder (or one of its snapshots) instead of training")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN",
                        help="continue an interrupted or shorter run of the recipe to its length")
    args = parser.parse_args(argv)
    if args.export_only is not None:
        export_base(args.export_only, args.out)
        return 0
    run, seconds, cpu_seconds = train_base(args.outdir, args.kimg, args.resume)
    print(json.dumps({"run": str(run), "train_seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1)}))
    export_base(run, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
