"""Training configuration: defaults <- preset file(s) <- command-line overrides, resolved once.

A preset is a TOML file in ``presets/`` (or any path) with a ``description`` and any of the
:class:`TrainConfig` fields; ``extends = "other"`` inherits another preset first. The result is
one frozen :class:`TrainConfig`, written to the run folder as ``config.toml`` and into every
checkpoint, so a run can be read and resumed without outside knowledge.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .errors import FewshotError


def find_presets_dir() -> Path:
    """The ``presets/`` folder: the repository's (a source checkout or an editable install), else the
    copy a wheel installs under ``<prefix>/share/fewshot/presets`` (pyproject's data-files)."""
    beside_package = Path(__file__).resolve().parent.parent / "presets"
    if beside_package.is_dir():
        return beside_package
    import sys
    import sysconfig

    for base in (sysconfig.get_path("data"), sys.prefix, sys.base_prefix):
        installed = Path(base) / "share" / "fewshot" / "presets"
        if installed.is_dir():
            return installed
    return beside_package  # absent: listing finds nothing and a name lookup says so


PRESETS_DIR = find_presets_dir()
DATA_FILES = ("checkpoints", "weights")  # registries that live beside the presets

# Hyper-parameter families of the official configs (batch, R1 gamma, lr, ema_kimg, mapping layers, ramp-up).
# "auto" derives its values from the resolution as the official `auto` config does.
ARCH_SPECS: dict[str, dict[str, Any]] = {
    "paper256": dict(batch=64, gamma=1.0, lr=0.0025, ema_kimg=20.0, map_layers=8, ema_rampup=None, channel_base=16384),
    "paper512": dict(batch=64, gamma=0.5, lr=0.0025, ema_kimg=20.0, map_layers=8, ema_rampup=None, channel_base=32768),
    "paper1024": dict(batch=32, gamma=2.0, lr=0.002, ema_kimg=10.0, map_layers=8, ema_rampup=None, channel_base=32768),
    "stylegan2": dict(batch=32, gamma=10.0, lr=0.002, ema_kimg=10.0, map_layers=8, ema_rampup=None, channel_base=32768),
}


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run. ``None`` means 'derive it' (from the spec, the base or the data)."""

    # What to train on and from.
    data: str = ""  # folder, zip, or "demo" (built-in procedural images)
    base: str | None = None  # checkpoint reference to fine-tune from; None = from scratch
    base_note: str = ""  # where the base came from: "--base", "default of reg-ada for 256 px images", ...
    allow_partial: bool = False  # accept a base whose tensors do not all fit
    resolution: int | None = None  # scratch only; a base decides its own
    crop: str = "center"  # center | pad
    mirror: bool = True  # random x-flips of the training images
    max_images: int | None = None

    # Network shape for training from scratch (a base checkpoint overrides all of these).
    cfg: str = "auto"  # auto | paper256 | paper512 | paper1024 | stylegan2
    z_dim: int = 512
    w_dim: int = 512
    map_layers: int | None = None
    channel_base: int | None = None
    channel_max: int = 512
    num_fp16_res: int = 4
    conv_clamp: float | None = 256
    mbstd_group: int | None = None

    # Optimisation (official semantics; None = from cfg).
    kimg: float = 200.0
    batch: int | None = None
    batch_gpu: int | None = None
    gamma: float | None = None  # R1 weight
    r1_interval: int = 16
    pl_weight: float = 2.0  # path-length regularisation weight (0 disables)
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9
    lr: float | None = None  # both G and D
    lr_g: float | None = None
    lr_d: float | None = None
    ema_kimg: float | None = None
    ema_rampup: float | None = -1.0  # -1 = from cfg; None/0 = no ramp-up

    # Augmentation.
    aug: str = "ada"  # none | ada | diffaug | apa | ada+apa
    aug_p: float = 0.0
    ada_target: float = 0.6
    ada_kimg: float | None = None  # None = 500, or 100 when fine-tuning
    ada_interval: int = 4
    aug_pipeline: str = "bgc"
    diffaug_policy: str = "color,translation,cutout"

    # Transfer.
    transfer: str = "finetune"  # finetune | freezed | general-part | adafm
    freeze_d: int = 0
    general: tuple[int, int] | None = None  # None = the method's default for the resolution
    specific: str = "finetune"
    adafm_start_kimg: float = 0.0
    r1_fake: bool = False

    # Reg-DGM.
    reg_lambda: float = 0.0
    reg_model: str = "resnet18"
    reg_estimator: str = "mean"
    reg_normalize: bool = False
    reg_weights: str | None = None  # explicit extractor weights file (not hash-checked); None = the weights registry

    # DISP (data instance priors, fewshot.disp) and the adversarial loss.
    disp: bool = False  # condition G and a projection D on frozen features of the training images
    disp_extractor: str = "vgg16"  # vgg16 | resnet18..152 | clip (fewshot.disp.bank)
    disp_weights: str | None = None  # explicit extractor weights file; None = the weights registry
    loss: str = "logistic"  # logistic (StyleGAN2 non-saturating) | hinge (the DISP paper)

    # Run bookkeeping.
    outdir: str = "runs"
    name: str | None = None
    tick_kimg: float = 4.0
    snap: int = 50  # ticks between snapshots
    keep: int = 3  # snapshots kept besides final/best
    seed: int = 0
    sample_grid: tuple[int, int] = (8, 4)
    metrics: tuple[str, ...] = ()
    metrics_every: int = 0  # ticks; 0 = only at the end when metrics are set
    metrics_n: int = 5000
    best_metric: str = "fid"

    # Devices.
    device: str = "auto"  # auto | cpu | cuda
    gpus: int = 1
    tf32: bool = False
    deterministic: bool = False

    # Provenance (filled in by resolve_config).
    preset: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_toml(self) -> str:
        lines = [f"# fewshot resolved training config (preset: {self.preset or 'none'})"]
        for key, value in self.to_dict().items():
            if value is None:
                lines.append(f"# {key} = (derived)")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}
CHOICES: dict[str, tuple[str, ...]] = {
    "crop": ("center", "pad"),
    "cfg": ("auto", *ARCH_SPECS),
    "aug": ("none", "ada", "diffaug", "apa", "ada+apa"),
    "transfer": ("finetune", "freezed", "general-part", "adafm"),
    "specific": ("finetune", "reinit"),
    "reg_estimator": ("mean", "paired"),
    "device": ("auto", "cpu", "cuda"),
    "best_metric": ("fid", "kid"),
    "loss": ("logistic", "hinge"),
}


def coerce(key: str, value: Any) -> Any:
    """Convert a preset or command-line value to the field's type, or fail with a clear message."""
    if key not in FIELD_TYPES:
        raise FewshotError(f"unknown config key {key!r}", hint=f"known keys: {', '.join(sorted(FIELD_TYPES))}")
    kind = FIELD_TYPES[key]
    try:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and "None" in kind):
            if "None" not in kind:
                raise ValueError("may not be empty")
            return None
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected an integer")
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("tuple[int, int]"):
            text = str(value).upper()
            if not isinstance(value, (list, tuple)) and text.startswith("G") and "D" in text:  # G4D2
                value = text[1:].split("D")
            parts = value if isinstance(value, (list, tuple)) else str(value).replace("x", ",").split(",")
            if len(parts) != 2:
                raise ValueError("expected two integers like 2,1")
            return (int(parts[0]), int(parts[1]))
        if kind.startswith("tuple[str"):
            parts = value if isinstance(value, (list, tuple)) else [p for p in str(value).split(",") if p.strip()]
            return tuple(str(p).strip() for p in parts)
        value = str(value)
    except (TypeError, ValueError) as exc:
        raise FewshotError(f"bad value for {key}: {value!r} ({exc})") from None
    if key in CHOICES and value not in CHOICES[key]:
        raise FewshotError(f"bad value for {key}: {value!r}", hint=f"choose from {', '.join(CHOICES[key])}")
    return value


