"""Third-party methods through the ``fewshot.methods`` entry points: a package installed into a temporary folder
adds an augmentation, a transfer method, a regularizer and a metric, one file each, and a run trains and
evaluates with all four without a line of fewshot changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FILES = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "fewshot-plugin-example"
        version = "0.1"

        [project.entry-points."fewshot.methods"]
        flip = "fewshot_plugin_example.flip"
        freeze_top = "fewshot_plugin_example.freeze_top"
        brightness = "fewshot_plugin_example.brightness"
        mean_distance = "fewshot_plugin_example.mean_distance"

        [tool.setuptools]
        packages = ["fewshot_plugin_example"]
    """,
    "fewshot_plugin_example/__init__.py": "",
    "fewshot_plugin_example/flip.py": '''
        """An augmentation: left-right flips of a share of the images D sees."""
        from dataclasses import dataclass

        import torch

        from fewshot.augment.base import Augment
        from fewshot.registry import augmentations, option


        @dataclass(frozen=True)
        class FlipOptions:
            fraction: float = option(0.5, "Share of images flipped.", check=lambda v: 0 <= v <= 1, wanted="in [0, 1]")


        @augmentations.register("plugin-flip", options=FlipOptions, help="left-right flips before D")
        class FlipAugment(Augment):
            calls = 0

            def __init__(self, fraction: float = 0.5, **common):
                super().__init__(**common)
                self.fraction = fraction

            def forward(self, images):
                type(self).calls += 1
                flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < self.fraction
                return torch.where(flip, images.flip(3), images)
    ''',
    "fewshot_plugin_example/freeze_top.py": '''
        """A transfer method: freeze the generator's synthesis blocks nearest the image."""
        from dataclasses import dataclass

        from fewshot.registry import option, transfers
        from fewshot.transfer import Transfer


        @dataclass(frozen=True)
        class FreezeTopOptions:
            blocks: int = option(1, "Synthesis blocks to freeze.", check=lambda v: v >= 0, wanted=">= 0")


        @transfers.register("plugin-freeze-top", options=FreezeTopOptions, help="freeze G's top synthesis blocks")
        class FreezeTop(Transfer):
            def __init__(self, options=None, *, r1_fake=False, seed=0):
                super().__init__(options, r1_fake=r1_fake, seed=seed)
                self.general_g = self.settings.blocks
    ''',
    "fewshot_plugin_example/brightness.py": '''
        """A regularizer: pull the fakes' mean brightness towards the training images'."""
        from dataclasses import dataclass

        from fewshot.registry import option, regularizers
        from fewshot.regularizers import GeneratorRegularizer, NullRegularizer


        @dataclass(frozen=True)
        class BrightnessOptions:
            weight: float = option(0.0, "Weight of the term (0: off).", check=lambda v: v >= 0, wanted=">= 0")


        class Brightness(GeneratorRegularizer):
            def __init__(self, weight, target):
                super().__init__()
                self.weight, self.target = weight, target

            def generator_loss(self, fake_images, real_images=None):
                return self.weight * (fake_images.mean() - self.target) ** 2


        @regularizers.register("plugin-brightness", options=BrightnessOptions, help="mean brightness of the fakes")
        def build(options, *, real_images, device, mirror):
            if options.weight == 0:
                return NullRegularizer()
            return Brightness(options.weight, float(real_images.float().mean() / 127.5 - 1))
    ''',
    "fewshot_plugin_example/mean_distance.py": '''
        """A metric without a network: how far the mean generated image is from the mean training image."""
        from dataclasses import dataclass

        from fewshot.metrics import Measured, Metric
        from fewshot.registry import metrics, option


        @dataclass(frozen=True)
        class MeanDistanceOptions:
            scale: float = option(1.0, "Multiplies the distance.", check=lambda v: v > 0, wanted="> 0")


        @metrics.register("plugin-mean-distance", options=MeanDistanceOptions, needs=("images",),
                          lower_is_better=True)
        class MeanDistance(Metric):
            def compute(self, real, fake, seed):
                gap = (real["images"].features.double().mean(0) - fake["images"].double().mean(0)).abs().mean()
                return Measured({"plugin-mean-distance": float(gap) * self.options.scale}, {})
    ''',
}

SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
from fewshot.checkpoint import load_bundle
from fewshot.config import resolve_config
from fewshot.train.loop import train

