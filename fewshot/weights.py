"""Frozen-network weights (Inception for FID, VGG-16, ResNets, CLIP, FaceNet) as verified local files.

Resolution order for ``resolve_weights(name, path)``:

1. ``path`` when given,
2. the file named by ``FEWSHOT_WEIGHTS_<NAME>`` (``settings.weights_env_path``),
3. fewshot's cache (``settings.weights_dir()/<filename>``),
4. the caches the upstream libraries fill (``$TORCH_HOME/hub/checkpoints``, ``$TORCH_HOME/checkpoints``,
   ``~/.cache/clip``, the Hugging Face cache),
5. a download into fewshot's cache, unless offline.

Every file is checked against the registry's sha256 (or the hash prefix in torchvision-style file
names). A file that fails is refused; one in fewshot's own cache is also deleted. Weights that are
nowhere and cannot be downloaded raise one :class:`~fewshot.hub.FetchError` that names the file, its
URL and the cache path, and whose hint lists the ways to bring it over (``fewshot weights fetch`` on a
machine with network, ``fewshot weights import``, ``FEWSHOT_WEIGHTS_<NAME>``) plus the caller's own
option for a file, when it has one (``flag``, or :func:`fewshot.hub.suggesting` around the call).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import settings
from .config import PRESETS_DIR  # the registries live beside the presets
from .errors import FewshotError
from .hub import (
    FEWSHOT_CACHE_NOTE,
    OFFLINE_REASON,
    FetchError,
    cached_sha256,
    download_url,
    hash_matches,
    read_toml_registry,
    remove_cached,
    sha256_of,
    write_hash_record,
)

WEIGHTS_REGISTRY_FILE = PRESETS_DIR / "weights.toml"


@dataclass(frozen=True)
class WeightsEntry:
    """One frozen network's weights file, as ``presets/weights.toml`` describes it."""

    name: str
    filename: str
    url: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    library_caches: tuple[str, ...] = ()
    format: str = ""
    used_for: str = ""
    licence: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def verification(self) -> str:
        """How a file is checked, as a phrase: ``checked against its published sha256``."""
        if self.sha256:
            return "checked against its published sha256"
        if self.sha256_prefix:
            return f"checked against the sha256 prefix {self.sha256_prefix} in its file name"
        return "not checked: no published hash"

    def matches(self, digest: str) -> bool | None:
        return hash_matches(digest, self.sha256, self.sha256_prefix)


def weights_registry() -> dict[str, WeightsEntry]:
    """Known weights: the built-in file, then ``FEWSHOT_WEIGHTS_REGISTRY`` entries on top."""
    known = {f for f in WeightsEntry.__dataclass_fields__ if f not in ("name", "extra")}
    entries: dict[str, WeightsEntry] = {}
    for name, table in read_toml_registry(WEIGHTS_REGISTRY_FILE, settings.weights_registry_override(), "weights").items():
        if not table.get("filename") or not table.get("url"):
            raise FewshotError(f"weights registry entry {name!r} needs filename and url")
        fields = {k: v for k, v in table.items() if k in known}
        fields["library_caches"] = tuple(fields.get("library_caches", ()))
        entries[name] = WeightsEntry(name=name, extra={k: v for k, v in table.items() if k not in known}, **fields)
    return entries


def weights_entry(name: str) -> WeightsEntry:
    entries = weights_registry()
    if name not in entries:
        raise FewshotError(f"unknown weights {name!r}", hint="known: " + ", ".join(entries))
    return entries[name]


def cache_path(entry: WeightsEntry) -> Path:
    return settings.weights_dir() / entry.filename


def library_cache_paths(entry: WeightsEntry) -> list[Path]:
    """Where the upstream libraries would have put this file (existing or not); HF entries only if cached."""
    paths: list[Path] = []
    for location in entry.library_caches:
        if location == "torch_hub":
            paths.append(settings.torch_home() / "hub" / "checkpoints" / entry.filename)
        elif location == "torch_checkpoints":
            paths.append(settings.torch_home() / "checkpoints" / entry.filename)
        elif location == "clip":
            paths.append(settings.clip_cache_dir() / entry.filename)
        elif location.startswith("hf:"):
            found = _hf_cached(location[3:])
            if found is not None:
                paths.append(found)
        else:
            raise FewshotError(f"weights {entry.name!r}: unknown library cache {location!r}")
    return paths


def _hf_cached(spec: str) -> Path | None:
    """``org/repo/file`` in the Hugging Face cache (main revision), or None."""
    from huggingface_hub import try_to_load_from_cache

    parts = spec.strip("/").split("/")
    if len(parts) < 3:
        return None
    found = try_to_load_from_cache("/".join(parts[:2]), "/".join(parts[2:]), cache_dir=str(settings.hf_hub_cache()))
    return Path(found) if isinstance(found, str) else None


def _mismatch_error(entry: WeightsEntry, path: Path, digest: str) -> FewshotError:
    expected = entry.sha256 or f"{entry.sha256_prefix}..."
    return FewshotError(
        f"{path} is not the {entry.name} weights: sha256 {digest} does not match {expected}; refused",
        hint=f"replace it with the file from {entry.url}",
    )


def verify_file(entry: WeightsEntry, path: Path) -> str:
    """Hash ``path`` and check it; returns the digest, raises FewshotError on a mismatch."""
    if not path.is_file():
        raise FewshotError(f"{path}: no such file (for weights {entry.name!r})")
    digest = cached_sha256(path) if path.is_relative_to(settings.weights_dir()) else sha256_of(path)
    if entry.matches(digest) is False:
        raise _mismatch_error(entry, path, digest)
    return digest


