"""Fuzz image decoding: load_images / infer_resolution on a folder or a zip holding fuzzed bytes.

The first input byte chooses the setting, the rest is the file: bit 0 set means the rest is a whole .zip
source, else it is one image file (suffix from bits 2-4) in a folder beside a valid 8x8 PNG; bit 1 picks
``crop="pad"`` over ``"center"``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fuzz import common

NAME = "images"
INSTRUMENT = ("fewshot", "PIL", "zipfile")
RESOLUTION = 8

_root: Path | None = None
_good_png = b""


def load() -> None:
    import zipfile  # noqa: F401

    import PIL.Image  # noqa: F401

    import fewshot.data  # noqa: F401


def prepare(root: Path) -> None:
    from fuzz import make_corpus

    global _root, _good_png
    _root = root
    _good_png = make_corpus.png_bytes("RGB")


def source_for(data: bytes, root: Path) -> tuple[Path, str]:
    """Write the source an input stands for under ``root``; returns it and the crop mode."""
    from fewshot.data import IMAGE_SUFFIXES

    setting, body = (data[0], data[1:]) if data else (0, b"")
    crop = "pad" if setting & 2 else "center"
    if setting & 1:
        source = root / "set.zip"
        source.write_bytes(body)
        return source, crop
    source = common.fresh_dir(root / "folder")
    (source / "good.png").write_bytes(_good_png)
    (source / f"fuzzed{IMAGE_SUFFIXES[(setting >> 2) % len(IMAGE_SUFFIXES)]}").write_bytes(body)
    return source, crop


def _load(source: Path, crop: str) -> None:
    from fewshot.data import ImageStream, infer_resolution, load_images

    infer_resolution(source, crop=crop)
    if source.suffix == ".zip":
        ImageStream(source, RESOLUTION, crop).listing_key()
    imageset = load_images(source, RESOLUTION, crop=crop, progress=False)
    assert tuple(imageset.images.shape[1:]) == (3, RESOLUTION, RESOLUTION), imageset.images.shape
    assert len(imageset.names) == len(imageset) >= 2


def target(data: bytes) -> str:
    assert _root is not None, "prepare() first"
    source, crop = source_for(data, _root)
    return common.contract(lambda: _load(source, crop))


if __name__ == "__main__":
    sys.exit(common.main(sys.modules[__name__]))