base, out = sys.argv[1], sys.argv[2]
cfg = resolve_config(None, {
    "data": "demo", "base": base, "kimg": 0.008, "tick_kimg": 0.008, "batch": 4, "mbstd_group": 2, "max_images": 8,
    "aug": "plugin-flip", "augment.fraction": 1.0, "transfer": "plugin-freeze-top", "transfer.blocks": 1,
    "regularizers.plugin-brightness.weight": 0.5, "metrics": "plugin-mean-distance", "metrics_n": 8,
    "best_metric": "plugin-mean-distance", "outdir": out, "sample_grid": "2x2", "device": "cpu",
})
run = train(cfg, progress=False, echo=lambda m: None, plan=False)
import fewshot_plugin_example.flip as flip
final = load_bundle(run / "final.safetensors")
before = load_bundle(base)
frozen = [k for k in before.networks["G"].state_dict() if k.startswith("synthesis.b32.")]
print(json.dumps({
    "run": str(run),
    "augment_calls": flip.FlipAugment.calls,
    "frozen_equal": all(torch.equal(before.networks["G"].state_dict()[k], final.networks["G"].state_dict()[k])
                        for k in frozen),
    "trained_moved": not torch.equal(before.networks["G"].state_dict()["mapping.fc0.weight"],
                                     final.networks["G"].state_dict()["mapping.fc0.weight"]),
    "config": cfg.to_dict(),
}))
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The example package, really installed (pip, its entry points in the dist-info) into a folder of its own."""
    root = tmp_path_factory.mktemp("plugin")
    src, site = root / "src", root / "site"
    for name, text in FILES.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(site.glob("fewshot_plugin_example-*.dist-info/entry_points.txt"))
    return site


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEWSHOT_")}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), OMP_NUM_THREADS="1", FEWSHOT_OFFLINE="1",
               FEWSHOT_OPS="reference")
    return env


def test_a_plugin_package_adds_four_methods_that_train_and_evaluate(plugin_site: Path, tmp_path: Path) -> None:
    from conftest import make_tiny_D, make_tiny_G

    from fewshot.checkpoint import save_bundle

    base = tmp_path / "base.safetensors"
    save_bundle(base, {"G": make_tiny_G(1), "G_ema": make_tiny_G(1), "D": make_tiny_D(2)})
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(base), str(tmp_path / "runs")], capture_output=True,
                          text=True, env=_env(plugin_site), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    config = result["config"]
    assert config["augment"] == {**config["augment"], "method": "plugin-flip", "fraction": 1.0}
    assert config["transfer"]["method"] == "plugin-freeze-top" and config["transfer"]["blocks"] == 1
    assert config["regularizers"] == {"plugin-brightness": {"weight": 0.5}}
    assert result["augment_calls"] > 0  # D saw the plugin's augmentation
    assert result["frozen_equal"] and result["trained_moved"]  # the plugin's transfer froze G's top block only
    run = Path(result["run"])
    ticks = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"tick"' in line]
    assert ticks[-1]["loss_reg"] > 0  # the plugin's regularizer entered Gmain
    evaluated = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert evaluated and evaluated[-1]["plugin-mean-distance"] >= 0
    assert (run / "best.safetensors").is_file()  # kept by the plugin metric

    listed = subprocess.run([sys.executable, "-m", "fewshot", "presets", "--methods"], capture_output=True,
                            text=True, env=_env(plugin_site), timeout=120)
    assert listed.returncode == 0, listed.stderr
    shown = {line.split()[0] for line in listed.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert {"plugin-flip", "plugin-freeze-top", "plugin-brightness", "plugin-mean-distance"} <= shown
    refused = subprocess.run([sys.executable, "-m", "fewshot", "train", "demo", "--base", str(base), "--dry-run",
                              "--aug", "plugin-flip", "--set", "augment.fraction=2"], capture_output=True, text=True,
                             env=_env(plugin_site), timeout=120)
    assert refused.returncode == 1 and "augment 'plugin-flip'.fraction must be in [0, 1]" in refused.stderr


def test_a_plugin_that_fails_to_import_is_named_in_one_line(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "broken_plugin").mkdir(parents=True)
    (site / "broken_plugin" / "__init__.py").write_text("raise RuntimeError('half installed')\n")
    info = site / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fewshot.methods]\nbroken = broken_plugin\n")
    done = subprocess.run([sys.executable, "-m", "fewshot", "presets", "--methods"], capture_output=True, text=True,
                          env=_env(site), timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "the fewshot plugin 'broken' (broken_plugin) failed to load: RuntimeError: half installed" in done.stderr
