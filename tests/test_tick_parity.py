"""The house may be rebuilt, the training may not change: one tick of every preset equals the recorded hashes.

``tests/fixtures/tick_parity.json`` was recorded by ``tests/tick_parity.py`` before the registry/config/loop
refactor (issue #20) and re-recorded by that same commit's code with oneDNN off; the second kernel family's hashes
and the summaries by code whose ticks matched the first family's bit for bit. The script runs on the libraries'
portable kernel paths (see its docstring); a machine of a recorded kernel family must reproduce that family's
hashes exactly, any other its summaries within float32 noise. A new preset is recorded with
``python tests/tick_parity.py --record NAME``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from tick_parity import FIXTURE, compare

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the portable kernel paths the hashes were recorded on are x86-64's")
def test_one_tick_of_every_preset_is_bit_identical_to_the_recorded_fixture(tmp_path):
    out = tmp_path / "ticks.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONEDNN_", "MKL_", "ATEN_", "FEWSHOT_"))}
    env["FEWSHOT_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(HERE.parent)  # this checkout's fewshot, not whichever is installed
    done = subprocess.run([sys.executable, str(HERE / "tick_parity.py"), str(out)], capture_output=True, text=True,
                          env=env, timeout=600, cwd=HERE.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    fixture = json.loads(FIXTURE.read_text())
    failures, note = compare(json.loads(out.read_text()), fixture["families"], fixture["summaries"])
    assert not failures, "one tick of these presets no longer gives the recorded tensors:\n" + "\n".join(failures)
    if note:
        warnings.warn(note, stacklevel=1)


def test_a_machine_is_placed_in_its_kernel_family_and_held_to_it_bit_for_bit():
    """The comparison itself: the family by fingerprint or by agreeing hashes, exact there, summaries elsewhere."""
    families = [{"machine": "A", "kernels": None, "hashes": {"p": "a1", "q": "a2"}},
                {"machine": "B", "kernels": "fb", "hashes": {"p": "b1", "q": "b2"}}]
    summaries = {"p": {"w": [2.0, 0.5]}, "q": {"w": [1.0, -0.25]}}
    near = {"p": {"w": [2.0 + 1e-4, 0.5]}, "q": {"w": [1.0, -0.25 - 1e-4]}}
    now = {"kernels": "fa", "hashes": {"p": "a1", "q": "a2"}, "summaries": near}
    assert compare(now, families, summaries) == ([], None)  # family A by its hashes, matched exactly
    failures, _ = compare(dict(now, hashes={"p": "a1", "q": "zz"}), families, summaries)
    assert failures == ["q: not the tensors recorded for these kernels (A)"]  # near summaries do not excuse it
    failures, _ = compare(dict(now, kernels="fb", hashes={"p": "zz", "q": "b2"}), families, summaries)
    assert failures == ["p: not the tensors recorded for these kernels (B)"]  # family B by its fingerprint
    failures, note = compare(dict(now, kernels="fc", hashes={"p": "c1", "q": "c2"}), families, summaries)
    assert failures == [] and note.startswith("p, q: compared by summary within 0.01 (no recorded kernel family")
    far = {"p": {"w": [2.0, 0.5 + 0.03]}, "q": {"w": [1.0, -0.25]}}
    failures, _ = compare({"kernels": "fc", "hashes": {"p": "c1", "q": "c2"}, "summaries": far}, families, summaries)
    assert failures == ["p: 1 tensors moved, e.g. w (1.5e-02 of its norm)"]
    failures, _ = compare({"kernels": "fb", "hashes": {"r": "x"}, "summaries": {"r": {}}}, families, summaries)
    assert failures == ["r: nothing recorded (record: python tests/tick_parity.py --record r)"]
