"""Checkpoint references (a registry name, hf://, a URL, a file) -> verified local fewshot bundles."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import settings
from ..errors import FewshotError
from ..pathkind import path_kind
from .fetch import (
    FEWSHOT_CACHE_NOTE,
    FetchError,
    _checkpoint_remedies,
    _hf_remedies,
    download_url,
    hf_download,
    parse_hf_ref,
)
from .registry import cached_sha256, checkpoint_registry, hash_matches, sha256_of

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass


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
    kind = path_kind(local)
    if kind == "file":
        return local, None
    if kind == "folder":
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
            path = Path(__file__).resolve().parents[1] / entry.package  # relative to the fewshot package
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
        raise FewshotError(f"no such checkpoint file: {ref}", hint=_missing_file_hint(ref))
    raise FewshotError(
        f"unknown checkpoint reference {ref!r}",
        hint="use a name (" + ", ".join(sorted(entries)) + "), hf://org/repo/file[@rev], an https:// URL or a file",
    )


def _missing_file_hint(ref: str) -> str | None:
    """For a file missing from a run folder (a run stopped before its end has no final.safetensors, only
    snapshots): the checkpoints that are there."""
    try:
        folder = Path(ref).expanduser().parent
        if not (folder / "checkpoints").is_dir():  # only a run folder: elsewhere other files are no suggestion
            return None
        found = sorted(p for pattern in ("*.safetensors", "checkpoints/*.safetensors") for p in folder.glob(pattern))
    except (OSError, RuntimeError, ValueError):  # ~user of no user, a NUL byte, an unreadable folder: no hint
        return None
    if not found:
        return None
    listed = ", ".join(str(p) for p in found[-3:])
    return (f"{folder} has {listed}" + (f" (and {len(found) - 3} more)" if len(found) > 3 else "")
            + f"; a run folder works too ({folder}: its best, final or latest snapshot)")


def converted_path(source_sha256: str) -> Path:
    return settings.checkpoints_dir() / "converted" / f"{source_sha256}.safetensors"


def ensure_bundle(source: Path, sha256: str | None = None) -> Path:
    """A fewshot bundle for ``source``: itself when it is one, else its converted copy (made once)."""
    from ..checkpoint import FOREIGN_KINDS, convert_pickle, detect_format, not_a_checkpoint, read_header

    kind = detect_format(source)
    if kind == "safetensors":
        read_header(source)  # refuses safetensors files that are not fewshot bundles
        return source
    if kind in FOREIGN_KINDS:  # an official pickle or a rosinality .pt
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
    raise not_a_checkpoint(source, kind)


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


