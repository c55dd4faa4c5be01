"""The house may be rebuilt, the training may not change: one tick of every preset equals the recorded hashes.

``tests/fixtures/tick_parity.json`` was recorded by ``tests/tick_parity.py`` before the registry/config/loop
refactor (issue #20) and re-recorded by that same commit's code with oneDNN off. The script runs on the
libraries' portable kernel paths (see its docstring), so the hashes hold on any x86-64 CPU; a new preset is recorded by running the script with its name and adding the line.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "tick_parity.json"


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
    now, recorded = json.loads(out.read_text()), json.loads(FIXTURE.read_text())
    new = sorted(set(now) - set(recorded))
    assert not new, f"presets without a recorded tick: {new} (record: python tests/tick_parity.py OUT.json NAME)"
    changed = sorted(name for name in recorded if now.get(name) != recorded[name])
    assert not changed, f"one tick of these presets no longer gives the recorded tensors: {changed}"
