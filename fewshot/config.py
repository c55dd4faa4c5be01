"""Training configuration: defaults <- preset file(s) <- command-line overrides, resolved once.

A preset is a TOML file in ``presets/`` (or any path) with a ``description``, any of the top-level
:class:`TrainConfig` keys and the methods' sections (``[augment]``, ``[transfer]``,
``[regularizers.<name>]``, ``[metrics]``, ``[disp]``: :mod:`fewshot.sections`); ``extends = "other"``
inherits another preset first. The result is one frozen :class:`TrainConfig`, written to the run folder
as ``config.toml`` and into every checkpoint, so a run can be read and resumed without outside knowledge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .errors import FewshotError
from .registry import architectures, build_options, losses, option, options_dict
from .sections import (
    FLAT_KEYS,
    SECTION_NAMES,
    SECTIONS,
    AugmentSection,
    DispSection,
    MetricsSection,
    TransferSection,
    build_regularizers,
    build_section,
    flat_to_tree,
    is_flat,
    key_path,
    merge_trees,
    section_dict,
    set_path,
)


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

# Hyper-parameter families of the official configs (batch, R1 gamma, lr, ema_kimg, mapping layers, ramp-up,
# minibatch-stddev group), train.py's cfg_specs.
# "auto" derives its values from the resolution as the official `auto` config does.
ARCH_SPECS: dict[str, dict[str, Any]] = {
    "paper256": dict(batch=64, gamma=1.0, lr=0.0025,
                     ema_kimg=20.0, map_layers=8, ema_rampup=None, channel_base=16384, mbstd_group=8),
    "paper512": dict(batch=64, gamma=0.5, lr=0.0025,
                     ema_kimg=20.0, map_layers=8, ema_rampup=None, channel_base=32768, mbstd_group=8),
    "paper1024": dict(batch=32, gamma=2.0, lr=0.002,
                     ema_kimg=10.0, map_layers=8, ema_rampup=None, channel_base=32768, mbstd_group=4),
    "stylegan2": dict(batch=32, gamma=10.0, lr=0.002,
                     ema_kimg=10.0, map_layers=8, ema_rampup=None, channel_base=32768, mbstd_group=4),
}


def _at_least(n: int) -> dict[str, Any]:
    return dict(check=lambda v: v >= n, wanted=f"at least {n}")


_POSITIVE = dict(check=lambda v: v > 0, wanted="> 0")
_NON_NEGATIVE = dict(check=lambda v: v >= 0, wanted=">= 0")
_UNIT = dict(check=lambda v: 0 <= v <= 1, wanted="in [0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run. ``None`` means 'derive it' (from the spec, the base or the data).

    The methods' knobs live in their sections (:mod:`fewshot.sections`): ``augment``, ``transfer``,
    ``regularizers``, ``metrics``, ``disp``. Reading a flat key of earlier versions (``cfg.aug_p``,
    ``cfg.freeze_d``, ...) still works and reads the section."""

    # What to train on and from.
    data: str = ""  # folder, zip, or "demo" (built-in procedural images)
    base: str | None = None  # checkpoint reference to fine-tune from; None = from scratch
    base_note: str = ""  # where the base came from: "--base", "default of reg-ada for 256 px images", ...
    allow_partial: bool = False  # accept a base whose tensors do not all fit
    resolution: int | None = option(None, check=lambda v: v >= 8 and not v & (v - 1), wanted="a power of two >= 8")
    crop: str = option("center", choices=("center", "pad"))
    mirror: bool = True  # random x-flips of the training images
    max_images: int | None = option(None, **_at_least(1))
    labels: str = option("auto", "Class labels: auto (the data's dataset.json, if any), folders (one sub-folder "
                         "per class), none (ignore them).", choices=("auto", "folders", "none"))
    class_index: int | None = option(None, "Train every image as this class of a class-conditional base.",
                                     **_at_least(0))

    # Network shape for training from scratch (a base checkpoint overrides all of these).
    arch: str | None = option(None, "Network family from scratch (a base's generator decides it): "
                              "stylegan2 (the default), stylegan3-t, stylegan3-r.", choices=lambda: architectures.names())
    cfg: str = option("auto", choices=lambda: ("auto", *ARCH_SPECS))
    z_dim: int = option(512, **_at_least(1))
    w_dim: int = option(512, **_at_least(1))
    map_layers: int | None = option(None, **_at_least(1))
    channel_base: int | None = option(None, **_at_least(1))
    channel_max: int = option(512, **_at_least(1))
    num_fp16_res: int = option(4, **_NON_NEGATIVE)
    conv_clamp: float | None = option(256, check=lambda v: v > 0, wanted="> 0 (or unset)")
    mbstd_group: int | None = option(None, **_at_least(1))
    synthesis_layers: int | None = option(None, "StyleGAN3: synthesis layers before ToRGB (official 14).",
                                          **_at_least(3))

    # Optimisation (official semantics; None = from cfg).
    kimg: float = option(200.0, "Train until this many thousand images.", **_POSITIVE)
    batch: int | None = option(None, **_at_least(1))
    batch_gpu: int | None = option(None, **_at_least(1))
    gamma: float | None = option(None, "R1 weight.", **_NON_NEGATIVE)
    r1_interval: int = option(16, **_at_least(1))
    pl_weight: float | None = option(None, "Path-length regularisation weight (0 disables; unset: the family's, "
                                     "2 for StyleGAN2, 0 for StyleGAN3).", **_NON_NEGATIVE)
    pl_interval: int = option(4, **_at_least(1))
    pl_batch_shrink: int = option(2, **_at_least(1))
    pl_decay: float = option(0.01, **_UNIT)
    style_mixing: float | None = option(None, "Style-mixing probability (unset: 0.9 for StyleGAN2, 0 for StyleGAN3).",
                                        **_UNIT)
    blur_init_sigma: float | None = option(None, "Blur of D's inputs (sigma, px) at the start, fading out linearly "
                                           "(unset: 10 for StyleGAN3-R from scratch, else 0 = off).", **_NON_NEGATIVE)
    blur_fade_kimg: float | None = option(None, "kimg over which the blur of D's inputs fades out (unset: "
                                          "batch * 200 / 32 where the blur is on).", **_NON_NEGATIVE)
    lr: float | None = option(None, "Learning rate of G and D.", **_POSITIVE)
    lr_g: float | None = option(None, **_POSITIVE)
    lr_d: float | None = option(None, **_POSITIVE)
    ema_kimg: float | None = option(None, **_NON_NEGATIVE)
    ema_rampup: float | None = -1.0  # -1 = from cfg; None/0 = no ramp-up
    loss: str = option("logistic", "Adversarial loss.", choices=lambda: losses.names())

    # The methods, each in its section.
    augment: AugmentSection = field(default_factory=AugmentSection)
    transfer: TransferSection = field(default_factory=TransferSection)
    regularizers: dict[str, Any] = field(default_factory=dict)  # name -> the regularizer's options
    metrics: MetricsSection = field(default_factory=MetricsSection)
    disp: DispSection = field(default_factory=DispSection)

    # Run bookkeeping.
    outdir: str = "runs"
    name: str | None = None
    tick_kimg: float = option(4.0, **_POSITIVE)
    snap: int = option(50, "Ticks between snapshots.", check=lambda v: v >= 0, wanted=">= 0 (0: only at the end)")
    keep: int = option(3, "Snapshots kept besides final/best.", **_at_least(1))
    seed: int = 0
    sample_grid: tuple[int, int] = option((8, 4), check=lambda v: min(v) >= 1, wanted="COLUMNS,ROWS of at least 1")

    # Devices.
    device: str = option("auto", choices=("auto", "cpu", "cuda"))
    gpus: int = option(1, **_at_least(1))
    tf32: bool = False
    cpu_bf16: bool = option(False, "CPU runs: the direct convolutions of G's and D's num_fp16_res blocks (which CUDA "
                            "runs in float16) on bfloat16 operands; needs AVX512-BF16 or AMX. Faster, at "
                            "bfloat16's coarser rounding.")
    deterministic: bool = False

    # Provenance (filled in by resolve_config).
    preset: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        # A config built directly (TrainConfig(data=...)) gets each method's default options.
        for name in ("augment", "transfer"):
            section = getattr(self, name)
            if section.options is None:
                object.__setattr__(self, name, build_section(name, section_dict(section)))

    def __getattr__(self, name: str) -> Any:
        """Flat keys of earlier versions (``aug_p``, ``freeze_d``, ``reg_lambda``, ...) read their section."""
        if name.startswith("__") or name not in FLAT_KEYS:
            raise AttributeError(name)
        return lookup(self, name)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON values: top-level keys, then one table per section."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "regularizers":
                out[f.name] = {name: options_dict(opts) for name, opts in value.items()}
            elif f.name in SECTIONS:
                out[f.name] = section_dict(value)
            else:
                out[f.name] = value
        return json.loads(json.dumps(out))

    def to_toml(self) -> str:
        data = self.to_dict()
        lines = [f"# fewshot resolved training config (preset: {self.preset or 'none'})"]
        tables: list[tuple[str, dict[str, Any]]] = []
        for key, value in data.items():
            if key == "regularizers":
                tables += [(f"regularizers.{name}", opts) for name, opts in value.items()]
            elif key in SECTIONS:
                tables.append((key, value))
            else:
                lines.append(_toml_line(key, value))
        for title, table in tables:
            lines += ["", f"[{title}]"]
            lines += [_toml_line(k, v) for k, v in table.items() if not isinstance(v, dict) or k == "ops"]
            lines += [line for k, v in table.items() if isinstance(v, dict) and k != "ops"
                      for line in ("", f"[{title}.{k}]", *(_toml_line(kk, vv) for kk, vv in v.items()))]
        return "\n".join(lines) + "\n"


