"""``RUN/report.html``: a run on one page that opens offline from disk.

Everything is inside the file: the plots are inline SVG (:mod:`fewshot.watch.svgplot`), the images are data
URIs, the style and the script are inline; only the links to the checkpoints point next to it. The script
checks the page (each plot drew a line, each image decoded) and writes the outcome into the page
(``#page-status``), with any error the page met (``#page-errors``), so a headless browser's ``--dump-dom``
shows whether the page rendered.
"""

from __future__ import annotations

import base64
import io
import math
import os
import time
from html import escape
from pathlib import Path
from typing import Any

from ..errors import FewshotError
from ..train import run_dir as layout
from .runs import run_state, state_text, summarize_run
from .svgplot import Marker, Series, line_plot

STRIP_FRAMES = 12  # grids in the strip over time, evenly spread over the run
STRIP_WIDTH = 360  # px of each grid in the strip (a thumbnail; the newest grid is shown larger)
LATEST_WIDTH = 1024
# Plots of the tick records: title -> keys (a plot appears when one of its keys is in the log).
TICK_PLOTS = (
    ("Losses", ("loss_G", "loss_D")),
    ("D outputs (mean logits)", ("D_real", "D_fake")),
    ("R1 penalty", ("r1_penalty", "r1_fake_penalty")),  # apart: their scales differ by orders of magnitude
    ("Path-length penalty", ("pl_penalty",)),
    ("Reg-DGM term", ("loss_reg",)),
    ("Augmentation p", ("aug_p",)),
    ("Seconds per kimg", ("sec_per_kimg",)),
)

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.plots{display:flex;flex-wrap:wrap;gap:12px}svg.plot{background:#fff;border:1px solid #eee}
svg .title{font-weight:600;font-size:13px}svg .tick,svg .legend,svg .axis{font-size:11px;fill:#444}
svg .frame{fill:none;stroke:#bbb}svg .grid{stroke:#eee}
pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:12px}
table{border-collapse:collapse}td,th{padding:2px 10px 2px 0;text-align:left;font-size:13px}
.strip{display:flex;flex-wrap:wrap;gap:8px}.strip figure{margin:0}figcaption{font-size:12px;color:#555}
img{image-rendering:auto;max-width:100%}.muted{color:#777}
"""

# Runs first: errors of any later script, failed images, console.error calls all land in #page-errors.
_ERROR_SCRIPT = """<script>
(function(){
  function record(text){var list=document.getElementById('page-errors');
    if(!list){(window.__early=window.__early||[]).push(text);return;}
    var item=document.createElement('li');item.textContent=text;list.appendChild(item);}
  window.__recordError=record;
  window.addEventListener('error',function(e){
    if(e.target&&e.target!==window&&e.target.tagName){record('failed to load '+e.target.tagName+' '+(e.target.alt||''));}
    else{record('error: '+e.message);}},true);
  window.addEventListener('unhandledrejection',function(e){record('unhandled rejection: '+e.reason);});
  var original=console.error;console.error=function(){record('console.error: '+Array.prototype.join.call(arguments,' '));
    return original.apply(console,arguments);};
})();
</script>"""

# Runs at load: every plot has a drawn line, every image decoded; the verdict goes into #page-status.
_CHECK_SCRIPT = """<script>
window.addEventListener('load',function(){
  (window.__early||[]).forEach(window.__recordError);
  var plots=document.querySelectorAll('svg.plot'),drawn=0;
  plots.forEach(function(svg){var box=svg.querySelector('path.series');
    if(box&&/^M[-0-9.]+,[-0-9.]+/.test(box.getAttribute('d'))&&svg.getBoundingClientRect().width>0){drawn++;}});
  var images=document.querySelectorAll('img'),decoded=0;
  images.forEach(function(img){if(img.complete&&img.naturalWidth>0){decoded++;}
    else{window.__recordError('image did not decode: '+img.alt);}});
  var status=document.getElementById('page-status');
  status.setAttribute('data-plots',plots.length);status.setAttribute('data-drawn',drawn);
  status.setAttribute('data-images',images.length);status.setAttribute('data-decoded',decoded);
  var errors=document.getElementById('page-errors').children.length;
  status.setAttribute('data-errors',errors);
  status.setAttribute('data-ready',errors===0&&drawn===plots.length&&decoded===images.length?'ok':'failed');
  status.textContent=drawn+' of '+plots.length+' plots, '+decoded+' of '+images.length+' images'+
    (errors?(', '+errors+' error(s)'):'');
});
</script>"""


def metric_directions() -> dict[str, bool]:
    """Each reported metric value's direction (True: lower is better), from the metrics registry."""
    try:
        from ..registry import metrics
    except Exception:  # noqa: BLE001 - a broken plug-in must not cost the page; lower-is-better is assumed
        return {}
    directions: dict[str, bool] = {}
    try:
        for entry in metrics.entries():
            lower = bool(entry.extra.get("lower_is_better", True))
            for key in entry.extra.get("reports") or (entry.name,):
                directions[key] = lower
    except Exception:  # noqa: BLE001
        return directions
    return directions


def _headline(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict) and isinstance(value.get("mean"), (int, float)):
        return float(value["mean"])
    return None


def tick_records(run_dir: Path) -> list[dict[str, Any]]:
    """The tick lines of log.jsonl, one per kimg: a resume from an older snapshot logs some ticks again; the
    later line is the one the run continued from."""
    by_kimg = {r["kimg"]: r for r in layout.read_records(layout.log_path(run_dir))
               if "tick" in r and isinstance(r.get("kimg"), (int, float))}
    return [by_kimg[k] for k in sorted(by_kimg)]


def metric_records(run_dir: Path) -> list[dict[str, Any]]:
    by_kimg = {r["kimg"]: r for r in layout.read_records(layout.metrics_path(run_dir))
               if isinstance(r.get("kimg"), (int, float))}
    return [by_kimg[k] for k in sorted(by_kimg)]


def plots(ticks: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> list[str]:
    """The page's SVG plots: the tick curves, then one per metric value with its best point marked."""
    out = []
    for title, keys in TICK_PLOTS:
        series = [Series(k, [(r["kimg"], r[k]) for r in ticks if isinstance(r.get(k), (int, float))]) for k in keys]
        svg = line_plot(title, [s for s in series if s.points])
        if svg:
            out.append(svg)
    directions = metric_directions()
    names = list(dict.fromkeys(k for r in metrics for k in r if k != "kimg"))
    for name in names:
        points = [(r["kimg"], v) for r in metrics if (v := _headline(r.get(name))) is not None and math.isfinite(v)]
        if not points:
            continue
        lower = directions.get(name, True)
        best = (min if lower else max)(points, key=lambda p: p[1])
        label = f"best {best[1]:.4g} at {best[0]:g} kimg ({'lowest' if lower else 'highest'})"
        out.append(line_plot(f"Metric: {name}", [Series(name, points)], Marker(best[0], best[1], label)))
    return out


_URI_CACHE: dict[tuple[str, int, int, int], tuple[str, int]] = {}  # a training process refreshes the page at
_URI_CACHE_SIZE = 64  # each snapshot: the older grids are decoded and scaled once, not at every refresh


def _data_uri(path: Path, width: int) -> tuple[str, int]:
    """A PNG as a data URI, scaled down to ``width`` px when wider (large grids would make a huge page); and its
    width."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, width)
    if key not in _URI_CACHE:
        if len(_URI_CACHE) >= _URI_CACHE_SIZE:
            _URI_CACHE.pop(next(iter(_URI_CACHE)))
        _URI_CACHE[key] = _encode_uri(path, width)
    return _URI_CACHE[key]


def _encode_uri(path: Path, width: int) -> tuple[str, int]:
    from PIL import Image

    with Image.open(path) as picture:
        picture.load()
        if picture.width > width:
            picture = picture.resize((width, max(1, round(picture.height * width / picture.width))),
                                     Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), picture.width


def _image(path: Path, alt: str, width: int) -> str:
    """An embedded image; small grids (32 px samples) are shown enlarged, with their pixels kept sharp."""
    uri, natural = _data_uri(path, width)
    shown = max(natural, width // 2)
    style = ' style="image-rendering:pixelated"' if shown > natural else ""
    return f'<img src="{uri}" alt="{escape(alt)}" width="{shown}"{style}>'


def _strip(grids: list[tuple[float, Path]]) -> str:
    if not grids:
        return '<p class="muted">no grid yet (the first is written at the first snapshot)</p>'
    if len(grids) > STRIP_FRAMES:  # evenly spread, always with the first and the newest
        step = (len(grids) - 1) / (STRIP_FRAMES - 1)
        grids = [grids[round(i * step)] for i in range(STRIP_FRAMES)]
    figures = "".join(f"<figure>{_image(path, f'fakes at {kimg:g} kimg', STRIP_WIDTH)}"
                      f"<figcaption>{kimg:g} kimg</figcaption></figure>" for kimg, path in grids)
    return f'<div class="strip">{figures}</div>'


def _flatten(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [row for key, inner in value.items() for row in _flatten(f"{prefix}.{key}" if prefix else key, inner)]
    if isinstance(value, float):
        return [(prefix, f"{value:.5g}")]
    if isinstance(value, list):
        return [(prefix, ", ".join(str(v) for v in value[:20]) + (" ..." if len(value) > 20 else ""))]
    return [(prefix, str(value))]


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _links(run_dir: Path) -> str:
    files = [*(n for n in layout.EXPORT_NAMES if (run_dir / n).is_file()),
             *(f"{layout.CHECKPOINTS_DIR}/{p.name}" for p in layout.list_snapshots(run_dir))]
    if not files:
        return '<p class="muted">no checkpoint yet</p>'
    items = "".join(f'<li><a href="{escape(name)}">{escape(name)}</a> '
                    f'<span class="muted">({(run_dir / name).stat().st_size / 2**20:.1f} MB)</span></li>'
                    for name in files)
    return f"<ul>{items}</ul>"


def _text_file(path: Path, missing: str) -> str:
    try:
        return f"<pre>{escape(path.read_text())}</pre>"
    except OSError:
        return f'<p class="muted">{escape(missing)}</p>'


def render_report(run_dir: Path) -> str:
    """The page's HTML."""
    row = summarize_run(run_dir)
    ticks, metrics = tick_records(run_dir), metric_records(run_dir)
    grids = layout.list_fakes(run_dir)
    target = row["target_kimg"]
    facts = [("state", state_text({**row, **run_state(run_dir)})), ("preset", row["preset"] or "-"),
             ("base", row["base"] or "from scratch"),
             ("kimg", f"{row['done_kimg']:g} of {target:g}" if isinstance(target, (int, float)) else f"{row['done_kimg']:g}")]
    facts.append(("written", time.strftime("%Y-%m-%d %H:%M:%S") + (" by the training process" if
                  row["state"] == "training" and row["pid"] == os.getpid() else "")))
    if row["best"]:
        facts.append(("best", f"{row['best']['metric']} {row['best']['value']:.4g} at {row['best']['kimg']} kimg"))
    sections = [
        f"<h1>{escape(run_dir.name)}</h1>", _table(facts),
        '<p id="page-status" data-ready="pending">the page\'s script did not run</p><ol id="page-errors"></ol>',
        "<h2>Curves</h2>", '<div class="plots">' + ("".join(plots(ticks, metrics)) or
                                                   '<p class="muted">no tick logged yet</p>') + "</div>",
    ]
    if metrics:
        sections += ["<h2>Latest metrics</h2>",
                     f'<p class="muted">at {metrics[-1]["kimg"]:g} kimg (the copy check, when computed, is here)</p>',
                     _table([r for k, v in metrics[-1].items() if k != "kimg" for r in _flatten(k, v)])]
    sections.append("<h2>Samples over time (fixed latents)</h2>" + _strip(grids))
    if grids:
        kimg, newest = grids[-1]
        sections.append(f"<h2>Newest samples ({kimg:g} kimg)</h2>" + _image(newest, "newest fakes", LATEST_WIDTH))
    reals = layout.reals_path(run_dir)
    if reals.is_file():
        sections.append("<h2>Training images</h2>" + _image(reals, "reals", LATEST_WIDTH))
    sections += ["<h2>Checkpoints</h2>", _links(run_dir),
                 "<h2>What trains</h2>", _text_file(layout.transfer_table_path(run_dir), "no transfer table"),
                 "<h2>Resolved config</h2>", _text_file(layout.config_path(run_dir), "no config.toml")]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(run_dir.name)}: fewshot report</title><style>{_STYLE}</style>{_ERROR_SCRIPT}</head>"
            f"<body>{''.join(sections)}{_CHECK_SCRIPT}</body></html>\n")


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` (atomically: a browser reloading it never sees half a page)."""
    if not (run_dir.is_dir() and (layout.config_path(run_dir).is_file() or layout.log_path(run_dir).is_file())):
        raise FewshotError(f"{run_dir} is not a run folder (no config.toml or log.jsonl)")
    from ..checkpoint import atomic_write_bytes

    path = layout.report_path(run_dir)
    atomic_write_bytes(path, render_report(run_dir).encode())
    return path
