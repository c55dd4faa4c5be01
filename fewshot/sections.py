"""The method-owned sections of a training config, and the flat keys of earlier versions.

A resolved config is a tree: top-level knobs (data, base, kimg, batch, gamma, ...) and one section per family
of methods, each naming its method and holding that method's options (a dataclass the method's file defines):

.. code-block:: toml

    [augment]                 # fewshot.augment: the method, the adaptive-p knobs, then the method's options
    method = "ada"
    p = 0.0
    target = 0.6
    pipeline = "bgc"

    [transfer]                # fewshot.transfer
    method = "freezed"
    freeze_d = 2

    [regularizers.reg-dgm]    # fewshot.regularizers: every regularizer with a section is built
    weight = 5e-06
    model = "resnet18"

    [metrics]                 # fewshot.metrics
    names = ["fid", "kid"]
    every = 10

    [disp]                    # fewshot.disp
    enabled = true

The command-line flags (``--aug-p``, ``--freeze-d``, ``--reg-lambda``, ...) and the configs of runs written
before the sections existed use flat keys; :data:`FLAT_KEYS` maps each one to its place. ``--set`` takes
either (``--set ada_target=0.7`` or ``--set augment.target=0.7``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import FewshotError
from .registry import augmentations, build_options, metrics, option, options_dict, regularizers, transfers

# ---------------------------------------------------------------------------------------------
# The sections


@dataclass(frozen=True)
class AugmentSection:
    method: str = option("ada", "Augmentation method (`fewshot presets --methods` lists them).",
                         choices=lambda: augmentations.names())
    p: float = option(0.0, "Initial augmentation probability.", check=lambda v: 0 <= v <= 1, wanted="in [0, 1]")
    target: float = option(0.6, "ADA target of the mean sign of D(real).", check=lambda v: 0 <= v <= 1,
                           wanted="in [0, 1]")
    ada_kimg: float | None = option(None, "kimg for p to go from 0 to 1 (default 500, or 100 when fine-tuning).",
                                    check=lambda v: v > 0, wanted="> 0")
    interval: int = option(4, "Batches between p updates.", check=lambda v: v >= 1, wanted="at least 1")
    options: Any = None  # the method's own options


@dataclass(frozen=True)
class TransferSection:
    method: str = option("finetune", "Transfer method.", choices=lambda: transfers.names())
    r1_fake: bool = option(False, "Gradient penalty on generated images as well as reals (the AdaFM paper's "
                                  "setting for ~25 images).")
    options: Any = None


def _no_metrics_when_none(value: Any) -> Any:
    """``none`` (or an empty value) turns off the metrics a preset or an earlier setting chose."""
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if items is not None and all(str(item).strip().lower() in ("none", "") for item in items):
        return ()
    return value


@dataclass(frozen=True)
class MetricsSection:
    names: tuple[str, ...] = option((), "Metrics tracked during training, e.g. fid,kid (none: no metric).",
                                    choices=lambda: metrics.names(), parse=_no_metrics_when_none)
    every: int = option(0, "Ticks between metric evaluations (0: only at the end).", check=lambda v: v >= 0,
                        wanted=">= 0 (0: only at the end)")
    n: int = option(5000, "Generated images per evaluation.", check=lambda v: v >= 2, wanted="at least 2")
    best: str = option("fid", "The metric best.safetensors is kept by (one whose lower values are better; "
                              "default: fid, or the first such metric tracked when fid is not).",
                       choices=lambda: tuple(e.name for e in metrics.entries() if e.extra.get("lower_is_better")))
    options: dict[str, Any] = field(default_factory=dict)  # per metric name, its options


@dataclass(frozen=True)
class DispSection:
    enabled: bool = option(False, "Condition G and a projection D on frozen features of the training images.")
    extractor: str = option("vgg16", "The prior extractor: a feature network that offers DISP features.",
                            choices=lambda: _offering("disp"))
    weights: str | None = option(None, "An explicit weights file for the extractor (default: the weights registry).")

    def __bool__(self) -> bool:
        return self.enabled


def _offering(use: str) -> tuple[str, ...]:
    """The registered feature extractors that offer ``use`` features (read from their entries' facts)."""
    from .registry import extractors

    return tuple(e.name for e in extractors.entries() if use in (e.extra.get("offers") or ()))


SECTIONS: dict[str, type] = {"augment": AugmentSection, "transfer": TransferSection, "metrics": MetricsSection,
                             "disp": DispSection}
METHOD_SECTIONS = {"augment": augmentations, "transfer": transfers}  # sections whose options follow a method
SECTION_NAMES = (*SECTIONS, "regularizers")


def common_keys(section: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(SECTIONS[section]) if f.name != "options")


# ---------------------------------------------------------------------------------------------
# Flat keys: the command line's, and those of configs written before the sections

REG_DGM = "reg-dgm"
FLAT_KEYS: dict[str, str] = {
    "aug": "augment.method", "aug_p": "augment.p", "ada_target": "augment.target", "ada_kimg": "augment.ada_kimg",
    "ada_interval": "augment.interval", "aug_pipeline": "augment.pipeline", "diffaug_policy": "augment.policy",
    "transfer": "transfer.method", "r1_fake": "transfer.r1_fake", "freeze_d": "transfer.freeze_d",
    "general": "transfer.general", "specific": "transfer.specific", "adafm_start_kimg": "transfer.adafm_start_kimg",
    "reg_lambda": f"regularizers.{REG_DGM}.weight", "reg_model": f"regularizers.{REG_DGM}.model",
    "reg_estimator": f"regularizers.{REG_DGM}.estimator", "reg_normalize": f"regularizers.{REG_DGM}.normalize",
    "reg_weights": f"regularizers.{REG_DGM}.weights",
    "disp": "disp.enabled", "disp_extractor": "disp.extractor", "disp_weights": "disp.weights",
    "metrics": "metrics.names", "metrics_every": "metrics.every", "metrics_n": "metrics.n",
    "best_metric": "metrics.best",
}
FLAT_NAMES: dict[str, str] = {path: flat for flat, path in FLAT_KEYS.items()}  # augment.p -> aug_p


def flat_labels(section: str) -> dict[str, str]:
    """How errors name a section's keys: by the flat key the command line uses, where there is one."""
    prefix = section + "."
    return {path[len(prefix):]: flat for path, flat in FLAT_NAMES.items() if path.startswith(prefix)}


def key_path(key: str) -> tuple[str, ...]:
    """``aug_p`` -> (augment, p); ``augment.p`` -> (augment, p); ``regularizers.reg-dgm.weight``; ``kimg``."""
    key = key.strip()
    if key in FLAT_KEYS:
        return tuple(FLAT_KEYS[key].split(".", 2) if FLAT_KEYS[key].startswith("regularizers.")
                     else FLAT_KEYS[key].split("."))
    if "." in key:
        head, rest = key.split(".", 1)
        if head == "regularizers":
            parts = rest.split(".", 1)
            return (head, *parts)
        return (head, rest)
    return (key,)


def set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Put ``value`` at ``path``. Changing a section's ``method`` drops the options of the method it had."""
    if path[0] in METHOD_SECTIONS and len(path) == 2 and path[1] == "method":
        section = tree.setdefault(path[0], {})
        if section.get("method", value) != value:
            keep = common_keys(path[0])
            for key in [k for k in section if k not in keep]:
                del section[key]
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise FewshotError(f"config key {'.'.join(path)}: {part} is a value, not a section")
        node = child
    node[path[-1]] = value


def get_path(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def merge_trees(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``parent`` (a preset over the one it extends), section by section."""
    out = copy.deepcopy(parent)
    for key, value in child.items():
        if isinstance(value, dict) and key in SECTION_NAMES:
            if key in METHOD_SECTIONS and "method" in value:
                set_path(out, (key, "method"), value["method"])
            for sub, sub_value in value.items():
                if key == "regularizers" and isinstance(sub_value, dict):
                    out.setdefault("regularizers", {}).setdefault(sub, {}).update(sub_value)
                else:
                    out.setdefault(key, {})[sub] = sub_value
        elif key in FLAT_KEYS:
            set_path(out, key_path(key), value)
        else:
            out[key] = value
    return out


def flat_to_tree(values: dict[str, Any]) -> dict[str, Any]:
    """A config of an earlier version (every key flat) as a tree. Options of methods the run did not use are
    dropped where they hold their old defaults; a Reg-DGM at weight 0 is no regularizer."""
    tree: dict[str, Any] = {}
    method_first = sorted(values, key=lambda k: FLAT_KEYS.get(k, "").endswith(".method"), reverse=True)
    for key in method_first:
        set_path(tree, key_path(key), values[key])
    for section, registry in METHOD_SECTIONS.items():
        node = tree.get(section, {})
        method = node.get("method")
        if method is None:
            continue
        own = {f.name for f in fields(registry.get(method).options)}
        for key in [k for k in node if k not in common_keys(section) and k not in own]:
            if _inert_elsewhere(registry, key, node[key]):
                del node[key]
    reg = get_path(tree, ("regularizers", REG_DGM))
    if reg is not None and not reg.get("weight"):
        del tree["regularizers"][REG_DGM]
        if not tree["regularizers"]:
            del tree["regularizers"]
    return tree


def _inert_elsewhere(registry: Any, key: str, value: Any) -> bool:
    """Earlier versions wrote every method's options into every config, at values where they do nothing (the
    options of methods a run did not use). Such a value is dropped when the run's method has no such option; any
    other value still is an error."""
    from .registry import inert_values

    for entry in registry.entries():
        for f in fields(entry.options):
            if f.name == key:
                inert = inert_values(f)
                normal = list(value) if isinstance(value, tuple) else value
                return any(normal == (list(v) if isinstance(v, tuple) else v) for v in inert)
    return False


def is_flat(values: dict[str, Any]) -> bool:
    """Whether a stored config predates the sections (its ``aug``/``transfer`` are plain values)."""
    return "aug" in values or isinstance(values.get("transfer"), str)


# ---------------------------------------------------------------------------------------------
# Tree -> sections


def build_section(name: str, values: dict[str, Any] | None) -> Any:
    """A section from its table: the common keys, then the method's options from the rest."""
    values = dict(values or {})
    if name == "metrics":
        per_metric = {k: values.pop(k) for k in list(values) if isinstance(values[k], dict)}
        section = build_options(MetricsSection, values, "metrics", flat_labels("metrics"))
        for metric in (*section.names, *per_metric):
            metrics.get(metric)  # an unknown name fails here, with the list
        if "best" not in values and section.best not in section.names:
            # Not chosen: the first tracked metric that can keep best.safetensors (swd offline, kid, copies).
            ranked = [m for m in section.names if metrics.get(m).extra.get("lower_is_better")]
            if ranked:
                section = replace(section, best=ranked[0])
        if section.best not in section.names and section.names and section.best != "fid":
            raise FewshotError(f"metrics.best {section.best!r} is not among the metrics tracked",
                               hint=f"tracked: {', '.join(section.names)}")
        opts = {m: metrics.get(m).make_options(per_metric.get(m)) for m in sorted({*section.names, *per_metric})}
        return replace(section, options=opts)
    if name not in METHOD_SECTIONS:
        return build_options(SECTIONS[name], values, name, flat_labels(name))
    common = {k: values.pop(k) for k in common_keys(name) if k in values}
    section = build_options(SECTIONS[name], common, name, flat_labels(name))
    entry = METHOD_SECTIONS[name].get(section.method)
    return replace(section, method=entry.name, options=entry.make_options(values, flat_labels(name)))


def build_regularizers(table: dict[str, Any] | None) -> dict[str, Any]:
    out = {}
    for name, values in (table or {}).items():
        if not isinstance(values, dict):
            raise FewshotError(f"regularizers.{name} must be a table of options ([regularizers.{name}])")
        entry = regularizers.get(name)
        labels = flat_labels(f"regularizers.{entry.name}")
        out[entry.name] = entry.make_options(values, labels)
    return out


def section_dict(section: Any) -> dict[str, Any]:
    """A section as the table ``config.toml`` holds: common keys, then the method's options."""
    out = {f.name: getattr(section, f.name) for f in fields(section) if f.name != "options"}
    if isinstance(section, MetricsSection):
        for name, opts in section.options.items():
            values = options_dict(opts)
            if values:
                out[name] = values
        return out
    out.update(options_dict(getattr(section, "options", None)))
    return out