def lookup(cfg: TrainConfig, key: str) -> Any:
    """A value by flat or dotted key (``aug_p``, ``augment.p``, ``regularizers.reg-dgm.weight``, ``kimg``)."""
    path = key_path(key)
    if len(path) == 1:
        return getattr(cfg, path[0])
    if path[0] == "regularizers":
        opts = cfg.regularizers.get(path[1])
        return None if opts is None or len(path) < 3 else getattr(opts, path[2], None)
    section = getattr(cfg, path[0])
    if path[1] in {f.name for f in fields(section)} and path[1] != "options":
        return getattr(section, path[1])
    return getattr(section.options, path[1], None) if section.options is not None else None


def _toml_line(key: str, value: Any) -> str:
    return f"# {key} = (derived)" if value is None else f"{_toml_key(key)} = {_toml_value(value)}"


def _toml_key(key: str) -> str:
    return key if all(c.isalnum() or c in "_-" for c in key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} to TOML")


TOP_LEVEL = frozenset(f.name for f in fields(TrainConfig)) - set(SECTION_NAMES)


def config_from_tree(tree: dict[str, Any], preset: str = "", description: str = "") -> TrainConfig:
    """A TrainConfig from a tree (top-level keys and section tables), every value converted and checked."""
    unknown = sorted(k for k in tree if k not in TOP_LEVEL and k not in SECTION_NAMES)
    if unknown:
        raise FewshotError(f"unknown config key {', '.join(unknown)}",
                           hint=f"known keys: {', '.join(sorted(TOP_LEVEL))}; sections: {', '.join(SECTION_NAMES)}; "
                                f"flat keys: {', '.join(sorted(FLAT_KEYS))}")
    values = {k: v for k, v in tree.items() if k in TOP_LEVEL}
    values.update({name: build_section(name, tree.get(name)) for name in SECTIONS})
    values["regularizers"] = build_regularizers(tree.get("regularizers"))
    values["preset"], values["description"] = preset or "", description
    return build_options(TrainConfig, values, "")


