"""One registry mechanism for every family of pluggable parts.

A *family* (augmentations, transfer methods, regularizers, metrics, feature extractors, adversarial losses,
network families) is a :class:`Registry`. A *method* is one file that registers itself::

    from dataclasses import dataclass
    from fewshot.registry import augmentations, option

    @dataclass(frozen=True)
    class MyOptions:
        strength: float = option(0.5, "How hard to push.", check=lambda v: v >= 0, wanted=">= 0")

    @augmentations.register("mine", options=MyOptions, help="My augmentation.")
    class MyAugment(Augment):
        def __init__(self, options: MyOptions, **common): ...

Its options are a frozen dataclass: field names, types, defaults, help texts and range checks in one place.
The config section of the family (``[augment]``, ``[transfer]``, ``[regularizers.<name>]``, ``[metrics]``)
holds the chosen method and its options; the command line's choices, the help texts, the validation of a
preset and ``fewshot presets --methods`` all read the registry, so nothing lists the methods a second time.

Where methods come from:

* fewshot's own: every module of the family's package (``fewshot.augment``, ``fewshot.transfer``, ...) whose
  name does not start with ``_``, imported the first time the family is asked for its names;
* other packages: Python entry points in the group ``fewshot.methods`` (``name = "package.module"``), each a
  module that registers what it holds when imported. A package that adds one file and one entry point line
  adds a method, without touching fewshot.

This module imports no torch: it is read when the command line is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

from .errors import FewshotError

ENTRY_POINT_GROUP = "fewshot.methods"
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Options: typed dataclass fields with their help and checks


@dataclass(frozen=True)
class OptionInfo:
    help: str = ""
    check: Callable[[Any], bool] | None = None  # a range test; None: any value of the type
    wanted: str = ""  # what ``check`` wants, for the error ("in [0, 1]")
    choices: tuple[str, ...] | Callable[[], Iterable[str]] = ()  # fixed values, or a callable (another registry)
    unknown: str = ""  # the error for a value not among the choices, e.g. "unknown Reg-DGM extractor {value!r}"
    # Reads the raw preset / command-line / record value (text, list, None) into the field's type, for an option
    # with its own grammar (e.g. "G4D2"); None: the type's ordinary coercion alone.
    parse: Callable[[Any], Any] | None = None
    # Values at which the option does nothing. A caller that passes one flat set of options for every method
    # (an old config, a training record) may give them to a method that lacks the option. None: (the default,).
    inert: tuple[Any, ...] | None = None


def option(default: Any = MISSING, help: str = "", *, check: Callable[[Any], bool] | None = None, wanted: str = "",
           choices: tuple[str, ...] | Callable[[], Iterable[str]] = (), unknown: str = "",
           default_factory: Any = MISSING, parse: Callable[[Any], Any] | None = None,
           inert: tuple[Any, ...] | None = None) -> Any:
    """A dataclass field that carries its help text, range check, choices (``unknown``: the message for a value
    outside them, with ``{value!r}``) and, optionally, its own parser and the values at which it does nothing."""
    meta = {"fewshot": OptionInfo(help, check, wanted, choices, unknown, parse, inert)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def option_info(f: dataclasses.Field) -> OptionInfo:
    return f.metadata.get("fewshot", OptionInfo())


def inert_values(f: dataclasses.Field) -> tuple[Any, ...]:
    """The values at which option ``f`` does nothing: its declared ``inert`` values, else its default."""
    info = option_info(f)
    if info.inert is not None:
        return info.inert
    return () if f.default is MISSING else (f.default,)


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a forward reference we cannot resolve: fall back to the raw annotations
        return {f.name: f.type for f in fields(cls)}


def coerce_value(kind: Any, value: Any, what: str) -> Any:
    """Convert a preset or command-line value to ``kind`` (bool, int, float, str, tuples, ``X | None``)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce_value(inner[0], value, what)
    if value is None:
        raise FewshotError(f"bad value for {what}: it may not be empty")
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if kind is str:
            return str(value)
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError("expected a table of key = value")
            key_kind, value_kind = args or (str, Any)
            return {coerce_value(key_kind, k, what): (v if value_kind is Any else coerce_value(value_kind, v, what))
                    for k, v in value.items()}
        if origin is tuple:
            text = str(value)
            if args and all(a is int for a in args if a is not Ellipsis):
                text = text.lower().replace("x", ",")  # 8x4 for a grid
            parts = list(value) if isinstance(value, (list, tuple)) else [p.strip() for p in text.split(",")
                                                                           if p.strip()]
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(coerce_value(args[0], p, what) for p in parts)
            if len(parts) != len(args):
                raise ValueError(f"expected {len(args)} values separated by commas")
            return tuple(coerce_value(a, p, what) for a, p in zip(args, parts, strict=True))
    except (TypeError, ValueError) as exc:
        raise FewshotError(f"bad value for {what}: {value!r} ({exc})") from None
    return value