def weights_remedies(entry: WeightsEntry, flag: str | None = None) -> list[str]:
    """The ways to bring ``entry``'s file to a machine that cannot download it, most direct first."""
    remedies = [
        f"on a machine with network run `fewshot weights fetch {entry.name}` and copy the file it prints to "
        f"{cache_path(entry)} here (fewshot's cache: {FEWSHOT_CACHE_NOTE})",
        f"download {entry.url} and run `fewshot weights import {entry.name} FILE`",
        f"set {settings.weights_env_var(entry.name)}=/path/to/{entry.filename}",
    ]
    return remedies + ([f"pass {flag}"] if flag else [])


def fetch_error(entry: WeightsEntry, failure: FetchError | str, notes: list[str] | None = None,
                flag: str | None = None) -> FetchError:
    """The one error for weights that are nowhere here and cannot be downloaded now (``failure``: why)."""
    searched = tuple(str(p) for p in library_cache_paths(entry))
    subject = f"weights {entry.name!r} ({entry.filename})"
    if isinstance(failure, FetchError):
        return failure.about(subject, weights_remedies(entry, flag), name=entry.name, also_searched=searched,
                             notes=tuple(notes or ()))
    return FetchError(subject, url=entry.url, cache=cache_path(entry), failure=failure,
                      remedies=weights_remedies(entry, flag), name=entry.name, also_searched=searched,
                      notes=tuple(notes or ()))


def find_local_weights(entry: WeightsEntry) -> tuple[Path | None, list[str]]:
    """The first acceptable local copy (env, fewshot cache, library caches) and notes on refused ones."""
    notes: list[str] = []
    env_path = settings.weights_env_path(entry.name)
    if env_path is not None:
        if not env_path.is_file():
            raise FewshotError(f"{settings.weights_env_var(entry.name)} points at {env_path}, which does not exist")
        verify_file(entry, env_path)  # an explicit choice that is wrong is an error, not a fallthrough
        return env_path, notes
    own = cache_path(entry)
    if own.is_file():
        digest = cached_sha256(own)
        if entry.matches(digest) is False:
            remove_cached(own)  # ours to delete: a bad file must not be found again
            notes.append(f"removed {own} (sha256 {digest[:12]}... does not match)")
        else:
            return own, notes
    for candidate in library_cache_paths(entry):
        if candidate.is_file():
            digest = sha256_of(candidate)
            if entry.matches(digest) is False:
                notes.append(f"ignored {candidate} (sha256 {digest[:12]}... does not match)")  # not ours: leave it
                continue
            return candidate, notes
    return None, notes


def resolve_weights(name: str, path: str | os.PathLike[str] | None = None, *, flag: str | None = None) -> Path:
    """A verified local weights file for the frozen network ``name`` (see the module doc for the order).

    ``flag`` names the caller's option for an explicit file (``"--reg-weights FILE"``): the error for
    weights that cannot be found or fetched offers it beside the generic remedies.
    """
    entry = weights_entry(name)
    if path is not None:
        explicit = Path(path).expanduser()
        verify_file(entry, explicit)
        return explicit
    found, notes = find_local_weights(entry)
    if found is not None:
        return found
    if settings.offline():
        raise fetch_error(entry, f"{OFFLINE_REASON}, so {entry.url} was not fetched", notes, flag)
    try:
        return download_url(entry.url, cache_path(entry), sha256=entry.sha256, sha256_prefix=entry.sha256_prefix,
                            offline=False)
    except FetchError as exc:
        raise fetch_error(entry, exc, notes, flag) from None
    except FewshotError as exc:  # interrupted, or a file that does not match: its own hint says what to do
        raise FewshotError(f"weights {entry.name!r}: {exc.message}", hint=exc.hint) from None


def import_weights(name: str, file: str | os.PathLike[str]) -> Path:
    """Verify ``file`` and copy it into fewshot's cache (atomically) for ``name``."""
    entry = weights_entry(name)
    src = Path(file).expanduser()
    digest = verify_file(entry, src)
    dest = cache_path(entry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_hash_record(dest, digest, imported_from=str(src))
    return dest


@dataclass
class WeightsStatus:
    name: str
    state: str  # ok | unverified | missing | mismatch
    path: Path | None
    detail: str = ""


def weights_status(name: str, *, rehash: bool = True) -> WeightsStatus:
    """Where ``name`` would resolve from now, without downloading, and whether the file checks out."""
    entry = weights_entry(name)
    try:
        found, notes = find_local_weights(entry)
    except FewshotError as exc:
        return WeightsStatus(name, "mismatch", settings.weights_env_path(name), exc.message)
    if found is None:
        return WeightsStatus(name, "mismatch" if notes else "missing", None, "; ".join(notes))
    if rehash and found.is_relative_to(settings.weights_dir()):
        digest = sha256_of(found)  # `verify` re-reads the bytes rather than trusting the record
        if entry.matches(digest) is False:
            remove_cached(found)
            return WeightsStatus(name, "mismatch", found, f"removed: sha256 {digest} does not match")
        write_hash_record(found, digest)
    state = "ok" if (entry.sha256 or entry.sha256_prefix) else "unverified"
    return WeightsStatus(name, state, found, "; ".join(notes))