def config_from_dict(stored: dict[str, Any]) -> TrainConfig:
    """The config a snapshot or config.toml holds, from this version or an earlier (flat) one."""
    values = {k: v for k, v in stored.items() if k not in ("preset", "description")}
    tree = flat_to_tree(values) if is_flat(values) else values
    return config_from_tree(tree, stored.get("preset", ""), stored.get("description", ""))


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
    """A preset's tree with its ``extends`` chain applied (parents first; flat keys put in their sections)."""
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
    data.pop("description", None)
    return merge_trees(values, data)


def preset_description(name: str) -> str:
    data = tomllib.loads(preset_path(name).read_text())
    return str(data.get("description", ""))


SCRATCH = "none"  # --base none: train from scratch even where the preset names a default base


def resolve_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """defaults <- preset <- overrides, each value checked and converted.

    Overrides use flat keys (the command line's: ``aug_p``, ``freeze_d``, ...) or dotted ones
    (``augment.p``, ``transfer.freeze_d``, ``regularizers.reg-dgm.weight``). A preset's ``default_base`` (a
    reference, ``"none"``, or a table from image size to reference) decides the base when ``base`` is not
    given; ``base = "none"`` trains from scratch. ``base_note`` records which."""
    tree: dict[str, Any] = read_preset(preset) if preset else {}
    description = preset_description(preset) if preset else ""
    preset_default = tree.pop("default_base", None)
    if "base" in tree:  # a preset that names one base outright: that is its default
        preset_default = tree.pop("base")
    given_base = None
    items = [(k, v) for k, v in (overrides or {}).items() if v is not None]
    for key, value in sorted(items, key=lambda kv: not key_path(kv[0])[-1] == "method"):  # methods first
        if key == "base":
            given_base = value  # before coercion, which would read "none" as unset
        else:
            set_path(tree, key_path(key), value)
    cfg = config_from_tree(tree, preset or "", description)
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
    from .data import demo_domain, infer_resolution  # reads image headers only

    if demo_domain(cfg.data) is not None:
        return 32, "the 32 px demo images"
    resolution, _ = infer_resolution(cfg.data, crop=cfg.crop)
    return resolution, f"{resolution} px images"