def build_options(cls: type[T], values: dict[str, Any], what: str, labels: dict[str, str] | None = None) -> T:
    """``cls(**values)`` with every value converted, checked and unknown keys refused by name. Errors name a value
    ``what.name``, or ``labels[name]`` (the key the user knows it by), or just ``name`` when ``what`` is empty."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise FewshotError(f"{what} has no option {', '.join(unknown)}",
                           hint=f"its options: {', '.join(known) or '(none)'}")
    kinds = _field_types(cls)
    converted = {}
    for name, value in values.items():
        label = (labels or {}).get(name) or (f"{what}.{name}" if what else name)
        parse = option_info(known[name]).parse
        if parse is not None:
            value = parse(value)
        converted[name] = check_option(known[name], coerce_value(kinds[name], value, label), label)
    return cls(**converted)


def check_option(f: dataclasses.Field, value: Any, label: str) -> Any:
    info = option_info(f)
    if value is None:
        return value
    choices = tuple(info.choices()) if callable(info.choices) else info.choices
    for item in (value if isinstance(value, (tuple, list)) else (value,)) if choices else ():
        if item not in choices:
            message = info.unknown.format(value=item) if info.unknown else f"bad value for {label}: {item!r}"
            raise FewshotError(message, hint=f"choose from {', '.join(choices)}")
    if info.check is not None and not info.check(value):
        raise FewshotError(f"{label} must be {info.wanted or 'valid'}, got {value}")
    return value


def options_dict(options: Any) -> dict[str, Any]:
    """A method's options as plain values (tuples kept), for configs and records."""
    return {f.name: getattr(options, f.name) for f in fields(options)} if options is not None else {}


@dataclass(frozen=True)
class NoOptions:
    """For a method without options."""


# ---------------------------------------------------------------------------------------------
# Registries


