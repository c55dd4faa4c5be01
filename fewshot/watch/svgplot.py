"""Line plots as inline SVG, written by hand: no plotting package, nothing fetched, a page that opens offline.

A report holds a handful of curves over kimg; a few hundred lines of SVG text do that without matplotlib's
~50 MB or a vendored JavaScript chart. Each point carries a ``<title>`` (the browser shows its value on hover).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 560, 240
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 28, 36
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]  # (kimg, value); non-finite values are left out


@dataclass(frozen=True)
class Marker:
    """A point called out on the plot (the best value of a metric)."""

    x: float
    y: float
    label: str


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float) -> str:
    return f"{value:.4g}"


def line_plot(title: str, series: Sequence[Series], marker: Marker | None = None, x_label: str = "kimg") -> str:
    """An SVG line plot of ``series`` over a shared x axis; an empty string when no series has a finite point."""
    clean = [Series(s.name, [(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)]) for s in series]
    clean = [s for s in clean if s.points]
    if not clean:
        return ""
    xs = [x for s in clean for x, _ in s.points]
    ys = [y for s in clean for _, y in s.points]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    if x_high == x_low:
        x_low, x_high = x_low - 0.5, x_high + 0.5
    if y_high == y_low:
        pad = abs(y_low) * 0.05 or 0.5
        y_low, y_high = y_low - pad, y_high + pad
    pad = (y_high - y_low) * 0.05
    y_low, y_high = y_low - pad, y_high + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return TOP + (y_high - y) / (y_high - y_low) * plot_h

    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
             f'<text x="{LEFT}" y="16" class="title">{escape(title)}</text>',
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>']
    for tick in nice_ticks(y_low, y_high):
        y = py(tick)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_label(tick)}</text>')
    for tick in nice_ticks(x_low, x_high, 6):
        x = px(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" class="grid"/>'
                     f'<text x="{x:.1f}" y="{TOP + plot_h + 15}" class="tick" text-anchor="middle">{_label(tick)}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 4}" class="axis" text-anchor="middle">'
                 f'{escape(x_label)}</text>')
    legend_start = LEFT + 7.5 * len(title) + 18  # past the title (13 px bold: ~7.5 px a character)
    for index, one in enumerate(clean):
        color = PALETTE[index % len(PALETTE)]
        path = "M" + " L".join(f"{px(x):.1f},{py(y):.1f}" for x, y in one.points)
        parts.append(f'<path class="series" d="{path}" stroke="{color}" fill="none" stroke-width="1.6">'
                     f'<title>{escape(one.name)}</title></path>')
        if len(one.points) <= 60:  # dots (with their values on hover) while they do not crowd the line
            for x, y in one.points:
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.2" fill="{color}">'
                             f'<title>{escape(one.name)} {_label(y)} at {_label(x)} kimg</title></circle>')
        legend_x = legend_start + index * 110  # in the header, beside the title: never over a curve
        parts.append(f'<rect x="{legend_x:.0f}" y="11" width="10" height="3" fill="{color}"/>'
                     f'<text x="{legend_x + 14:.0f}" y="16" class="legend">{escape(one.name)}</text>')
    if marker is not None and math.isfinite(marker.x) and math.isfinite(marker.y):
        mx, my = px(marker.x), py(marker.y)
        anchor = "end" if mx > LEFT + plot_w * 0.7 else "start"
        offset = -8 if anchor == "end" else 8
        parts.append(f'<circle class="best" cx="{mx:.1f}" cy="{my:.1f}" r="5" fill="none" stroke="#000" '
                     f'stroke-width="1.5"><title>{escape(marker.label)}</title></circle>'
                     f'<text x="{mx + offset:.1f}" y="{my - 8:.1f}" class="legend" text-anchor="{anchor}">'
                     f'{escape(marker.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