def preset_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    candidate = PRESETS_DIR / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    raise FewshotError(f"unknown preset {name_or_path!r}", hint=f"available: {', '.join(list_presets())}")


def list_presets() -> list[str]:
    """Names of the training presets shipped in presets/ (files with a description)."""
    names = []
    for path in sorted(PRESETS_DIR.glob("*.toml")):
        if path.stem in DATA_FILES:
            continue
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError:
            continue
        if "description" in data:
            names.append(path.stem)
    return names


def read_preset(name_or_path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset's values with its ``extends`` chain applied (parents first)."""
    path = preset_path(name_or_path)
    if path.stem in _seen:
        raise FewshotError(f"preset {path.stem!r} extends itself")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise FewshotError(f"preset {path} is not valid TOML: {exc}") from None
    parent = data.pop("extends", None)
    values: dict[str, Any] = read_preset(parent, (*_seen, path.stem)) if parent else {}
    values.pop("description", None)
    values.update(data)
    return values


def preset_description(name: str) -> str:
    data = tomllib.loads(preset_path(name).read_text())
    return str(data.get("description", ""))


SCRATCH = "none"  # --base none: train from scratch even where the preset names a default base


def resolve_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """defaults <- preset <- overrides, each value checked and converted.

    A preset's ``default_base`` (a reference, ``"none"``, or a table from image size to reference) decides
    the base when ``base`` is not given; ``base = "none"`` trains from scratch. ``base_note`` records which."""
    values: dict[str, Any] = {}
    description = ""
    if preset:
        values.update(read_preset(preset))
        description = preset_description(preset)
    preset_default = values.pop("default_base", None)
    if "base" in values:  # a preset that names one base outright: that is its default
        preset_default = values.pop("base")
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    given_base = values.pop("base", None)  # before coercion, which reads "none" as unset
    converted = {key: coerce(key, value) for key, value in values.items()}
    converted["preset"] = preset or ""
    converted["description"] = description
    cfg = TrainConfig(**converted)
    validate(cfg)
    return choose_base(cfg, given_base, preset_default)


def choose_base(cfg: TrainConfig, given: Any, preset_default: Any) -> TrainConfig:
    """Fill ``base``/``base_note``: the given base, ``--base none`` (scratch), or the preset's default."""
    if isinstance(given, str) and given.strip().lower() == SCRATCH:
        return replace(cfg, base=None, base_note="--base none")
    if given:
        return replace(cfg, base=str(given), base_note="--base")
    owner = f"default of {cfg.preset}" if cfg.preset else "default"
    if preset_default is None or (isinstance(preset_default, str) and preset_default.lower() == SCRATCH):
        return replace(cfg, base=None, base_note=f"the {cfg.preset} preset trains from scratch" if cfg.preset else "")
    if isinstance(preset_default, str):
        return replace(cfg, base=preset_default, base_note=owner)
    if not isinstance(preset_default, dict) or not preset_default:
        raise FewshotError(f"preset {cfg.preset}: default_base must be a reference, \"none\" or a table "
                           f"{{resolution = reference}}, got {preset_default!r}")
    if not cfg.data:
        return cfg  # nothing to size the choice by; the run itself refuses a missing DATA
    resolution, measured = _target_resolution(cfg)
    ref, size = pick_by_resolution(preset_default, resolution)
    why = f"{owner} for {measured}" + ("" if size == resolution else f"; the images are resized to {size} px")
    return replace(cfg, base=ref, base_note=why)


def pick_by_resolution(table: dict[str, Any], resolution: int) -> tuple[str, int]:
    """The entry of a {resolution: reference} table for images of ``resolution`` px: the smallest network at or
    above it (images are then upscaled only by what the smallest network needs), else the largest."""
    try:
        sizes = sorted((int(k), str(v)) for k, v in table.items())
    except (TypeError, ValueError):
        raise FewshotError(f"default_base table keys must be resolutions, got {sorted(table)}") from None
    for size, ref in sizes:
        if size >= resolution:
            return ref, size
    return sizes[-1][1], sizes[-1][0]


def _target_resolution(cfg: TrainConfig) -> tuple[int, str]:
    if cfg.resolution is not None:
        return cfg.resolution, f"--resolution {cfg.resolution}"
    if cfg.data == "demo":
        return 32, "the 32 px demo images"
    from .data import infer_resolution  # reads image headers only

    resolution, _ = infer_resolution(cfg.data, crop=cfg.crop)
    return resolution, f"{resolution} px images"


# What a resumed run may be told: how long to train and where to run. DATA names the run's own images (or their
# new place) and outdir/name find the run; those are handled where the run is opened.
RESUME_MAY_CHANGE = frozenset({"kimg", "device", "data", "outdir", "name"})
PROVENANCE_KEYS = frozenset({"preset", "description", "base_note"})


def resumed_config(stored: dict[str, Any], requested: dict[str, Any] | None = None) -> TrainConfig:
    """A snapshot's config with what the resuming command asked for.

    The same command again (``--resume latest`` added) is accepted: a flag equal to the run's value changes
    nothing. ``kimg`` and ``device`` may change; any other value that differs is refused, naming the key, the
    run's value and the new one (a new recipe is a new run: ``--base <snapshot>``)."""
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in stored.items()}
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in values.items() if k in known}
    differ: list[str] = []
    for key, value in (requested or {}).items():
        if value is None or key in ("data", "outdir", "name"):
            continue
        if key == "preset":
            if value != values.get("preset", ""):
                differ.append(f"preset {values.get('preset') or '(none)'!s} -> {value}")
            continue
        if key == "base" and isinstance(value, str) and value.strip().lower() == SCRATCH:
            new: Any = None
        else:
            new = coerce(key, value)
        if key in RESUME_MAY_CHANGE:
            values[key] = new
            continue
        old = values.get(key)
        if not _same_value(old, new):
            differ.append(f"{key} {_shown(old)} -> {_shown(new)}")
    if differ:
        raise FewshotError("a resumed run keeps the recipe it started with; the command changes " + ", ".join(differ),
                           hint="drop those flags to resume (--kimg and --device may change), or start a new run "
                                "from this one: --base <run folder or snapshot>")
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _shown(value: Any) -> str:
    if value is None:
        return "(derived)"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def validate(cfg: TrainConfig) -> None:
    if cfg.kimg <= 0:
        raise FewshotError("kimg must be positive")
    if cfg.batch is not None and cfg.batch < 1:
        raise FewshotError("batch must be at least 1")
    if cfg.batch is not None and cfg.batch_gpu is not None and cfg.batch % (cfg.batch_gpu * max(cfg.gpus, 1)):
        raise FewshotError(f"batch {cfg.batch} is not a multiple of batch_gpu {cfg.batch_gpu} x gpus {cfg.gpus}")
    if cfg.resolution is not None and (cfg.resolution < 8 or cfg.resolution & (cfg.resolution - 1)):
        raise FewshotError(f"resolution must be a power of two >= 8, got {cfg.resolution}")
    if cfg.tick_kimg <= 0:
        raise FewshotError("tick_kimg must be positive")
    if not 0 <= cfg.aug_p <= 1:
        raise FewshotError("aug_p must lie in [0, 1]")
    if cfg.reg_lambda < 0:
        raise FewshotError("reg_lambda must be >= 0")
    if cfg.gpus < 1:
        raise FewshotError("gpus must be at least 1")
    for key, test, wanted in _RANGES:
        value = getattr(cfg, key)
        if value is not None and not test(value):
            raise FewshotError(f"{key} must be {wanted}, got {value}")
    if cfg.sample_grid and min(cfg.sample_grid) < 1:
        raise FewshotError(f"sample_grid must be COLUMNS,ROWS of at least 1, got {cfg.sample_grid}")


