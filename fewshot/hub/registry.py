"""The checkpoint registry (names -> where to fetch them) and the hash records of the cache."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import settings
from ..config import PRESETS_DIR  # the registries live beside the presets
from ..errors import FewshotError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


CHECKPOINT_REGISTRY_FILE = PRESETS_DIR / "checkpoints.toml"
DOWNLOAD_CHUNK = 1 << 20


# --- registry -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointEntry:
    """One named checkpoint of the registry."""

    name: str
    url: str | None = None
    hf: str | None = None
    package: str | None = None  # a file shipped inside the fewshot package, relative to it (the demo base)
    sha256: str | None = None
    resolution: int | None = None
    config: str | None = None
    kind: str | None = None
    licence: str | None = None
    licence_url: str | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.url or self.hf or self.package or ""

    @property
    def filename(self) -> str:
        return self.source.split("@")[0].rstrip("/").rsplit("/", 1)[-1]


def read_toml_registry(builtin: Path, override: Path | None, what: str) -> dict[str, dict[str, Any]]:
    """Tables of ``builtin`` updated by those of ``override`` (same name: the override wins)."""
    tables: dict[str, dict[str, Any]] = {}
    for path in (builtin, override):
        if path is None:
            continue
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise FewshotError(f"{what} registry {path} does not exist") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise FewshotError(f"cannot read {what} registry {path}: {exc}") from None
        for name, table in data.items():
            if not isinstance(table, dict):
                raise FewshotError(f"{path}: entry {name!r} must be a table ([{name}])")
            tables[name] = table
    return tables


def checkpoint_registry() -> dict[str, CheckpointEntry]:
    """Named checkpoints: the built-in file, then ``FEWSHOT_CHECKPOINT_REGISTRY`` entries on top."""
    known = {f for f in CheckpointEntry.__dataclass_fields__ if f not in ("name", "extra")}
    entries: dict[str, CheckpointEntry] = {}
    tables = read_toml_registry(CHECKPOINT_REGISTRY_FILE, settings.checkpoint_registry_override(), "checkpoint")
    for name, table in tables.items():
        if not table.get("url") and not table.get("hf") and not table.get("package"):
            raise FewshotError(f"checkpoint registry entry {name!r} has neither url nor hf")
        fields = {k: v for k, v in table.items() if k in known}
        entries[name] = CheckpointEntry(name=name, extra={k: v for k, v in table.items() if k not in known}, **fields)
    return entries


def registry_entry_for(ref: str) -> CheckpointEntry | None:
    """The registry entry a reference names, directly or by its URL / file name (for licence lookup)."""
    entries = checkpoint_registry()
    if ref in entries:
        return entries[ref]
    leaf = ref.split("@")[0].rstrip("/").rsplit("/", 1)[-1]
    for entry in entries.values():
        if ref in (entry.url, entry.hf) or (leaf and leaf == entry.filename):
            return entry
    return None


# --- hashing and cache records ----------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(DOWNLOAD_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def write_hash_record(path: Path, sha256: str, **extra: Any) -> None:
    """Remember a verified file's hash beside it, with size and mtime so a changed file is noticed."""
    stat = path.stat()
    record = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **extra}
    try:
        _record_path(path).write_text(json.dumps(record, indent=1))
    except OSError:
        pass  # the record only saves re-hashing; losing it costs time, not correctness


def cached_sha256(path: Path) -> str:
    """The file's sha256, from its record when the file is unchanged since, else by hashing it."""
    try:
        record = json.loads(_record_path(path).read_text())
        stat = path.stat()
        if record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
            return str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = sha256_of(path)
    if path.resolve().is_relative_to(settings.home_dir().resolve()):  # never litter user folders or the HF cache
        write_hash_record(path, digest)
    return digest


def remove_cached(path: Path) -> None:
    for p in (path, _record_path(path)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def hash_matches(digest: str, sha256: str | None = None, sha256_prefix: str | None = None) -> bool | None:
    """True/False against the full hash or prefix that is known; None when nothing is known."""
    if sha256:
        return digest.lower() == sha256.lower()
    if sha256_prefix:
        return digest.lower().startswith(sha256_prefix.lower())
    return None


