"""Watching a run (#25): TensorBoard events read back, the report page in a real browser, the timelapse, the
table of runs with its three states."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import _train_command, _wait_for_first_tick, tiny_cfg

from fewshot.cli.main import main
from fewshot.errors import FewshotError
from fewshot.train import run_dir as layout
from fewshot.watch.report import plots, write_report
from fewshot.watch.runs import list_runs, run_state
from fewshot.watch.svgplot import Series, line_plot, nice_ticks
from fewshot.watch.timelapse import write_timelapse

TICKS = 3  # tick_kimg 0.008 (two batches of 4), snap=1: a grid, a snapshot and a report refresh at each tick
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome"))
                 if p), None)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fewshot.train.loop import train

    out = tmp_path_factory.mktemp("watch")
    return train(tiny_cfg(out, kimg=0.008 * TICKS), progress=False, echo=lambda m: None)


def _copy(run: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(run, tmp_path / "runs" / name))


def _with_metrics(run: Path) -> Path:
    """Metric lines as a run with metrics writes them (metrics.jsonl), one of them nested like a copy check."""
    lines = [{"kimg": 0.008, "fid": 90.0, "is": 1.5, "copies": {"fraction": 0.25, "threshold": 0.1}},
             {"kimg": 0.016, "fid": 70.0, "is": 2.5, "copies": {"fraction": 0.5, "threshold": 0.1}},
             {"kimg": 0.024, "fid": 80.0, "is": 2.0, "copies": {"fraction": 0.75, "threshold": 0.1}}]
    layout.metrics_path(run).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run


# ---- TensorBoard -----------------------------------------------------------------------------------


def test_a_run_writes_tfevents_that_tensorboard_reads_back_with_scalars_and_images(finished_run: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(finished_run), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    ticks = [r for r in layout.read_records(layout.log_path(finished_run)) if "tick" in r]
    assert len(ticks) == TICKS
    for key, tag in (("loss_G", "Loss/loss_G"), ("loss_D", "Loss/loss_D"), ("aug_p", "Augment/aug_p"),
                     ("sec_per_kimg", "Timing/sec_per_kimg"), ("r1_penalty", "Reg/r1_penalty"),
                     ("lr_g", "Progress/lr_g"), ("mem_mb", "Resources/mem_mb")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [round(r["kimg"] * 1000) for r in ticks]  # the step: images shown
        # TensorBoard stores float32: the log's values to float32's relative rounding (2**-24)
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in ticks], rel=2**-23, abs=1e-30)
    grids = layout.list_fakes(finished_run)
    images = events.Images("Samples/fakes")
    assert [i.step for i in images] == [round(k * 1000) for k, _ in grids]
    from PIL import Image

    with Image.open(grids[-1][1]) as grid:
        assert (images[-1].width, images[-1].height) == grid.size
    assert len(events.Images("Samples/reals")) == 1


def test_a_resume_drops_the_events_past_its_snapshot_and_keeps_the_snapshot_tick(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from types import SimpleNamespace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fewshot.watch.hooks import on_tick, watching

    run_folder = tmp_path / "00000-r"
    run_folder.mkdir()
    layout.transfer_table_path(run_folder).write_text("table\n")
    said: list[str] = []
    run = SimpleNamespace(is_main=True, run_dir=run_folder, progress=SimpleNamespace(cur_nimg=0), out=said.append)
    with watching(run):  # the first session: ticks at 8, 16, 24 images
        for nimg in (8, 16, 24):
            run.progress.cur_nimg = nimg
            on_tick(run, {"tick": 0, "kimg": nimg / 1000, "loss_G": float(nimg)})
    run.progress.cur_nimg = 16  # resumed from the snapshot at 16 images: 24 comes again
    with watching(run):
        run.progress.cur_nimg = 24
        on_tick(run, {"tick": 2, "kimg": 0.024, "loss_G": -1.0})
    assert not said
    events = EventAccumulator(str(run_folder))
    events.Reload()
    assert [(s.step, s.value) for s in events.Scalars("Loss/loss_G")] == [(8, 8.0), (16, 16.0), (24, -1.0)]


def test_metrics_go_to_tensorboard_by_their_paths_nested_ones_included() -> None:
    from fewshot.watch.tfevents import metric_scalars, scalar_tag

    assert metric_scalars({"fid": 12.5, "copies": {"fraction": 0.25, "note": "x"}, "ok": True}) == {
        "Metrics/fid": 12.5, "Metrics/copies/fraction": 0.25}
    assert scalar_tag("loss_G") == "Loss/loss_G" and scalar_tag("something_new") == "Other/something_new"


def test_without_tensorboard_a_run_says_so_in_one_line_and_trains(tmp_path: Path, monkeypatch) -> None:
    import fewshot.watch.tfevents as tfevents
    from fewshot.train.loop import train

    line = "tensorboard: not installed, so no TensorBoard events are written (pip install 'fewshot[tensorboard]')"
    monkeypatch.setattr(tfevents, "tensorboard_missing", lambda: line)
    said: list[str] = []
    run = train(tiny_cfg(tmp_path, kimg=0.008), progress=False, echo=said.append)
    assert said.count(line) == 1
    assert not list(run.glob("events.out.tfevents.*"))
    assert layout.final_path(run).is_file() and layout.report_path(run).is_file()


# ---- the report ------------------------------------------------------------------------------------


def test_training_refreshes_the_report_at_each_snapshot_and_at_the_end(finished_run: Path) -> None:
    page = layout.report_path(finished_run).read_text()
    assert "finished" in page and layout.FINAL_NAME in page  # the last refresh came after final.safetensors
    assert page.count('<figure>') == TICKS  # one grid per snapshot tick in the strip
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert "<pre>" in page and "trainable" in page  # the frozen/modulated/trained table and the config


def test_each_metric_gets_a_plot_with_its_best_marked_in_its_direction(finished_run: Path, tmp_path: Path) -> None:
    from fewshot.watch.report import metric_records, tick_records

    run = _with_metrics(_copy(finished_run, tmp_path, "00000-m"))
    svgs = plots(tick_records(run), metric_records(run))
    by_title = {re.search(r'class="title">([^<]*)<', s).group(1): s for s in svgs}
    assert "best 70 at 0.016 kimg (lowest)" in by_title["Metric: fid"]
    assert "best 2.5 at 0.016 kimg (highest)" in by_title["Metric: is"]  # IS: higher is better (the registry)
    assert "Metric: copies" not in by_title  # a nested result is a table, not a curve
    page = write_report(run).read_text()
    assert "copies.fraction" in page and "0.75" in page


def test_plots_of_nothing_are_left_out_and_ticks_are_round() -> None:
    assert line_plot("empty", [Series("a", [(0.0, float("nan"))])]) == ""
    assert nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(3.0, 97.0) == [25.0, 50.0, 75.0] and nice_ticks(-0.013, 0.004) == [-0.01, -0.005, 0.0]
    svg = line_plot("one point", [Series("a", [(1.0, 2.0)])])
    assert re.search(r'<path class="series" d="M[0-9.]+,[0-9.]+"', svg)


def _chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120)


def _page_status(dom: str) -> dict[str, str]:
    tag = re.search(r'<p id="page-status"([^>]*)>', dom)
    assert tag, dom[:2000]
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', tag.group(1)))


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)")
def test_the_report_renders_in_headless_chromium_with_plots_images_and_no_errors(finished_run: Path,
                                                                                  tmp_path: Path) -> None:
    run = _with_metrics(_copy(finished_run, tmp_path, "00000-b"))
    page = write_report(run)
    shutil.rmtree(run / layout.SAMPLES_DIR)  # self-contained: nothing beside the page is needed to show it
    done = _chromium(page, tmp_path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    status = _page_status(done.stdout)
    assert status["ready"] == "ok", (status, re.search(r'<ol id="page-errors">(.*?)</ol>', done.stdout).group(1))
    assert int(status["plots"]) == 8 == int(status["drawn"])  # 6 tick plots + fid + is, each with a drawn line
    assert int(status["images"]) == TICKS + 2 == int(status["decoded"])  # the strip, the newest grid, the reals
    assert status["errors"] == "0"
    shot = tmp_path / "report.png"
    taken = _chromium(page, tmp_path, "--window-size=1280,2000", f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)")
def test_the_page_check_catches_a_script_error_a_console_error_and_a_broken_image(finished_run: Path,
                                                                                  tmp_path: Path) -> None:
    page = write_report(_copy(finished_run, tmp_path, "00000-e"))
    broken = page.read_text().replace(
        "</body>", '<img src="data:image/png;base64,AAAA" alt="broken"><script>console.error("boom");'
                   "notAFunction();</script></body>")
    page.write_text(broken)
    done = _chromium(page, tmp_path, "--dump-dom")
    status = _page_status(done.stdout)
    errors = re.search(r'<ol id="page-errors">(.*?)</ol>', done.stdout).group(1)
    assert status["ready"] == "failed" and int(status["errors"]) >= 3, (status, errors)
    assert "console.error: boom" in errors and "notAFunction" in errors and "broken" in errors


def test_report_of_a_folder_that_is_no_run_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path} is not a run folder")


# ---- the timelapse ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["gif", "mp4"])
def test_the_timelapse_has_one_frame_per_tick_with_the_kimg_stamped(finished_run: Path, tmp_path: Path,
                                                                    suffix: str) -> None:
    import numpy as np

    out, frames = write_timelapse(finished_run, tmp_path / f"progress.{suffix}", fps=2)
    assert frames == TICKS == len(layout.list_fakes(finished_run))
    if suffix == "gif":
        from PIL import Image, ImageSequence

        with Image.open(out) as gif:
            pictures = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    else:
        imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
        reader = imageio_ffmpeg.read_frames(str(out))
        meta = next(reader)
        pictures = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader]
    assert len(pictures) == TICKS
    band = pictures[0][:14]  # the stamp band above the grid: black with white text
    assert (band.max(axis=2) > 200).any() and (band.max(axis=2) < 40).mean() > 0.5


def test_a_timelapse_of_a_run_without_grids_or_to_another_format_is_one_line(finished_run: Path,
                                                                             tmp_path: Path) -> None:
    with pytest.raises(FewshotError, match="a .gif or an .mp4"):
        write_timelapse(finished_run, tmp_path / "p.avi")
    empty = tmp_path / "00000-empty"
    (empty / layout.SAMPLES_DIR).mkdir(parents=True)
    with pytest.raises(FewshotError, match="no sample grid yet"):
        write_timelapse(empty, tmp_path / "p.gif")


# ---- the table of runs -----------------------------------------------------------------------------


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from fewshot.train.run_dir import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_runs_lists_a_training_a_stopped_and_a_finished_run(finished_run: Path, tmp_path: Path, capsys) -> None:
    _copy(finished_run, tmp_path, "00000-done")
    stopped = _copy(finished_run, tmp_path, "00001-stopped")
    crashed = _copy(finished_run, tmp_path, "00002-crashed")
    training = _copy(finished_run, tmp_path, "00003-training")
    for run in (stopped, crashed, training):
        layout.final_path(run).unlink()
        config = layout.config_path(run)
        config.write_text(config.read_text().replace("kimg = 0.024", "kimg = 1.0"))  # 0.024 of 1 kimg done
    with layout.log_path(stopped).open("a") as fh:
        fh.write(json.dumps({"event": "stop", "cause": "SIGINT", "kimg": 0.024}) + "\n")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(training)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rows = {row["name"]: row for row in list_runs(tmp_path / "runs")}
        assert [rows[n]["state"] for n in sorted(rows)] == ["finished", "stopped", "stopped", "training"]
        assert rows["00003-training"]["pid"] == holder.pid
        assert rows["00001-stopped"]["cause"] == "SIGINT"
        assert "killed or crashed" in rows["00002-crashed"]["cause"]
        assert rows["00000-done"]["eta_sec"] is None and rows["00003-training"]["eta_sec"] > 0
        assert rows["00000-done"]["done_kimg"] == pytest.approx(0.024)
        with pytest.raises(SystemExit) as exit_info:
            main(["runs", str(tmp_path / "runs")])
        assert exit_info.value.code == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["name", "preset", "base", "kimg", "state", "loss_G", "loss_D", "best", "eta"]
        assert f"training (pid {holder.pid})" in table[4] and "0.024/1" in table[4]
        assert "stopped: SIGINT" in table[2] and "finished" in table[1] and "0.024/0.024" in table[1]
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert run_state(training)["state"] == "stopped"  # the lock went with the process


def test_a_real_run_is_listed_as_training_while_it_trains_then_stopped_with_its_report_saying_why(
        tmp_path: Path) -> None:
    import os
    import signal

    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_train_command(out).split(), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        run = _wait_for_first_tick(out, proc)
        (row,) = list_runs(out)
        assert (row["state"], row["pid"]) == ("training", proc.pid)
        assert row["done_kimg"] > 0 and row["target_kimg"] == 1000 and row["eta_sec"] > 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=240) == 130, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (row,) = list_runs(out)
    assert (row["state"], row["cause"]) == ("stopped", "SIGINT")
    page = layout.report_path(run).read_text()  # written by the run on its way out
    assert "stopped: SIGINT" in page and "training (pid" not in page


def test_runs_of_a_missing_folder_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["runs", str(tmp_path / "nope")])
    assert exit_info.value.code == 1 and "is not a folder" in capsys.readouterr().err
