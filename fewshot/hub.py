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
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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


# --- failed fetches ------------------------------------------------------------------------------------

OFFLINE_REASON = "downloads are off (FEWSHOT_OFFLINE / HF_HUB_OFFLINE)"
FEWSHOT_CACHE_NOTE = "$FEWSHOT_HOME, default ~/.cache/fewshot"
HF_CACHE_NOTE = "$HF_HUB_CACHE or $HF_HOME/hub, default ~/.cache/huggingface/hub"
# Before a download the host is looked up and connected to with these bounds, so a machine without
# network fails in seconds instead of waiting out a resolver or a client's retry loop (huggingface_hub
# retries a failed metadata request five times, about 25 s, printing a "Retrying" line each time). A
# resolver slower than this is treated as none; a working one answers in well under a second.
DNS_TIMEOUT_S = 4.0
CONNECT_TIMEOUT_S = 8.0


class FetchError(FewshotError):
    """A file that is neither in the cache nor downloadable now.

    The message names the file, the cache path where it would be and the address it was sought at; the
    hint is the list of ``remedies``, to which a caller adds the option its context offers for giving the
    file by hand (:meth:`or_pass`, :func:`suggesting`).
    """

    def __init__(self, subject: str, *, url: str, cache: Path, failure: str, remedies: Sequence[str] = (),
                 name: str | None = None, cache_label: str = "the cache", also_searched: Sequence[str] = (),
                 notes: Sequence[str] = ()) -> None:
        self.subject, self.url, self.cache, self.failure = subject, url, Path(cache), failure
        self.remedies, self.name, self.cache_label = tuple(remedies), name, cache_label
        self.also_searched, self.notes = tuple(also_searched), tuple(notes)
        where = f"not in {cache_label} ({'; '.join([str(self.cache), *self.notes])})"
        if self.also_searched:
            where += f" nor in {', '.join(self.also_searched)}"
        super().__init__(f"{subject}: {where}, and {failure}", hint="; or ".join(self.remedies) or None)

    def _replace(self, **changes: Any) -> FetchError:
        fields = {"subject": self.subject, "url": self.url, "cache": self.cache, "failure": self.failure,
                  "remedies": self.remedies, "name": self.name, "cache_label": self.cache_label,
                  "also_searched": self.also_searched, "notes": self.notes}
        fields.update(changes)
        subject = fields.pop("subject")
        return FetchError(subject, **fields)

    def about(self, subject: str, remedies: Sequence[str], **changes: Any) -> FetchError:
        """The same failure told about ``subject`` (a weights name, a checkpoint) with its own remedies."""
        return self._replace(subject=subject, remedies=tuple(remedies), **changes)

    def or_pass(self, flag: str) -> FetchError:
        """The same error with one more remedy: the caller's option for a local file (``--reg-weights FILE``)."""
        return self._replace(remedies=(*self.remedies, f"pass {flag}"))


@contextmanager
def suggesting(flags: str | Mapping[str, str]) -> Iterator[None]:
    """Inside, a :class:`FetchError` gains the caller's option for giving the file by hand.

    ``flags`` is one option (``"--reg-weights FILE"``) or one per weights/checkpoint name
    (``{"inception-v3-fid": "--inception-weights FILE"}``); an error about a name not in the mapping
    passes unchanged.
    """
    try:
        yield
    except FetchError as exc:
        flag = flags if isinstance(flags, str) else flags.get(exc.name or "")
        if not flag:
            raise
        raise exc.or_pass(flag) from None