# What a resumed run may be told: how long to train and where to run. DATA names the run's own images (or their
# new place) and outdir/name find the run; those are handled where the run is opened.
RESUME_MAY_CHANGE = frozenset({"kimg", "device", "cpu_bf16", "data", "outdir", "name"})
PROVENANCE_KEYS = frozenset({"preset", "description", "base_note"})


def resumed_config(stored: dict[str, Any], requested: dict[str, Any] | None = None) -> TrainConfig:
    """A snapshot's config with what the resuming command asked for.

    The same command again (``--resume latest`` added) is accepted: a flag equal to the run's value changes
    nothing. ``kimg``, ``device`` and ``cpu_bf16`` may change (where a run trains, and how fast); any other value that differs is refused, naming the key, the
    run's value and the new one (a new recipe is a new run: ``--base <snapshot>``)."""
    cfg = config_from_dict(stored)
    differ: list[str] = []
    changes: dict[str, Any] = {}
    for key, value in (requested or {}).items():
        if value is None or key in ("data", "outdir", "name"):
            continue
        if key == "preset":
            if value != cfg.preset:
                differ.append(f"preset {cfg.preset or '(none)'} -> {value}")
            continue
        if key == "base" and isinstance(value, str) and value.strip().lower() == SCRATCH:
            new: Any = None
        else:
            new = lookup(config_from_tree(_tree_with(cfg, key, value)), key)
        if key in RESUME_MAY_CHANGE:
            changes[key] = new
            continue
        old = lookup(cfg, key)
        if not _same_value(old, new):
            differ.append(f"{key} {_shown(old)} -> {_shown(new)}")
    if differ:
        raise FewshotError("a resumed run keeps the recipe it started with; the command changes " + ", ".join(differ),
                           hint="drop those flags to resume (--kimg and --device may change), or start a new run "
                                "from this one: --base <run folder or snapshot>")
    cfg = replace(cfg, **changes)
    validate(cfg)
    return cfg


