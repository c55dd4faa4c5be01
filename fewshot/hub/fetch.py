"""Fetching files: failed fetches told in one error with remedies, URL downloads, hf:// references."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__, settings
from ..errors import FewshotError
from .registry import DOWNLOAD_CHUNK, cached_sha256, hash_matches, remove_cached, sha256_of, write_hash_record

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass


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


def _is_network_error(exc: BaseException) -> bool:
    """A transport failure of huggingface_hub's HTTP client (httpx, or the httpx2 of newer releases), which is
    not an OSError: matched by class name so no client version is imported here."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TransportError", "NetworkError", "TimeoutException", "ConnectError"})
