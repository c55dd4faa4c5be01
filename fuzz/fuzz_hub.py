"""Fuzz checkpoint references: hf:// parsing and the name / URL / path classification of resolve_checkpoint.

Offline only (FEWSHOT_OFFLINE=1, caches in the sandbox, sockets refused): the parsing is fuzzed, never the
network. The input bytes are decoded as the command line decodes argv (UTF-8 with surrogate escapes).
Harness checks beyond the contract: a parsed hf:// reference prints as a reference that parses to the same
parts, and a URL's cache file lies inside its own cache folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fuzz import common

NAME = "hub"
INSTRUMENT = ("fewshot",)
# atheris reports compared strings to libFuzzer as UTF-8 and raises on the surrogate escapes that argv-like
# input holds (a crash in the fuzzer, not in fewshot); edge coverage and the dictionary still guide it.
TRACE_COMPARISONS = False
LOCAL_FILES = ("local.safetensors", "local.pkl")  # written by prepare() into the sandbox; seeds name them
DICTIONARY = (
    b"hf://", b"datasets/", b"spaces/", b"models/", b"@", b"refs/pr/", b"refs/heads/", b"https://", b"http://",
    b"~", b"~root/", b"..", b"./", b"/", b"//", b"?", b"#", b"%2F", b"\\", b".pkl", b".safetensors", b".pt",
    *(name.encode() for name in LOCAL_FILES),
)

_root: Path | None = None


def load() -> None:
    import fewshot.checkpoint  # noqa: F401
    import fewshot.hub  # noqa: F401


def prepare(root: Path) -> None:
    from fuzz import make_corpus

    global _root
    _root = root
    (root / "local.safetensors").write_bytes(make_corpus.bundle_seeds()["ok-G_ema"])
    (root / "local.pkl").write_bytes(make_corpus.pickle_seeds()["ok-published-G_ema"])


def _check_hf(ref: str) -> None:
    from fewshot.hub import parse_hf_ref

    parsed = parse_hf_ref(ref)
    again = parse_hf_ref(str(parsed))
    assert again == parsed, f"{ref!r} parses to {parsed!r}, which prints as {str(parsed)!r}, which parses to {again!r}"


def _check_url(ref: str) -> None:
    from fewshot.hub import url_cache_path

    root = Path("downloads-root")
    path = url_cache_path(ref, root)
    assert path.parent.parent == root and path.name not in ("", ".", ".."), f"{ref!r} caches at {path}"


def _resolve(ref: str) -> None:
    from fewshot.hub import is_url, registry_entry_for, resolve_checkpoint

    if ref.startswith("hf://"):
        common.contract(lambda: _check_hf(ref))
    if is_url(ref):
        _check_url(ref)
    registry_entry_for(ref)
    resolve_checkpoint(ref, offline=True)


def target(data: bytes) -> str:
    ref = data.decode("utf-8", "surrogateescape")
    # A reference is quoted back in its error, line breaks included: only then may the message span lines.
    return common.contract(lambda: _resolve(ref), one_line=not any(c in ref for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))


if __name__ == "__main__":
    sys.exit(common.main(sys.modules[__name__]))