@dataclass(frozen=True)
class Entry:
    """One registered method: what it is, how it is configured, and the object that implements it."""

    family: str
    name: str
    target: Any  # the class or function the method registered
    options: type = NoOptions
    help: str = ""
    module: str = ""
    aliases: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific facts (e.g. what a metric needs)

    def make_options(self, values: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> Any:
        return build_options(self.options, dict(values or {}), f"{self.family} {self.name!r}", labels)


class Registry:
    """The methods of one family, by name."""

    def __init__(self, family: str, packages: tuple[str, ...] = (), *, what: str | None = None,
                 plural: str | None = None) -> None:
        self.family = family
        self.what = what or family
        self.plural = plural or f"{self.what}s"
        self.packages = packages
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False

    # -- registering --------------------------------------------------------------------------
    def register(self, name: str, *, options: type = NoOptions, help: str = "", aliases: Iterable[str] = (),
                 replace: bool = False, **extra: Any) -> Callable[[T], T]:
        """Decorator: register the class or function it decorates as method ``name``."""

        def decorate(target: T) -> T:
            self.add(Entry(self.family, name, target, options, help or _first_line(target),
                           getattr(target, "__module__", ""), tuple(aliases), dict(extra)), replace=replace)
            return target

        return decorate

    def add(self, entry: Entry, *, replace: bool = False) -> Entry:
        old = self._entries.get(entry.name)
        if old is not None and not replace and old.target is not entry.target and \
                getattr(old.target, "__qualname__", None) != getattr(entry.target, "__qualname__", object()):
            raise FewshotError(f"{self.what} {entry.name!r} is registered twice ({old.module} and {entry.module})")
        self._entries[entry.name] = entry
        for alias in entry.aliases:
            self._aliases[alias] = entry.name
        return entry

    # -- looking up ---------------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for package in self.packages:  # a package: each of its modules; a module: itself
            module = importlib.import_module(package)
            for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{package}.{info.name}")
        load_entry_points()

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(sorted(self._entries))

    def canonical(self, name: str) -> str:
        key = str(name).strip()
        self._load()
        return self._aliases.get(key, key)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) in self._entries

    def get(self, name: str) -> Entry:
        key = self.canonical(name)
        if key not in self._entries:
            raise FewshotError(f"unknown {self.what} {name!r}", hint=f"choose one of: {', '.join(self.names())}")
        return self._entries[key]

    def entries(self) -> list[Entry]:
        self._load()
        return [self._entries[n] for n in sorted(self._entries)]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the registered target (construct the class) with ``args``/``kwargs``."""
        return self.get(name).target(*args, **kwargs)

    def describe(self) -> list[tuple[str, str]]:
        return [(e.name, e.help) for e in self.entries()]

    def view(self) -> RegistryView:
        """A read-only ``{name: target}`` mapping onto this registry (for code that wants a dict)."""
        return RegistryView(self)


class RegistryView(Mapping):
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def __getitem__(self, name: str) -> Any:
        if name not in self._registry:
            raise KeyError(name)
        return self._registry.get(name).target

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry.names())

    def __len__(self) -> int:
        return len(self._registry.names())


def _first_line(target: Any) -> str:
    doc = (getattr(target, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


_ENTRY_POINTS_LOADED = False


def load_entry_points() -> None:
    """Import every module named in the ``fewshot.methods`` entry point group (once): each registers its methods.

    A plugin that fails to import is reported in one line naming the plugin, never a traceback."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except FewshotError:
            raise
        except Exception as exc:  # noqa: BLE001 - someone else's package: name it and say what happened
            raise FewshotError(f"the fewshot plugin {ep.name!r} ({ep.value}) failed to load: "
                               f"{type(exc).__name__}: {exc}",
                               hint="fix or uninstall that package (`pip show` names it)") from None


def reset_entry_points() -> None:
    """Forget which entry points were loaded (tests that install a plugin package call this)."""
    global _ENTRY_POINTS_LOADED
    _ENTRY_POINTS_LOADED = False
    for registry in FAMILIES.values():
        registry._loaded = False


# The families. Each package's modules register into these when imported.
augmentations = Registry("augment", ("fewshot.augment",), what="augmentation")
transfers = Registry("transfer", ("fewshot.transfer",), what="transfer method")
regularizers = Registry("regularizer", ("fewshot.regularizers",), what="regularizer")
metrics = Registry("metric", ("fewshot.metrics",), what="metric")
extractors = Registry("extractor", ("fewshot.extractors",), what="feature extractor")
losses = Registry("loss", ("fewshot.train.losses",), what="adversarial loss", plural="adversarial losses")
networks = Registry("network", ("fewshot.nets", "fewshot.disp.nets"), what="network class", plural="network classes")
architectures = Registry("arch", ("fewshot.archs",), what="network family", plural="network families")

FAMILIES: dict[str, Registry] = {r.family: r for r in (augmentations, transfers, regularizers, metrics, extractors,
                                                         losses, networks, architectures)}