def _tree_with(cfg: TrainConfig, key: str, value: Any) -> dict[str, Any]:
    """The config's tree with one key set: the value the command asks for, converted as a new run would."""
    tree = cfg.to_dict()
    for drop in ("preset", "description"):
        tree.pop(drop, None)
    set_path(tree, key_path(key), value)
    return tree


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
    """What no single option's check can see: combinations of values."""
    if cfg.batch is not None and cfg.batch_gpu is not None and cfg.batch % (cfg.batch_gpu * max(cfg.gpus, 1)):
        raise FewshotError(f"batch {cfg.batch} is not a multiple of batch_gpu {cfg.batch_gpu} x gpus {cfg.gpus}")


@dataclass(frozen=True)
class Hyper:
    """Hyper-parameters after the network family, the cfg and the resolution are known."""

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
    pl_weight: float = 2.0
    style_mixing: float = 0.9
    blur_init_sigma: float = 0.0  # D's inputs blurred at the start (0: never)
    blur_fade_kimg: float = 0.0
    g_reg_interval: int | None = 4  # None: no lazy G phase, G's optimiser not rescaled


def derive_hyper(cfg: TrainConfig, resolution: int, fine_tuning: bool, world_size: int = 1) -> Hyper:
    """Fill every ``None`` of ``cfg`` from its network family (and, for StyleGAN2, its cfg), as the official
    train.py does (:mod:`fewshot.archs`)."""
    from .archs import architecture

    arch = architecture(cfg.arch)
    batch, spec = arch.hyper_spec(cfg, resolution, world_size)
    batch_gpu = cfg.batch_gpu or max(batch // world_size, 1)
    if batch % (batch_gpu * world_size):
        raise FewshotError(f"batch {batch} is not a multiple of batch_gpu {batch_gpu} x {world_size} processes")
    # The official train.py turns the G_ema ramp-up off when it starts from a network (--resume): the ramp-up
    # exists to forget a random initialisation quickly, and a pretrained base has none to forget.
    if cfg.ema_rampup == -1.0:
        rampup = None if fine_tuning else spec["ema_rampup"]
    else:
        rampup = cfg.ema_rampup or None
    family = arch.training_defaults(cfg, batch, fine_tuning)
    blur_sigma = _first_set(cfg.blur_init_sigma, family.blur_init_sigma)
    # A blur the config turns on fades as StyleGAN3-R's does unless the config says over how long.
    blur_fade = _first_set(cfg.blur_fade_kimg, family.blur_fade_kimg or (batch * 200 / 32 if blur_sigma else 0.0))
    return Hyper(
        batch=batch,
        batch_gpu=batch_gpu,
        gamma=cfg.gamma if cfg.gamma is not None else spec["gamma"],
        lr_g=_first_set(cfg.lr_g, cfg.lr, spec["lr_g"]),
        lr_d=_first_set(cfg.lr_d, cfg.lr, spec["lr_d"]),
        ema_kimg=cfg.ema_kimg if cfg.ema_kimg is not None else spec["ema_kimg"],
        ema_rampup=rampup,
        map_layers=cfg.map_layers or spec["map_layers"],
        channel_base=cfg.channel_base or spec["channel_base"],
        mbstd_group=cfg.mbstd_group or spec["mbstd_group"],  # D takes min(group, its batch) as official
        ada_kimg=cfg.augment.ada_kimg if cfg.augment.ada_kimg is not None else (100.0 if fine_tuning else 500.0),
        pl_weight=_first_set(cfg.pl_weight, family.pl_weight),
        style_mixing=_first_set(cfg.style_mixing, family.style_mixing),
        blur_init_sigma=blur_sigma,
        blur_fade_kimg=blur_fade,
        g_reg_interval=family.g_reg_interval,
    )


def _first_set(*values: Any) -> Any:
    return next(v for v in values if v is not None)
