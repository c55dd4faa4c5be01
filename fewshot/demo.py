"""Before/after sheet of a fine-tune: base samples | target reals | fine-tuned samples, the same seeds.

`make demo` fine-tunes the shipped tiny base (``demo-base``: discs) to the built-in target domain
``demo:rings`` and then writes this sheet. It works for any run folder that fine-tuned a base: the base is
the run's ``base``, the reals are the first images of its data, the fine-tuned generator is the run's best
(else final) export. Cell i of the "before" and "after" panels renders seed i (the official latent
convention of :mod:`fewshot.generate`), so each pair shows what fine-tuning did to one latent.

Usage: ``python -m fewshot.demo RUN_FOLDER [--out sheet.png] [--seeds 0-15] [--grid ROWSxCOLS] [--scale 3]``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import FewshotError

if TYPE_CHECKING:
    from .nets import Generator

PANEL_GAP = 8  # px between panels (at the sheet's scale)
LABEL_HEIGHT = 22  # px of the caption strip above each panel
BACKGROUND = 255  # white paper around the panels


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font bundled with Pillow
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _upscale(panel: np.ndarray, scale: int) -> np.ndarray:
    """``[C, H, W]`` -> ``[C, H*scale, W*scale]`` by pixel repetition: 32 px samples stay honest, only bigger."""
    return panel.repeat(scale, axis=1).repeat(scale, axis=2)


def compose_sheet(panels: Sequence[np.ndarray], labels: Sequence[str], scale: int = 3) -> np.ndarray:
    """Panels (uint8 ``[3, H, W]``, equal heights) side by side, each under its caption, on white: ``[3, H', W']``."""
    from PIL import Image, ImageDraw

    if not panels or len(panels) != len(labels):
        raise FewshotError("a sheet needs one label per panel")
    if scale < 1:
        raise FewshotError(f"--scale must be at least 1, got {scale}")
    big = [_upscale(p, scale) for p in panels]
    height = {p.shape[1] for p in big}
    if len(height) != 1 or any(p.shape[0] != 3 for p in big):
        raise FewshotError("sheet panels must be RGB and of equal height")
    panel_h = height.pop()
    width = sum(p.shape[2] for p in big) + PANEL_GAP * (len(big) + 1)
    canvas = np.full([LABEL_HEIGHT + panel_h + PANEL_GAP, width, 3], BACKGROUND, dtype=np.uint8)
    x = PANEL_GAP
    for panel in big:
        canvas[LABEL_HEIGHT:LABEL_HEIGHT + panel_h, x:x + panel.shape[2]] = panel.transpose(1, 2, 0)
        x += panel.shape[2] + PANEL_GAP
    image = Image.fromarray(canvas)
    draw, font = ImageDraw.Draw(image), _font(13)
    x = PANEL_GAP
    for panel, label in zip(big, labels, strict=True):
        draw.text((x, 4), label, fill=(0, 0, 0), font=font)
        x += panel.shape[2] + PANEL_GAP
    return np.asarray(image).transpose(2, 0, 1).copy()


def before_after_sheet(base: Generator, tuned: Generator, reals: torch.Tensor, seeds: Sequence[int],
                       grid: tuple[int, int] = (4, 4), labels: Sequence[str] = ("before", "target", "after"),
                       scale: int = 3) -> np.ndarray:
    """The three panels as one uint8 ``[3, H, W]`` image: ``base`` on ``seeds``, the first ``reals``, ``tuned`` on
    the same ``seeds``. ``grid`` is (columns, rows) of each panel; ``reals`` is uint8 ``[N, 3, R, R]``."""
    from .synthesis import generate_images, make_grid

    cols, rows = grid
    seeds = list(seeds)
    if not seeds or len(seeds) > cols * rows:
        raise FewshotError(f"{len(seeds)} seeds for a {cols}x{rows} grid: give between 1 and {cols * rows}")
    if base.img_resolution != tuned.img_resolution:
        raise FewshotError(f"the base makes {base.img_resolution} px images and the fine-tuned generator "
                           f"{tuned.img_resolution} px: not a fine-tune of that base")
    if reals.dtype != torch.uint8 or reals.ndim != 4 or reals.shape[-1] != tuned.img_resolution:
        raise FewshotError(f"the reals must be uint8 [N, 3, {tuned.img_resolution}, {tuned.img_resolution}], "
                           f"got {reals.dtype} {tuple(reals.shape)}")
    before = generate_images(base, seeds)
    after = generate_images(tuned, seeds)
    panels = [make_grid(images, grid) for images in (before, reals[:cols * rows].cpu(), after)]
    return compose_sheet(panels, labels, scale)


def _run_record(checkpoint: Path) -> tuple[Any, str, float]:
    """A run export's TrainConfig, its preset (or transfer method) and how many kimg it trained."""
    from .checkpoint import read_header
    from .config import config_from_dict

    training = read_header(checkpoint).training or {}
    stored = dict(training.get("config") or {})
    if not stored:
        raise FewshotError(f"{checkpoint} records no training config: give a run folder or its export")
    cfg = config_from_dict(stored)  # this version's sections, or an earlier version's flat keys
    return cfg, cfg.preset or cfg.transfer.method, float(training.get("kimg") or cfg.kimg)


def write_run_sheet(run: Path, out: Path | None = None, seeds: Sequence[int] = tuple(range(16)),
                    grid: tuple[int, int] = (4, 4), scale: int = 3, device: str = "cpu") -> Path:
    """The before/after sheet of a fine-tuning run folder (default ``RUN/before-after.png``).

    ``grid`` is (columns, rows) of each panel."""
    from .image_output import save_image
    from .loading import load_generator, resolve_reference
    from .train.networks import load_training_images

    run = Path(run)
    checkpoint = resolve_reference(run)
    cfg, recipe, kimg = _run_record(checkpoint)
    if not cfg.base:
        raise FewshotError(f"{run} was trained from scratch: there is no base to compare with",
                           hint="the sheet is for fine-tuning runs (--base)")
    tuned = load_generator(checkpoint, device)
    base = load_generator(cfg.base, device)
    reals = load_training_images(cfg, tuned.img_resolution, progress=False).images
    method = cfg.transfer.method + (f" + {cfg.augment.method}" if cfg.augment.method != "none" else "")
    labels = (f"before: base {cfg.base}", f"target: {cfg.data} ({len(reals)} images)",
              f"after: {method}, {kimg:g} kimg" + (f" (preset {recipe})" if recipe != cfg.transfer.method else ""))
    sheet = before_after_sheet(base, tuned, reals, seeds, grid, labels, scale)
    out = Path(out) if out is not None else (run if run.is_dir() else run.parent) / "before-after.png"
    return save_image(sheet, out)


def main(argv: Sequence[str] | None = None) -> int:
    from .cli.parsing import parse_grid, parse_seeds

    parser = argparse.ArgumentParser(prog="python -m fewshot.demo", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a fine-tuning run folder (or its .safetensors export)")
    parser.add_argument("--out", type=Path, default=None, help="the PNG to write (default RUN/before-after.png)")
    parser.add_argument("--seeds", default="0-15", help="seeds of the before/after samples (default 0-15)")
    parser.add_argument("--grid", default="4x4", help="ROWSxCOLS of each panel (default 4x4)")
    parser.add_argument("--scale", type=int, default=3, help="pixel repetition of the 32 px images (default 3)")
    args = parser.parse_args(argv)
    try:
        shape = parse_grid(args.grid)
        path = write_run_sheet(args.run, args.out, parse_seeds(args.seeds), (shape.cols, shape.rows), args.scale)
    except FewshotError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
