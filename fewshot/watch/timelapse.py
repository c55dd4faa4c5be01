"""``fewshot timelapse RUN --out progress.mp4|gif``: the run's fixed-latent grids in order, kimg stamped on each.

One frame per grid the run wrote (one per snapshot tick: ``--snap 1`` gives one per tick). The stamp goes in a
band above the grid, so no sample is covered. Frames are scaled to ``max_width`` (a 1024-px 8x4 grid is a
~8k-pixel-wide frame, more than an MP4 player takes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FewshotError
from ..train import run_dir as layout

BAND = 0.06  # the stamp band's height, as a share of the frame width (at least 14 px)


def stamped_frame(path: Path, kimg: float, max_width: int) -> np.ndarray:
    """One grid as a uint8 [3, H, W] frame: scaled to ``max_width``, a band on top reading ``kimg N``."""
    from PIL import Image, ImageDraw, ImageFont

    with Image.open(path) as picture:
        grid = picture.convert("RGB")
    if grid.width > max_width:
        grid = grid.resize((max_width, max(1, round(grid.height * max_width / grid.width))), Image.Resampling.LANCZOS)
    band = max(14, round(grid.width * BAND))
    band += band % 2  # even sizes: H.264's yuv420p wants them
    width = grid.width + grid.width % 2
    height = grid.height + band
    height += height % 2
    frame = Image.new("RGB", (width, height), (0, 0, 0))
    frame.paste(grid, (0, band))
    draw = ImageDraw.Draw(frame)
    try:
        font = ImageFont.load_default(size=max(10, int(band * 0.7)))
    except TypeError:  # Pillow < 10.1: one fixed size
        font = ImageFont.load_default()
    draw.text((6, band // 2), f"kimg {kimg:g}", fill=(255, 255, 255), font=font, anchor="lm")
    return np.ascontiguousarray(np.asarray(frame).transpose(2, 0, 1))


def write_timelapse(run_dir: Path, out: Path, fps: float = 4.0, max_width: int = 1024) -> tuple[Path, int]:
    """Write the timelapse; returns its path and the number of frames."""
    from ..image_output import write_gif, write_mp4

    if not run_dir.is_dir():
        raise FewshotError(f"{run_dir} is not a folder", hint="give a run folder, e.g. runs/00000-flowers-ada")
    grids = layout.list_fakes(run_dir)
    if not grids:
        raise FewshotError(f"{run_dir} holds no sample grid yet ({layout.SAMPLES_DIR}/fakes_*.png)",
                           hint="grids are written at each snapshot (--snap N ticks)")
    kind = out.suffix.lower().lstrip(".")
    if kind not in ("gif", "mp4"):
        raise FewshotError(f"--out {out}: a timelapse is a .gif or an .mp4")
    if max_width < 16:
        raise FewshotError(f"--max-width must be at least 16, got {max_width}")
    import torch

    size = None
    frames = []
    for kimg, path in grids:
        frame = stamped_frame(path, kimg, max_width)
        size = size or frame.shape
        if frame.shape != size:  # a grid of another size (a changed --grid on resume): padded to the first
            padded = np.zeros(size, dtype=np.uint8)
            h, w = min(size[1], frame.shape[1]), min(size[2], frame.shape[2])
            padded[:, :h, :w] = frame[:, :h, :w]
            frame = padded
        frames.append(torch.from_numpy(frame))
    (write_gif if kind == "gif" else write_mp4)(frames, out, fps)
    return out, len(frames)