def _lookup(host: str, port: int, timeout: float) -> list[Any] | str:
    """``getaddrinfo`` bounded by ``timeout`` (it has no timeout of its own): addresses, or why there are none."""
    found: dict[str, Any] = {}

    def work() -> None:
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            found["error"] = exc

    # A daemon thread: a resolver that never answers is abandoned, not waited for.
    thread = threading.Thread(target=work, name="fewshot-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if "addresses" in found:
        return found["addresses"]
    if "error" in found:
        return f"host {host} does not resolve ({getattr(found['error'], 'strerror', None) or found['error']})"
    return f"host {host} did not resolve within {timeout:g} s"


def unreachable_reason(url: str, *, dns_timeout: float = DNS_TIMEOUT_S,
                       connect_timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when a TCP connection to ``url``'s host (or its proxy) opens now, else why not, in a few words.

    One lookup and one connection, each bounded: what a client would meet on its first try, without its retries.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxies = urllib.request.getproxies()  # the same environment urllib and huggingface_hub's client read
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        host, port = proxied.hostname or "", proxied.port or 8080
    if not host:
        return f"{url} names no host"
    addresses = _lookup(host, port, dns_timeout)
    if isinstance(addresses, str):
        return addresses
    last = "no address"
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(connect_timeout)
                sock.connect(address)
            return None
        except TimeoutError:
            last = f"no answer within {connect_timeout:g} s"
        except OSError as exc:
            last = exc.strerror or str(exc)
    return f"no connection to {host}:{port} ({last})"


def _generic_remedies(url: str, dest: Path) -> list[str]:
    return [f"download {url} where there is network and copy it to {dest}", "give the downloaded file's local path"]


# --- plain URL downloads -----------------------------------------------------------------------------


class _Interrupted(Exception):
    """The transfer stopped early; the .part file keeps what arrived."""


def url_cache_path(url: str, root: Path | None = None) -> Path:
    """Where a URL's file lives in the cache: one folder per URL so equal file names cannot collide."""
    leaf = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    if leaf in ("", ".", ".."):  # "." and ".." would name the URL's folder or its parent, not a file in it
        leaf = "download"
    key = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:16]  # argv may hold any bytes
    return (root or settings.checkpoints_dir() / "downloads") / key / leaf


def _fetch_into(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"fewshot/{__version__}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    dest = part.with_name(part.name[: -len(".part")])
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the .part file is already complete
            return
        raise FetchError(dest.name, url=url, cache=dest, failure=f"{url} answered HTTP {exc.code} {exc.reason}",
                         remedies=_generic_remedies(url, dest)) from None
    except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(dest.name, url=url, cache=dest, failure=f"{url} cannot be fetched: {reason}",
                         remedies=_generic_remedies(url, dest)) from None
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
    and deleted when the expected hash does not match, and moved into place atomically. A file that is
    not cached and cannot be fetched (offline, a host that does not resolve or answer, an HTTP error)
    raises :class:`FetchError` at once: a host is probed before the transfer, and only a transfer that
    started is retried.
    """
    dest = dest or url_cache_path(url)
    offline = settings.offline() if offline is None else offline
    if dest.exists():
        digest = cached_sha256(dest)
        if hash_matches(digest, sha256, sha256_prefix) is not False:
            return dest
        remove_cached(dest)  # a cached file that no longer matches is useless; fetch it again
        if offline:
            raise FetchError(dest.name, url=url, cache=dest, remedies=_generic_remedies(url, dest),
                             failure=f"{OFFLINE_REASON}, so {url} was not fetched (the cached copy did not match "
                             "its sha256 and was removed)")
    if offline:
        raise FetchError(dest.name, url=url, cache=dest, failure=f"{OFFLINE_REASON}, so {url} was not fetched",
                         remedies=_generic_remedies(url, dest))
    unreachable = unreachable_reason(url)
    if unreachable:  # fail now, with the host's reason, rather than after urllib's own timeout
        raise FetchError(dest.name, url=url, cache=dest, failure=f"{url} cannot be fetched: {unreachable}",
                         remedies=_generic_remedies(url, dest))
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
    try:
        ref.encode("utf-8")  # argv bytes that are not UTF-8 arrive as surrogates: no Hub name holds them
    except UnicodeEncodeError:
        raise FewshotError(f"hf:// reference {ref!r} holds bytes that are not UTF-8 text",
                           hint="write hf://org/repo/path/to/file.pkl[@revision]") from None
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


def hf_cache_folder(ref: HubFileRef) -> Path:
    """The repository's folder in the Hugging Face cache (``models--org--repo``)."""
    return settings.hf_hub_cache() / f"{ref.repo_type}s--{ref.repo_id.replace('/', '--')}"


def hf_file_url(ref: HubFileRef) -> str:
    """The address huggingface_hub fetches ``ref`` from (``{endpoint}/{repo}/resolve/{revision}/{file}``)."""
    from huggingface_hub import hf_hub_url

    try:
        return hf_hub_url(ref.repo_id, ref.filename, repo_type=ref.repo_type, revision=ref.revision,
                          endpoint=settings.hf_endpoint())
    except ValueError as exc:  # huggingface_hub's HFValidationError: a repo id no Hub accepts
        raise FewshotError(f"not a Hub repository: {ref.repo_id!r} ({str(exc).splitlines()[0]})",
                           hint="write hf://org/repo/path/to/file.pkl[@revision]") from None


def _checkpoint_remedies(ref: str, url: str, copy: str, flag: str | None) -> list[str]:
    """How to get a checkpoint onto a machine that cannot fetch it: fetch elsewhere and copy, or give the file."""
    local = f"pass it as {flag}" if flag else f"give its path in place of {ref!r}"
    return [f"on a machine with network run `fewshot download {ref}`, then {copy}", f"download {url} yourself and {local}"]


def _hf_remedies(ref: str, hub_ref: HubFileRef, url: str, flag: str | None) -> list[str]:
    copy = (f"copy {hf_cache_folder(hub_ref).name} from its Hugging Face cache ({HF_CACHE_NOTE}) "
            f"into {settings.hf_hub_cache()} here")
    return _checkpoint_remedies(ref, url, copy, flag)


def hf_download(ref: str | HubFileRef, *, offline: bool | None = None, flag: str | None = None) -> Path:
    """Fetch one file through huggingface_hub's cache; offline, only the cache is consulted.

    Online, the endpoint is probed first (:func:`unreachable_reason`): when it cannot be reached only
    the cache is consulted, so huggingface_hub's retry loop never runs for a host that is not there.
    ``flag`` names the caller's option for a local file instead, for the hint of a :class:`FetchError`.
    """
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
    url = hf_file_url(hub_ref)
    failure = f"{OFFLINE_REASON}, so {url} was not fetched" if offline else ""
    if not offline:
        unreachable = unreachable_reason(url)
        if unreachable:
            failure = f"{url} cannot be fetched: {unreachable}"
    kwargs: dict[str, Any] = {
        "repo_id": hub_ref.repo_id, "filename": hub_ref.filename, "revision": hub_ref.revision,
        "repo_type": hub_ref.repo_type, "cache_dir": str(settings.hf_hub_cache()), "local_files_only": bool(failure),
        "library_name": "fewshot", "library_version": __version__,
    }
    endpoint = settings.hf_endpoint()
    if endpoint:
        kwargs["endpoint"] = endpoint

    def fetch_error(what: str) -> FetchError:
        return FetchError(str(hub_ref), url=url, cache=hf_cache_folder(hub_ref), failure=what,
                          cache_label="the Hugging Face cache", remedies=_hf_remedies(str(hub_ref), hub_ref, url, flag))

    try:
        return Path(hf_hub_download(**kwargs))
    except LocalEntryNotFoundError:
        raise fetch_error(failure or f"{url} cannot be fetched: the Hub did not answer") from None
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
        raise fetch_error(f"{url} answered an error: {str(exc).splitlines()[0]}") from None
    except (OSError, ValueError) as exc:
        raise fetch_error(f"{url} cannot be fetched: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    except Exception as exc:
        if not _is_network_error(exc):
            raise
        raise fetch_error(f"{url} cannot be fetched: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


# --- checkpoints -----------------------------------------------------------------------------------------


def is_url(ref: str) -> bool:
    return ref.startswith(("https://", "http://"))


def _url_remedies(ref: str, url: str, dest: Path, flag: str | None) -> list[str]:
    try:
        where = str(dest.relative_to(settings.home_dir()))
    except ValueError:  # a destination outside fewshot's cache: say the whole path
        where = str(dest)
    copy = f"copy {where} from its fewshot cache ({FEWSHOT_CACHE_NOTE}) to the same place here"
    return _checkpoint_remedies(ref, url, copy, flag)


def fetch_checkpoint_source(ref: str, *, offline: bool | None = None, flag: str | None = None) -> tuple[Path, str | None]:
    """A local copy of what ``ref`` names (pickle or bundle), and its verified sha256 when known.

    A file that cannot be fetched raises :class:`FetchError`; ``flag`` (``"--base PATH"``) names the
    caller's option for giving a local file instead, for its hint.
    """
    offline = settings.offline() if offline is None else offline
    try:
        local = Path(ref).expanduser()
    except (RuntimeError, ValueError):  # ~user of an unknown user (or a NUL in it): no home folder to expand
        local = Path(ref)
    if local.is_file():
        return local, None
    if local.is_dir():
        raise FewshotError(f"{ref} is a folder, not a checkpoint file")
    if ref.startswith("hf://"):
        try:
            return hf_download(ref, offline=offline, flag=flag), None
        except FetchError as exc:
            raise exc.about(f"checkpoint {ref}", exc.remedies, name=ref) from None
    if is_url(ref):
        try:
            path = download_url(ref, offline=offline)
        except FetchError as exc:
            raise exc.about(f"checkpoint {exc.cache.name}", _url_remedies(ref, ref, exc.cache, flag), name=ref) from None
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
        subject = f"checkpoint {ref!r} ({entry.filename})"
        if entry.url:
            try:
                path = download_url(entry.url, sha256=entry.sha256, offline=offline)
            except FetchError as exc:
                if not entry.hf:
                    raise exc.about(subject, _url_remedies(ref, entry.url, exc.cache, flag), name=ref) from None
            except FewshotError as exc:  # interrupted, or a hash mismatch: its own hint says what to do
                if not entry.hf:
                    raise FewshotError(f"checkpoint {ref!r}: {exc.message}", hint=exc.hint) from None
            else:
                return path, cached_sha256(path)
        hub_ref = parse_hf_ref(entry.hf)  # type: ignore[arg-type]
        try:
            path = hf_download(hub_ref, offline=offline)
        except FetchError as exc:
            raise exc.about(subject, _hf_remedies(ref, hub_ref, exc.url, flag), name=ref) from None
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


def resolve_checkpoint(ref: str, *, offline: bool | None = None, flag: str | None = None) -> Path:
    """A name, ``hf://`` reference, URL or local path -> a local fewshot safetensors bundle.

    Downloads go through the caches (fewshot's for URLs and names, huggingface_hub's for ``hf://``);
    offline (argument, or ``settings.offline()``), only cached files are used. Pickles are converted
    once, keyed by their sha256, and the converted bundle is returned from then on. A checkpoint that
    cannot be fetched raises one :class:`FetchError` naming the file, its address and its cache path;
    its hint says how to bring the file over, and offers ``flag`` (the caller's option for a local
    file, e.g. ``"--base PATH"``) when given.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise FewshotError("empty checkpoint reference")
    source, digest = fetch_checkpoint_source(ref.strip(), offline=offline, flag=flag)
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


def _run_dir_of(bundle: Path) -> Path | None:
    """The run folder a bundle belongs to (``run/best.safetensors``, ``run/checkpoints/snapshot-*``), if any."""
    folders = [bundle.parent] + ([bundle.parent.parent] if bundle.parent.name == "checkpoints" else [])
    for folder in folders:
        if any((folder / name).is_file() for name in ("config.toml", "config.json")):
            return folder
    return None


def find_push_source(path: Path) -> PushSource:
    """A bundle file, or a run folder (its best/final/latest or newest ``*.safetensors``)."""
    path = Path(path)
    if path.is_file():
        run_dir = _run_dir_of(path)
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


def _data_record(training: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """The training images' record (``{"images": N, "sha256": ...}``) a run's snapshots carry: the bundle's
    own, else the newest snapshot's in its run folder (exported best/final bundles do not repeat it)."""
    from .checkpoint import read_header

    if isinstance(training.get("data"), dict):
        return training["data"]
    if run_dir is None:
        return {}
    for snapshot in sorted((run_dir / "checkpoints").glob("snapshot-*.safetensors"), reverse=True):
        try:
            record = (read_header(snapshot).training or {}).get("data")
        except FewshotError:  # a damaged snapshot says nothing; an older one may
            continue
        if isinstance(record, dict):
            return record
    return {}


def model_card_fields(source: PushSource, *, base: str | None = None, preset: str | None = None,
                      data_size: int | None = None, licence: str | None = None) -> dict[str, Any]:
    """What the card says: base model, preset, data size, resolution, metrics, licence (inherited from the base).

    Each comes from the arguments, else the run: the bundle's training record and provenance, the run
    folder's config.toml, the images record of its snapshots; the licence from the base's registry entry.
    """
    from .checkpoint import read_header

    header = read_header(source.bundle)
    training, config, prov = header.training or {}, source.config, header.provenance or {}
    base = _first(base, training.get("base"), _dig(config, "resume"), _dig(config, "base"), _dig(config, "transfer", "base"),
                  _dig(training, "config", "resume"), _dig(training, "config", "base"), prov.get("base"), prov.get("source"))
    preset = _first(preset, config.get("preset"), training.get("preset"), _dig(training, "config", "preset"))
    data = _data_record(training, source.run_dir)
    data_size = _first(data_size, data.get("images"), _dig(config, "data", "size"), config.get("data_size"),
                       training.get("data_size"), _dig(training, "training_set_kwargs", "max_size"))
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
        "licence_inherited": not licence and entry is not None and bool(entry.licence),
        "licence_url": entry.licence_url if entry else None,
        "resolution": spec.init_kwargs.get("img_resolution") if spec else None,
        "data_sha256": data.get("sha256"),
        # The run's config is known and names no base: trained from scratch (not merely unrecorded).
        "from_scratch": base is None and bool(config or training.get("config")),
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
    resolution = fields.get("resolution")
    lines += [f"# {repo_id.split('/')[-1]}", "",
              f"A StyleGAN2 generator {'fine-tuned' if base else 'trained'} with [fewshot](https://pypi.org/project/fewshot/)"
              + (f" ({resolution}x{resolution} px)." if resolution else "."), ""]
    lines += ["| | |", "|---|---|",
              f"| base model | {base or ('none (trained from scratch)' if fields.get('from_scratch') else 'unknown')}"
              + (f" ({entry.description})" if entry else "") + " |",
              f"| preset | {fields.get('preset') or 'unknown'} |",
              f"| training images | {fields.get('data_size') or 'unknown'} |",
              f"| resolution | {resolution}x{resolution} |" if resolution else "| resolution | unknown |",
              f"| networks | {', '.join(fields['networks'])} |"]
    for name, value in (fields.get("metrics") or {}).items():
        lines.append(f"| {name} | {value} |")
    lines += ["", "![samples](samples.png)" if "samples.png" in files else "", "",
              "## Use", "", "```bash", f"fewshot sample hf://{repo_id}/{files[0]} --seeds 0-15", "```", "",
              "## Licence", ""]
    if licence == "unknown":
        why = "Trained from scratch, so no licence is inherited" if fields.get("from_scratch") else "Unknown"
        lines.append(f"{why}: give one with `fewshot push --license`. The training images keep their own licence.")
    else:
        lines.append(("Inherited from the base model: " if fields.get("licence_inherited") else "") + licence
                     + (f" ({fields['licence_url']})" if fields.get("licence_url") else "")
                     + ". The training images keep their own licence.")
    lines.append("")
    return "\n".join(lines)


def sample_grid(bundle_path: Path, out: Path, seeds: list[int], psi: float = 1.0, columns: int = 4) -> Path:
    """A PNG grid of the generator's images for ``seeds`` (latents drawn as the official generate.py does)."""
    import numpy as np
    import torch
    from PIL import Image

    from .checkpoint import load_bundle, read_header
    from .synthesis import inference_kwargs

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