# Numeric knobs that would fail late (a division by zero at the first lazy step, a negative R1 weight
# silently rewarding sharp D gradients) or mean nothing: refused when the config is resolved.
_RANGES: tuple[tuple[str, Any, str], ...] = (
    ("gamma", lambda v: v >= 0, ">= 0"),
    ("lr", lambda v: v > 0, "> 0"),
    ("lr_g", lambda v: v > 0, "> 0"),
    ("lr_d", lambda v: v > 0, "> 0"),
    ("ema_kimg", lambda v: v >= 0, ">= 0"),
    ("r1_interval", lambda v: v >= 1, "at least 1"),
    ("pl_interval", lambda v: v >= 1, "at least 1"),
    ("pl_batch_shrink", lambda v: v >= 1, "at least 1"),
    ("pl_weight", lambda v: v >= 0, ">= 0"),
    ("pl_decay", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("style_mixing", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("ada_target", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("ada_kimg", lambda v: v > 0, "> 0"),
    ("ada_interval", lambda v: v >= 1, "at least 1"),
    ("freeze_d", lambda v: v >= 0, ">= 0"),
    ("adafm_start_kimg", lambda v: v >= 0, ">= 0"),
    ("batch_gpu", lambda v: v >= 1, "at least 1"),
    ("max_images", lambda v: v >= 1, "at least 1"),
    ("z_dim", lambda v: v >= 1, "at least 1"),
    ("w_dim", lambda v: v >= 1, "at least 1"),
    ("map_layers", lambda v: v >= 1, "at least 1"),
    ("channel_base", lambda v: v >= 1, "at least 1"),
    ("channel_max", lambda v: v >= 1, "at least 1"),
    ("num_fp16_res", lambda v: v >= 0, ">= 0"),
    ("conv_clamp", lambda v: v > 0, "> 0 (or unset)"),
    ("mbstd_group", lambda v: v >= 1, "at least 1"),
    ("snap", lambda v: v >= 0, ">= 0 (0: only at the end)"),
    ("keep", lambda v: v >= 1, "at least 1"),
    ("metrics_every", lambda v: v >= 0, ">= 0 (0: only at the end)"),
    ("metrics_n", lambda v: v >= 2, "at least 2"),
)


@dataclass(frozen=True)
class Hyper:
    """Hyper-parameters after the cfg family and the resolution are known."""

    batch: int
    batch_gpu: int
    gamma: float
    lr_g: float
    lr_d: float
    ema_kimg: float
    ema_rampup: float | None
    map_layers: int
    channel_base: int
    mbstd_group: int
    ada_kimg: float
    extras: dict[str, Any] = field(default_factory=dict)


def derive_hyper(cfg: TrainConfig, resolution: int, fine_tuning: bool, world_size: int = 1) -> Hyper:
    """Fill every ``None`` of ``cfg`` from its cfg family, as the official train.py does."""
    if cfg.cfg == "auto":
        batch = cfg.batch or max(min(4096 // resolution, 32), 1) * world_size
        spec = dict(
            gamma=0.0002 * resolution**2 / batch, lr=0.0025, ema_kimg=batch * 10 / 32, map_layers=2,
            ema_rampup=0.05, channel_base=16384 if resolution < 512 else 32768,
        )
    else:
        spec = dict(ARCH_SPECS[cfg.cfg])
        batch = cfg.batch or spec.pop("batch")
    batch_gpu = cfg.batch_gpu or max(batch // world_size, 1)
    if batch % (batch_gpu * world_size):
        raise FewshotError(f"batch {batch} is not a multiple of batch_gpu {batch_gpu} x {world_size} processes")
    lr = cfg.lr if cfg.lr is not None else spec["lr"]
    # The official train.py turns the G_ema ramp-up off when it starts from a network (--resume): the ramp-up
    # exists to forget a random initialisation quickly, and a pretrained base has none to forget.
    if cfg.ema_rampup == -1.0:
        rampup = None if fine_tuning else spec["ema_rampup"]
    else:
        rampup = cfg.ema_rampup or None
    return Hyper(
        batch=batch,
        batch_gpu=batch_gpu,
        gamma=cfg.gamma if cfg.gamma is not None else spec["gamma"],
        lr_g=cfg.lr_g if cfg.lr_g is not None else lr,
        lr_d=cfg.lr_d if cfg.lr_d is not None else lr,
        ema_kimg=cfg.ema_kimg if cfg.ema_kimg is not None else spec["ema_kimg"],
        ema_rampup=rampup,
        map_layers=cfg.map_layers or spec["map_layers"],
        channel_base=cfg.channel_base or spec["channel_base"],
        mbstd_group=cfg.mbstd_group or min(batch_gpu, 4),
        ada_kimg=cfg.ada_kimg if cfg.ada_kimg is not None else (100.0 if fine_tuning else 500.0),
    )
