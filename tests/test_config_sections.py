"""Method-owned config sections: presets, flat keys, config.toml round trips, and runs of earlier versions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from fewshot.config import config_from_dict, config_from_tree, lookup, resolve_config, tomllib
from fewshot.errors import FewshotError
from fewshot.sections import flat_to_tree, key_path, merge_trees

HERE = Path(__file__).resolve().parent
FLAT_RUN = HERE / "fixtures" / "flat_run"  # written by the version before the sections (see its make.py)


def test_flat_and_dotted_keys_name_the_same_place():
    assert key_path("aug_p") == key_path("augment.p") == ("augment", "p")
    assert key_path("reg_lambda") == ("regularizers", "reg-dgm", "weight")
    assert key_path("regularizers.reg-dgm.model") == ("regularizers", "reg-dgm", "model")
    assert key_path("kimg") == ("kimg",)
    a = resolve_config("ada", {"aug_p": 0.2, "freeze_d": 2, "transfer": "freezed", "base": "none"})
    b = resolve_config("ada", {"augment.p": 0.2, "transfer.freeze_d": 2, "transfer.method": "freezed",
                               "base": "none"})
    assert a.to_dict() == b.to_dict()
    assert a.augment.p == a.aug_p == lookup(a, "augment.p") == 0.2  # flat reads still answer
    assert a.transfer.options.freeze_d == a.freeze_d == 2


def test_a_child_preset_that_changes_the_method_drops_the_parents_method_options():
    parent = {"augment": {"method": "ada", "pipeline": "bgc", "target": 0.7}}
    child = merge_trees(parent, {"augment": {"method": "diffaug", "policy": "color"}})
    assert child["augment"] == {"method": "diffaug", "target": 0.7, "policy": "color"}  # common keys stay
    cfg = resolve_config("ada", {"aug": "diffaug", "base": "none"})  # the flag does the same
    assert cfg.augment.method == "diffaug" and cfg.augment.options.policy == "color,translation,cutout"


def test_an_option_of_another_method_is_refused_by_name():
    with pytest.raises(FewshotError, match=r"transfer 'finetune' has no option freeze_d"):
        resolve_config("ada", {"freeze_d": 3, "base": "none"})
    with pytest.raises(FewshotError, match="bad value for aug: 'mixup'"):
        resolve_config("ada", {"aug": "mixup"})
    with pytest.raises(FewshotError, match=r"aug_p must be in \[0, 1\], got 1.5"):
        resolve_config("ada", {"aug_p": 1.5})


@pytest.mark.parametrize("preset", ["reg-ada", "freezed-diffaug", "disp-ada", "adafm"])
def test_config_toml_reads_back_as_the_same_config(preset):
    cfg = resolve_config(preset, {"base": "none", "data": "demo", "metrics": "fid,kid", "sample_grid": "4x2"})
    text = cfg.to_toml()
    assert "\n[augment]\n" in text and "\n[transfer]\n" in text and "\n[metrics]\n" in text
    tree = {k: v for k, v in tomllib.loads(text).items() if k not in ("preset", "description")}
    again = config_from_tree(tree, cfg.preset, cfg.description)
    assert again.to_dict() == cfg.to_dict()
    assert config_from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()  # what snapshots store


def test_a_flat_config_of_an_earlier_version_maps_onto_the_sections():
    stored = tomllib.loads((FLAT_RUN / "config.toml").read_text())
    assert "aug" in stored and "augment" not in stored  # the fixture really is of the flat kind
    cfg = config_from_dict(stored)
    assert (cfg.augment.method, cfg.augment.p, cfg.augment.interval) == ("ada", 0.3, 4)
    assert cfg.transfer.method == "freezed" and cfg.transfer.options.freeze_d == 1
    assert cfg.regularizers == {}  # reg_lambda = 0: no regularizer
    # Options of methods the run did not use were written at their old defaults: dropped, not refused.
    tree = flat_to_tree({"aug": "none", "aug_pipeline": "bgc", "diffaug_policy": "color,translation,cutout",
                         "transfer": "finetune", "freeze_d": 0, "specific": "finetune", "general": None})
    assert tree == {"augment": {"method": "none"}, "transfer": {"method": "finetune"}}
    with pytest.raises(FewshotError, match="has no option freeze_d"):  # a value that meant something: refused
        config_from_dict({**stored, "transfer": "finetune", "freeze_d": 3})


def test_a_run_folder_of_an_earlier_version_resumes_exactly(tmp_path):
    """The fixture's first snapshot, resumed by this version for one tick, gives the tensors the earlier version
    itself reached (recorded in expected.json), on the portable kernel paths of tests/tick_parity.py: bit for bit
    on a machine of a recorded kernel family, within its summaries' float32 noise on any other."""
    from tick_parity import PORTABLE_ENV, compare

    run = tmp_path / "runs" / "00000-flat"
    shutil.copytree(FLAT_RUN, run, ignore=shutil.ignore_patterns("make.py", "expected.json"))
    expected = json.loads((FLAT_RUN / "expected.json").read_text())
    script = ("import sys, json; sys.path.insert(0, sys.argv[3]); import tick_parity as tp; tp.portable_torch();"
              "from fewshot.train.loop import train; from fewshot.config import resolve_config;"
              "run = train(resolve_config(None, {}), resume=sys.argv[1], kimg_override=float(sys.argv[2]),"
              " progress=False, echo=lambda m: None, plan=False);"
              "last = sorted((run / 'checkpoints').glob('*.safetensors'))[-1];"
              "print(json.dumps({'kernels': tp.kernel_fingerprint(), 'hashes': {'resumed': tp.tensor_digest(last)},"
              " 'summaries': {'resumed': tp.tensor_summary(last)}}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONEDNN_", "MKL_", "ATEN_", "FEWSHOT_"))}
    env.update(PORTABLE_ENV, FEWSHOT_HOME=str(tmp_path / "home"), PYTHONPATH=str(HERE.parent))
    done = subprocess.run([sys.executable, "-c", script, str(run), str(expected["resumed_to"]), str(HERE)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "checkpoints" / expected["snapshot"]).exists()
    failures, note = compare(json.loads(done.stdout.strip().splitlines()[-1]), expected["families"],
                             expected["summaries"])
    assert not failures, failures
    if note:
        warnings.warn(note, stacklevel=1)


def test_metrics_none_turns_the_metrics_off_and_a_misspelt_one_is_refused():
    on = resolve_config("ada", {"metrics": "fid,kid", "base": "none"})
    assert on.metrics.names == ("fid", "kid")
    for off in ("none", "None", "", ["none"]):
        assert resolve_config("ada", {"metrics": off, "base": "none"}).metrics.names == ()
    with pytest.raises(FewshotError, match="bad value for metrics: 'nne'"):
        resolve_config("ada", {"metrics": "nne", "base": "none"})
