"""References to pretrained checkpoints -> verified local fewshot bundles.

A reference is one of:

- a registry name (``ffhq256``; ``presets/checkpoints.toml`` plus ``FEWSHOT_CHECKPOINT_REGISTRY``),
- ``hf://org/repo/path/to/file[@revision]`` (``hf://datasets/org/repo/...`` for dataset repos),
  fetched with ``huggingface_hub.hf_hub_download`` into the standard HF cache,
- an ``http(s)://`` URL, downloaded with resume support into ``settings.checkpoints_dir()/downloads``,
- a local file.

Official pickles are converted once to a safetensors bundle under
``settings.checkpoints_dir()/converted/<sha256 of the pickle>.safetensors``; later calls (online or
offline) return that file. A local safetensors bundle is returned as it is.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, settings
from .config import PRESETS_DIR  # the registries live beside the presets
from .errors import FewshotError

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


# --- plain URL downloads -----------------------------------------------------------------------------


class _Interrupted(Exception):
    """The transfer stopped early; the .part file keeps what arrived."""


def url_cache_path(url: str, root: Path | None = None) -> Path:
    """Where a URL's file lives in the cache: one folder per URL so equal file names cannot collide."""
    leaf = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return (root or settings.checkpoints_dir() / "downloads") / key / leaf


