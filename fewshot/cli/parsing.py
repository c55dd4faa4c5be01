"""What the generation commands parse from their text options: seed lists, grid shapes, style layers.

The checks of values the library takes as well (psi, noise modes, formats) live with the library
(:func:`fewshot.synthesis.check_psi`, :func:`fewshot.synthesis.check_choice`): a caller of
:func:`fewshot.synthesis.iter_sample_batches` gets the same errors as a user of ``fewshot sample``.
"""

from __future__ import annotations

import math
import re

from ..errors import FewshotError
from ..synthesis import GridShape

MAX_SEED = 2**32 - 1  # RandomState accepts seeds in [0, 2**32)
MAX_SEEDS = 10_000_000  # one list; more is almost surely a typo in a range


def parse_seeds(text: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``: comma-separated seeds and inclusive ranges, order kept.

    Duplicates are kept (a user asking for seed 5 twice gets it twice); every seed must fit
    ``RandomState`` (0 to 2**32 - 1).
    """
    text = (text or "").strip()
    if not text:
        raise FewshotError("no seeds given", hint="use e.g. --seeds 0-63,100")
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if match is None:
            raise FewshotError(
                f"malformed seed list {text!r}: {part!r} is not a seed or a range",
                hint="write seeds as 0-63,100 (non-negative integers, ranges inclusive)",
            )
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) is not None else start
        if stop < start:
            raise FewshotError(f"malformed seed range {part!r}: the end is before the start")
        if stop > MAX_SEED:
            raise FewshotError(f"seed {stop} is too large (seeds go from 0 to {MAX_SEED})")
        if len(seeds) + (stop - start + 1) > MAX_SEEDS:
            raise FewshotError(f"seed list {text!r} asks for more than 10 million images")
        seeds.extend(range(start, stop + 1))
    return seeds


def parse_grid(text: str) -> GridShape:
    """``"4x8"`` -> ``GridShape(rows=4, cols=8)`` (rows first, as in "RxC")."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text or "")
    if match is None:
        raise FewshotError(f"malformed grid {text!r}", hint="write a grid as ROWSxCOLS, e.g. 8x8")
    rows, cols = int(match.group(1)), int(match.group(2))
    if rows < 1 or cols < 1:
        raise FewshotError(f"grid {text!r} must have at least one row and one column")
    if rows * cols > 65536:
        raise FewshotError(f"grid {text!r} has more than 65536 cells")
    return GridShape(rows, cols)


def parse_styles(text: str, num_ws: int) -> list[int]:
    """A style-layer list (``0-6``) checked against the generator's ``num_ws``."""
    try:
        styles = parse_seeds(text)
    except FewshotError as exc:
        raise FewshotError(exc.message.replace("seed", "style layer"), hint=f"layers go from 0 to {num_ws - 1}") from None
    bad = [s for s in styles if s >= num_ws]
    if bad:
        raise FewshotError(f"style layer {bad[0]} is out of range (this generator has layers 0-{num_ws - 1})")
    return sorted(set(styles))


def parse_vec2(text: str, option: str) -> tuple[float, float]:
    """``"0.3,-0.2"`` -> ``(0.3, -0.2)``: two finite numbers, as gen_images.py's ``--translate`` takes them."""
    parts = [p.strip() for p in (text or "").split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise FewshotError(f"malformed {option} {text!r}", hint=f"write two numbers, e.g. {option} 0.25,-0.1")
    return values[0], values[1]
