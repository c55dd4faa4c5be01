"""Fuzz the safe importer of official stylegan2-ada-pytorch pickles (`fewshot info`/`convert` on a .pkl).

Beyond the contract, a harness check: nothing in the file ever runs. One seed is a pickle whose load would
call ``os.system`` to create a marker file; after every input the marker must still be absent.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fuzz import common

NAME = "pickle"
INSTRUMENT = ("fewshot",)
MARKER = "executed-marker"  # make_corpus's malicious seed would `touch` this file (relative: the sandbox root)

_path: Path | None = None
_marker: Path | None = None


def load() -> None:
    import fewshot.checkpoint  # noqa: F401
    import fewshot.official_pickle  # noqa: F401


def prepare(root: Path) -> None:
    global _path, _marker
    _path, _marker = root / "input.pkl", root / MARKER


def _import(path: Path) -> None:
    from fewshot.checkpoint import bundle_from_pickle

    bundle, _ = bundle_from_pickle(path)  # what `fewshot info` and `convert` do with a pickle
    assert bundle.networks


def target(data: bytes) -> str:
    assert _path is not None and _marker is not None, "prepare() first"
    _path.write_bytes(data)
    try:
        return common.contract(lambda: _import(_path))
    finally:
        if _marker.exists():
            raise common.Finding("the pickle ran code: the marker file exists")


if __name__ == "__main__":
    sys.exit(common.main(sys.modules[__name__]))