def _fetch_into(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"fewshot/{__version__}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the .part file is already complete
            return
        raise FewshotError(f"download failed: {url} answered HTTP {exc.code} {exc.reason}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FewshotError(
            f"cannot reach {url}: {reason}", hint="check the network, or set FEWSHOT_OFFLINE=1 to use only the cache"
        ) from None
    with response:
        mode = "ab"
        if have and response.status != 206:  # the server ignored Range: start over
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, mode) as fh, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[:-5],
            disable=None if progress else True, leave=False,
        ) as bar:
            try:
                while block := response.read(DOWNLOAD_CHUNK):
                    fh.write(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
                raise _Interrupted(str(exc) or type(exc).__name__) from None
        if total is not None and part.stat().st_size < total:
            raise _Interrupted(f"got {part.stat().st_size} of {total} bytes")


def download_url(
    url: str,
    dest: Path | None = None,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    offline: bool | None = None,
    attempts: int = 3,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` (default: its cache path) and return it.

    The transfer goes into ``dest.part``; an interrupted transfer is resumed with an HTTP Range request
    (here, up to ``attempts`` times, and again on the next call). The complete file is hashed, refused
    and deleted when the expected hash does not match, and moved into place atomically.
    """
    dest = dest or url_cache_path(url)
    offline = settings.offline() if offline is None else offline
    if dest.exists():
        digest = cached_sha256(dest)
        if hash_matches(digest, sha256, sha256_prefix) is not False:
            return dest
        remove_cached(dest)  # a cached file that no longer matches is useless; fetch it again
        if offline:
            raise FewshotError(f"cached {dest} does not match its expected sha256 and was removed (offline: not refetched)")
    if offline:
        raise FewshotError(
            f"{url} is not in the cache and downloads are off (FEWSHOT_OFFLINE / HF_HUB_OFFLINE)",
            hint=f"download it where there is network and copy it to {dest}, or pass the downloaded file's local path",
        )
    part = dest.with_name(dest.name + ".part")
    last_error = ""
    for _ in range(max(attempts, 1)):
        try:
            _fetch_into(url, part, progress=progress, timeout=timeout)
            break
        except _Interrupted as exc:
            last_error = str(exc)
    else:
        size = part.stat().st_size if part.exists() else 0
        raise FewshotError(
            f"download of {url} was interrupted ({last_error}); {size} bytes kept in {part}",
            hint="run the same command again to resume",
        )
    digest = sha256_of(part)
    if hash_matches(digest, sha256, sha256_prefix) is False:
        part.unlink()
        expected = sha256 or f"{sha256_prefix}..."
        raise FewshotError(
            f"{url}: sha256 mismatch (expected {expected}, got {digest}); the file was refused and deleted",
            hint="the file is corrupt or was replaced upstream; try again or report the URL",
        )
    os.replace(part, dest)
    write_hash_record(dest, digest, url=url)
    return dest


# --- hf:// references ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubFileRef:
    repo_id: str
    filename: str
    revision: str | None = None
    repo_type: str = "model"

    def __str__(self) -> str:
        prefix = "" if self.repo_type == "model" else self.repo_type + "s/"
        return f"hf://{prefix}{self.repo_id}/{self.filename}" + (f"@{self.revision}" if self.revision else "")


def parse_hf_ref(ref: str) -> HubFileRef:
    """``hf://[datasets/|spaces/]org/repo/path/in/repo[@revision]`` -> its parts."""
    if not ref.startswith("hf://"):
        raise FewshotError(f"not an hf:// reference: {ref}")
    body, revision = ref[len("hf://"):], None
    if "@" in body:
        body, revision = body.rsplit("@", 1)
        if not revision or "/" in revision.strip("/") and not revision.startswith("refs/"):
            raise FewshotError(f"bad revision in {ref!r}", hint="use hf://org/repo/file@<branch, tag or commit>")
    parts = [p for p in body.split("/") if p]
    repo_type = "model"
    if parts and parts[0] in ("datasets", "spaces", "models"):
        repo_type = parts.pop(0)[:-1]
    if len(parts) < 3:
        raise FewshotError(
            f"incomplete hf:// reference {ref!r}", hint="write hf://org/repo/path/to/file.pkl[@revision]"
        )
    return HubFileRef("/".join(parts[:2]), "/".join(parts[2:]), revision, repo_type)


def hf_download(ref: str | HubFileRef, *, offline: bool | None = None) -> Path:
    """Fetch one file through huggingface_hub's cache; offline, only the cache is consulted."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub_ref = parse_hf_ref(ref) if isinstance(ref, str) else ref
    offline = settings.offline() if offline is None else offline
    kwargs: dict[str, Any] = {
        "repo_id": hub_ref.repo_id, "filename": hub_ref.filename, "revision": hub_ref.revision,
        "repo_type": hub_ref.repo_type, "cache_dir": str(settings.hf_hub_cache()), "local_files_only": offline,
        "library_name": "fewshot", "library_version": __version__,
    }
    endpoint = settings.hf_endpoint()
    if endpoint:
        kwargs["endpoint"] = endpoint
    try:
        return Path(hf_hub_download(**kwargs))
    except LocalEntryNotFoundError:
        where = settings.hf_hub_cache() / f"{hub_ref.repo_type}s--{hub_ref.repo_id.replace('/', '--')}"
        raise FewshotError(
            f"{hub_ref} is not in the Hugging Face cache"
            + (" and downloads are off (FEWSHOT_OFFLINE / HF_HUB_OFFLINE)" if offline else " and the Hub is unreachable"),
            hint=f"expected under {where}; run `fewshot download {hub_ref}` where there is network "
            "(same HF_HOME), or download the file and pass its local path",
        ) from None
    except GatedRepoError:
        raise FewshotError(
            f"{hub_ref}: the repository is gated", hint="accept its terms on the Hub and log in (`hf auth login` or HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise FewshotError(
            f"{hub_ref}: repository {hub_ref.repo_id} not found (or private)",
            hint="check the name; for a private repo log in (`hf auth login` or HF_TOKEN)",
        ) from None
    except RevisionNotFoundError:
        raise FewshotError(f"{hub_ref}: revision {hub_ref.revision!r} not found") from None
    except EntryNotFoundError:
        raise FewshotError(f"{hub_ref}: no file {hub_ref.filename!r} in {hub_ref.repo_id}") from None
    except HfHubHTTPError as exc:
        raise FewshotError(f"{hub_ref}: the Hub answered an error: {exc}".splitlines()[0]) from None
    except (OSError, ValueError) as exc:
        raise FewshotError(f"{hub_ref}: download failed: {exc}".splitlines()[0]) from None
    except Exception as exc:
        if not _is_network_error(exc):
            raise
        raise FewshotError(f"{hub_ref}: cannot reach the Hub: {exc}".splitlines()[0],
                           hint="check the network, or set FEWSHOT_OFFLINE=1 to use only the cache") from None


# --- checkpoints -----------------------------------------------------------------------------------------


def is_url(ref: str) -> bool:
    return ref.startswith(("https://", "http://"))


def fetch_checkpoint_source(ref: str, *, offline: bool | None = None) -> tuple[Path, str | None]:
    """A local copy of what ``ref`` names (pickle or bundle), and its verified sha256 when known."""
    offline = settings.offline() if offline is None else offline
    local = Path(ref).expanduser()
    if local.is_file():
        return local, None
    if local.is_dir():
        raise FewshotError(f"{ref} is a folder, not a checkpoint file")
    if ref.startswith("hf://"):
        return hf_download(ref, offline=offline), None
    if is_url(ref):
        path = download_url(ref, offline=offline)
        return path, cached_sha256(path)
    entries = checkpoint_registry()
    if ref in entries:
        entry = entries[ref]
        if entry.package:  # shipped with fewshot: no download, works offline; the hash still guards the file
            path = Path(__file__).resolve().parent / entry.package
            if not path.is_file():
                raise FewshotError(f"checkpoint {ref!r}: {path} is missing from this installation",
                                   hint="reinstall fewshot (the wheel carries fewshot/assets)")
            digest = sha256_of(path)
            if hash_matches(digest, entry.sha256) is False:
                raise FewshotError(f"{path}: sha256 mismatch (expected {entry.sha256}, got {digest}); refused")
            return path, digest
        if entry.url:
            try:
                path = download_url(entry.url, sha256=entry.sha256, offline=offline)
            except FewshotError as exc:
                if not entry.hf:
                    raise FewshotError(
                        f"checkpoint {ref!r}: {exc.message}",
                        hint=exc.hint or f"or download {entry.url} yourself and pass the local file",
                    ) from None
            else:
                return path, cached_sha256(path)
        path = hf_download(entry.hf, offline=offline)  # type: ignore[arg-type]
        digest = cached_sha256(path) if entry.sha256 else None
        if entry.sha256 and digest != entry.sha256:
            raise FewshotError(f"{entry.hf}: sha256 mismatch (expected {entry.sha256}, got {digest}); refused")
        return path, digest
    if any(sep in ref for sep in ("/", "\\")) or ref.endswith((".pkl", ".safetensors", ".pt")):
        raise FewshotError(f"no such checkpoint file: {ref}")
    raise FewshotError(
        f"unknown checkpoint reference {ref!r}",
        hint="use a name (" + ", ".join(sorted(entries)) + "), hf://org/repo/file[@rev], an https:// URL or a file",
    )


def converted_path(source_sha256: str) -> Path:
    return settings.checkpoints_dir() / "converted" / f"{source_sha256}.safetensors"


def ensure_bundle(source: Path, sha256: str | None = None) -> Path:
    """A fewshot bundle for ``source``: itself when it is one, else its converted copy (made once)."""
    from .checkpoint import convert_pickle, detect_format, read_header

    kind = detect_format(source)
    if kind == "safetensors":
        read_header(source)  # refuses safetensors files that are not fewshot bundles
        return source
    if kind == "pickle":
        digest = sha256 or cached_sha256(source)
        target = converted_path(digest)
        if target.exists():
            try:
                read_header(target)
                return target
            except FewshotError:
                target.unlink()  # a damaged conversion is redone below
        convert_pickle(source, target)
        return target
    if kind == "torch-zip":
        raise FewshotError(
            f"{source} is a torch.save archive, not a StyleGAN2-ADA pickle or fewshot bundle",
            hint="rosinality-format .pt files are not supported",
        )
    raise FewshotError(f"{source} is not a checkpoint (neither a fewshot safetensors bundle nor an official pickle)")


def resolve_checkpoint(ref: str, *, offline: bool | None = None) -> Path:
    """A name, ``hf://`` reference, URL or local path -> a local fewshot safetensors bundle.

    Downloads go through the caches (fewshot's for URLs and names, huggingface_hub's for ``hf://``);
    offline (argument, or ``settings.offline()``), only cached files are used. Pickles are converted
    once, keyed by their sha256, and the converted bundle is returned from then on.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise FewshotError("empty checkpoint reference")
    source, digest = fetch_checkpoint_source(ref.strip(), offline=offline)
    return ensure_bundle(source, digest)


# --- push -------------------------------------------------------------------------------------------------

BUNDLE_CANDIDATES = ("best.safetensors", "final.safetensors", "latest.safetensors")


@dataclass
class PushSource:
    bundle: Path
    run_dir: Path | None
    config: dict[str, Any]
    metrics: dict[str, Any]


def _read_config(run_dir: Path) -> dict[str, Any]:
    for name in ("config.json", "config.toml"):
        path = run_dir / name
        if path.is_file():
            try:
                if name.endswith(".json"):
                    data = json.loads(path.read_text())
                else:
                    with open(path, "rb") as fh:
                        data = tomllib.load(fh)
            except (OSError, ValueError) as exc:
                raise FewshotError(f"cannot read {path}: {exc}") from None
            return data if isinstance(data, dict) else {}
    return {}


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    """Latest value of each metric from ``metrics.json`` or ``metrics.jsonl`` (one JSON record per line)."""
    metrics: dict[str, Any] = {}
    path = run_dir / "metrics.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                metrics.update(data.get("results", data))
        except (OSError, ValueError):
            pass
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                metrics.update(record.get("results", {k: v for k, v in record.items() if isinstance(v, (int, float))}))
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def find_push_source(path: Path) -> PushSource:
    """A bundle file, or a run folder (its best/final/latest or newest ``*.safetensors``)."""
    path = Path(path)
    if path.is_file():
        run_dir = path.parent if (path.parent / "config.json").is_file() else None
        if run_dir is None and path.parent.name == "checkpoints" and (path.parent.parent / "config.json").is_file():
            run_dir = path.parent.parent
        return PushSource(path, run_dir, _read_config(run_dir) if run_dir else {}, _read_metrics(run_dir) if run_dir else {})
    if not path.is_dir():
        raise FewshotError(f"no such checkpoint or run folder: {path}")
    candidates = [path / n for n in BUNDLE_CANDIDATES] + [path / "checkpoints" / n for n in BUNDLE_CANDIDATES]
    bundle = next((c for c in candidates if c.is_file()), None)
    if bundle is None:
        found = sorted(
            list(path.glob("*.safetensors")) + list((path / "checkpoints").glob("*.safetensors")),
            key=lambda p: (p.stat().st_mtime, p.name),
        )
        if not found:
            raise FewshotError(f"{path}: no *.safetensors checkpoint in this run folder")
        bundle = found[-1]
    return PushSource(bundle, path, _read_config(path), _read_metrics(path))


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "", {})), None)


def _dig(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)  # type: ignore[assignment]
    return data


def model_card_fields(source: PushSource, *, base: str | None = None, preset: str | None = None,
                      data_size: int | None = None, licence: str | None = None) -> dict[str, Any]:
    """What the card says: base model, preset, data size, metrics, licence (inherited from the base)."""
    from .checkpoint import read_header

    header = read_header(source.bundle)
    training, config, prov = header.training or {}, source.config, header.provenance or {}
    base = _first(base, training.get("base"), _dig(config, "resume"), _dig(config, "base"), _dig(config, "transfer", "base"),
                  _dig(training, "config", "resume"), _dig(training, "config", "base"), prov.get("base"), prov.get("source"))
    preset = _first(preset, config.get("preset"), training.get("preset"), _dig(training, "config", "preset"))
    data_size = _first(data_size, _dig(config, "data", "size"), config.get("data_size"), training.get("data_size"),
                       _dig(training, "training_set_kwargs", "max_size"))
    metrics = dict(training.get("metrics") or {}) if isinstance(training.get("metrics"), dict) else {}
    metrics.update(source.metrics)
    entry = registry_entry_for(str(base)) if base else None
    spec = header.specs.get("G_ema") or header.specs.get("G")
    return {
        "base": base,
        "base_entry": entry,
        "preset": preset,
        "data_size": data_size,
        "metrics": metrics,
        "licence": _first(licence, entry.licence if entry else None, training.get("licence"), "unknown"),
        "licence_url": entry.licence_url if entry else None,
        "resolution": spec.init_kwargs.get("img_resolution") if spec else None,
        "networks": sorted(header.specs),
    }


def _yaml_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # JSON scalars, lists and maps are valid YAML flow values


def render_model_card(repo_id: str, fields: dict[str, Any], files: list[str]) -> str:
    """README.md with YAML front matter the Hub reads (licence, tags, base model) plus fewshot's own keys."""
    licence = fields["licence"]
    front: dict[str, Any] = {"library_name": "fewshot", "tags": ["stylegan2", "gan", "few-shot", "image-generation", "fewshot"],
                             "pipeline_tag": "unconditional-image-generation"}
    if licence in ("mit", "apache-2.0", "cc-by-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "openrail"):
        front["license"] = licence
    else:
        front["license"] = "other"
        front["license_name"] = licence
        if fields.get("licence_url"):
            front["license_link"] = fields["licence_url"]
    base = fields.get("base")
    if isinstance(base, str) and base.startswith("hf://"):
        front["base_model"] = parse_hf_ref(base).repo_id
    front["fewshot_base"] = base
    front["fewshot_preset"] = fields.get("preset")
    front["fewshot_data_size"] = fields.get("data_size")
    front["fewshot_metrics"] = fields.get("metrics") or {}
    front["fewshot_resolution"] = fields.get("resolution")
    lines = ["---"] + [f"{k}: {_yaml_value(v)}" for k, v in front.items()] + ["---", ""]
    entry: CheckpointEntry | None = fields.get("base_entry")
    lines += [f"# {repo_id.split('/')[-1]}", "",
              f"A StyleGAN2 generator fine-tuned with [fewshot](https://pypi.org/project/fewshot/) "
              f"({fields.get('resolution')}x{fields.get('resolution')} px).", ""]
    lines += ["| | |", "|---|---|",
              f"| base model | {base or 'unknown'}" + (f" ({entry.description})" if entry else "") + " |",
              f"| preset | {fields.get('preset') or 'unknown'} |",
              f"| training images | {fields.get('data_size') or 'unknown'} |",
              f"| networks | {', '.join(fields['networks'])} |"]
    for name, value in (fields.get("metrics") or {}).items():
        lines.append(f"| {name} | {value} |")
    lines += ["", "![samples](samples.png)" if "samples.png" in files else "", "",
              "## Use", "", "```bash", f"fewshot sample hf://{repo_id}/{files[0]} --seeds 0-15", "```", "",
              "## Licence", "",
              f"Inherited from the base model: {licence}" + (f" ({fields['licence_url']})" if fields.get("licence_url") else "")
              + ". The training images keep their own licence.", ""]
    return "\n".join(lines)


def sample_grid(bundle_path: Path, out: Path, seeds: list[int], psi: float = 1.0, columns: int = 4) -> Path:
    """A PNG grid of the generator's images for ``seeds`` (latents drawn as the official generate.py does)."""
    import numpy as np
    import torch
    from PIL import Image

    from .checkpoint import load_bundle, read_header
    from .generate import inference_kwargs

    generators = [n for n in ("G_ema", "G") if n in read_header(bundle_path).specs]
    if not generators:
        raise FewshotError(f"{bundle_path} holds no generator (neither G_ema nor G)")
    if not seeds:
        raise FewshotError("no seeds for the sample grid")
    bundle = load_bundle(bundle_path, names=tuple(generators[:1]))
    G = bundle.generator
    z = torch.from_numpy(np.concatenate([np.random.RandomState(seed).randn(1, G.z_dim) for seed in seeds])).float()
    c = torch.zeros(len(seeds), G.c_dim)
    if G.c_dim:
        c[torch.arange(len(seeds)), torch.tensor([seed % G.c_dim for seed in seeds])] = 1  # cycle through labels
    with torch.no_grad():  # one batch: the per-seed latents are the official ones either way
        images = G(z, c, truncation_psi=psi, noise_mode="const", **inference_kwargs(z.device))
    tiles = list((images * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    h, w, ch = tiles[0].shape
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    grid = np.zeros((rows * h, columns * w, ch), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    Image.fromarray(grid[..., 0] if ch == 1 else grid).save(out)
    return out


def prepare_push_folder(source: PushSource, out_dir: Path, repo_id: str, *, seeds: list[int] | None = None,
                        psi: float = 1.0, **card_overrides: Any) -> list[Path]:
    """Write what ``push`` uploads: the bundle, config.json, samples.png and README.md (the model card)."""
    from .checkpoint import read_header

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FewshotError(f"{out_dir} exists and is not empty", hint="choose a new folder for --dry-run")
    out_dir.mkdir(parents=True, exist_ok=True)
    header = read_header(source.bundle)
    bundle_name = source.bundle.name
    shutil.copy2(source.bundle, out_dir / bundle_name)
    fields = model_card_fields(source, **card_overrides)
    config = {
        "library": "fewshot", "fewshot_version": __version__, "checkpoint": bundle_name,
        "networks": {n: s.to_json() for n, s in header.specs.items()},
        "base": fields["base"], "preset": fields["preset"], "data_size": fields["data_size"],
        "metrics": fields["metrics"], "licence": fields["licence"], "provenance": header.provenance,
        "training_config": source.config or (header.training or {}).get("config"),
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
    sample_grid(source.bundle, out_dir / "samples.png", seeds if seeds is not None else list(range(8)), psi=psi)
    files = [bundle_name, "config.json", "samples.png"]
    (out_dir / "README.md").write_text(render_model_card(repo_id, fields, files))
    return [out_dir / f for f in files + ["README.md"]]


def push_to_hub(path: Path, repo_id: str, *, private: bool = False, dry_run_dir: Path | None = None,
                seeds: list[int] | None = None, **card_overrides: Any) -> str:
    """Upload a bundle (or a run's best checkpoint) with its card; ``dry_run_dir`` writes the folder only."""
    import tempfile

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise FewshotError(f"--repo must be user/name, got {repo_id!r}")
    source = find_push_source(path)
    if dry_run_dir is not None:
        prepare_push_folder(source, dry_run_dir, repo_id, seeds=seeds, **card_overrides)
        return str(dry_run_dir)
    if settings.offline():
        raise FewshotError("cannot push while offline (FEWSHOT_OFFLINE / HF_HUB_OFFLINE is set)",
                           hint="use --dry-run DIR to write the folder, and upload it later")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with tempfile.TemporaryDirectory(prefix="fewshot-push-") as tmp:
        folder = Path(tmp) / "upload"
        prepare_push_folder(source, folder, repo_id, seeds=seeds, **card_overrides)
        endpoint = settings.hf_endpoint()
        api = HfApi(endpoint=endpoint) if endpoint else HfApi()
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                              commit_message=f"Upload {source.bundle.name} with fewshot {__version__}")
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            hint = "log in with `hf auth login` or set HF_TOKEN" if status in (401, 403) else None
            raise FewshotError(f"push to {repo_id} failed: {str(exc).splitlines()[0]}", hint=hint) from None
        except (OSError, ValueError) as exc:
            raise FewshotError(f"push to {repo_id} failed: {exc}".splitlines()[0]) from None
        except Exception as exc:
            if not _is_network_error(exc):
                raise
            raise FewshotError(f"cannot reach the Hub at {endpoint or 'https://huggingface.co'}: {exc}",
                               hint="check the network; --dry-run DIR writes the folder to upload later") from None
    return str(url)


def _is_network_error(exc: BaseException) -> bool:
    """A transport failure of huggingface_hub's HTTP client (httpx, or the httpx2 of newer releases), which is
    not an OSError: matched by class name so no client version is imported here."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TransportError", "NetworkError", "TimeoutException", "ConnectError"})
