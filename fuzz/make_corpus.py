"""Seed corpora for the harnesses, built in code: `python -m fuzz.make_corpus [FOLDER]`.

Writes ``FOLDER/<harness>/<seed name>`` (default ``fuzz/out/seeds``, ignored by git; nothing binary is
committed). A seed named ``ok-*`` must load, one named ``bad-*`` must be refused with a FewshotError; the
default test suite checks both, so a harness that stopped reaching its reader would be noticed.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HARNESSES = ("bundle", "pickle", "hub", "images")


def _tiny_networks(seed: int = 0) -> dict:
    """An 8 px generator and discriminator with 4 channels: real architectures, a few hundred weights each."""
    import torch

    from fewshot.nets import Discriminator, Generator

    torch.manual_seed(seed)
    G = Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=3, mapping_kwargs={"num_layers": 1},
                  synthesis_kwargs={"channel_base": 16, "channel_max": 4})
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=16, channel_max=4)
    return {"G": G.eval(), "D": D.eval()}


def _header_json(bundle: bytes) -> bytes:
    (size,) = struct.unpack("<Q", bundle[:8])
    return bundle[8:8 + size].rstrip()


def bundle_seeds() -> dict[str, bytes]:
    import torch
    from safetensors.torch import save

    from fewshot.checkpoint import save_bundle

    nets = _tiny_networks()
    with tempfile.TemporaryDirectory() as tmp:
        only = save_bundle(Path(tmp) / "a.safetensors", {"G_ema": nets["G"]}).read_bytes()
        full = save_bundle(
            Path(tmp) / "b.safetensors", {"G": nets["G"], "G_ema": nets["G"], "D": nets["D"]},
            provenance={"source": "make_corpus"}, training={"kimg": 1, "augment_p": 0.25},
            state_tensors={"opt.G.exp_avg": torch.arange(4.0)},
        ).read_bytes()
    header = json.loads(_header_json(only))
    header["__metadata__"]["format_version"] = "2"
    return {
        "ok-G_ema": only,
        "ok-G-G_ema-D-state": full,
        "ok-header-G_ema": _header_json(only),
        "ok-header-G-G_ema-D-state": _header_json(full),
        "bad-version-2": json.dumps(header).encode(),
        "bad-plain-safetensors": save({"x": torch.zeros(2)}, metadata={"format": "other"}),
        "bad-truncated": only[: len(only) // 2],
    }


def pickle_seeds() -> dict[str, bytes]:
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from official_format import dump_official, make_malicious_pickle, make_official_pickle, make_tf_pickle
    finally:
        sys.path.remove(str(REPO / "tests"))
    from fuzz.fuzz_pickle import MARKER

    nets = _tiny_networks()
    G, D = nets["G"], nets["D"]
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        def written(name: str, path: Path) -> None:
            out[name] = path.read_bytes()

        written("ok-published-G_ema", make_official_pickle(Path(tmp) / "1", G_ema=G, snapshot=False))
        written("ok-snapshot", make_official_pickle(Path(tmp) / "2", G=G, D=D, G_ema=G, augment_p=0.3))
        written("ok-snapshot-protocol-4", make_official_pickle(Path(tmp) / "3", G_ema=G, D=D, protocol=4))
        written("bad-runs-os-system", make_malicious_pickle(Path(tmp) / "4", MARKER, G=G))
        written("bad-tensorflow-era", make_tf_pickle(Path(tmp) / "5"))
        written("bad-no-networks", dump_official(Path(tmp) / "6", {"training_set_kwargs": {"resolution": 8}}))
    return out


def hub_seeds() -> dict[str, bytes]:
    from fewshot.hub import checkpoint_registry

    refs = {
        "ok-local-bundle": "local.safetensors",
        "ok-local-pickle": "./local.pkl",
        "bad-hf-model": "hf://org/repo/network.pkl",
        "bad-hf-dataset-revision": "hf://datasets/org/repo/sub/dir/file.safetensors@main",
        "bad-hf-pr-ref": "hf://org/repo/f.pkl@refs/pr/1",
        "bad-hf-space-commit": "hf://spaces/o/r/a/b.pkl@0123456789abcdef0123456789abcdef01234567",
        "bad-hf-incomplete": "hf://org/repo",
        "bad-url": "https://example.com/models/network-snapshot-000100.pkl",
        "bad-url-query": "http://127.0.0.1:8000/a/b.safetensors?download=1",
        "bad-missing-file": "missing/dir/net.pkl",
        "bad-home-file": "~/nothing.safetensors",
        "bad-folder": ".",
        "bad-unknown-name": "no-such-network",
    }
    for name in sorted(checkpoint_registry())[:3]:
        refs[f"bad-registry-{name}"] = name  # offline and not cached
    return {name: ref.encode() for name, ref in refs.items()}


def _picture(size: tuple[int, int] = (12, 9)):
    import numpy as np
    from PIL import Image

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 2 * 255], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def _encoded(img, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_bytes(mode: str = "RGB", size: tuple[int, int] = (8, 8)) -> bytes:
    import numpy as np
    from PIL import Image

    img = _picture(size)
    if mode == "I;16":
        return _encoded(Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257), "PNG")
    if mode == "P":
        return _encoded(img.convert("P", palette=Image.Palette.ADAPTIVE, colors=4), "PNG", transparency=0)
    return _encoded(img.convert(mode), "PNG")


def image_seeds() -> dict[str, bytes]:
    from PIL import Image

    from fewshot.data import IMAGE_SUFFIXES

    def setting(suffix: str, crop: str = "center", as_zip: bool = False) -> bytes:
        return bytes([IMAGE_SUFFIXES.index(suffix) << 2 | (crop == "pad") << 1 | as_zip])

    img = _picture()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", png_bytes("RGB"))
        zf.writestr("sub/b.jpg", _encoded(img, "JPEG", quality=80))
        zf.writestr("notes.txt", "not an image")
    return {
        "ok-png-rgb": setting(".png") + png_bytes("RGB", (12, 9)),
        "ok-png-rgba-pad": setting(".png", "pad") + png_bytes("RGBA", (9, 12)),
        "ok-png-palette-transparent": setting(".png") + png_bytes("P"),
        "ok-png-gray16": setting(".png") + png_bytes("I;16"),
        "ok-jpeg-rgb": setting(".jpg") + _encoded(img, "JPEG", quality=80),
        "ok-jpeg-cmyk": setting(".jpeg") + _encoded(img.convert("CMYK"), "JPEG"),
        "ok-jpeg-exif-rotated": setting(".jpg", "pad") + _encoded(img, "JPEG", exif=exif.tobytes()),
        "ok-webp-lossy": setting(".webp") + _encoded(img, "WEBP", quality=50),
        "ok-webp-lossless-alpha": setting(".webp") + _encoded(img.convert("RGBA"), "WEBP", lossless=True),
        "ok-gif": setting(".gif") + _encoded(img.convert("P"), "GIF"),
        "ok-bmp": setting(".bmp") + _encoded(img, "BMP"),
        "ok-tiff": setting(".tif") + _encoded(img, "TIFF", compression="tiff_lzw"),
        "ok-zip": setting(".png", as_zip=True) + archive.getvalue(),
        "ok-zip-pad": setting(".png", "pad", as_zip=True) + archive.getvalue(),
        "bad-text": setting(".png") + b"this is not an image\n",
        "bad-empty-zip": setting(".png", as_zip=True) + b"PK\x05\x06" + bytes(18),
    }


SEEDS = {"bundle": bundle_seeds, "pickle": pickle_seeds, "hub": hub_seeds, "images": image_seeds}


def write_seeds(folder: Path) -> None:
    for harness, build in SEEDS.items():
        target = folder / harness
        target.mkdir(parents=True, exist_ok=True)
        for old in target.iterdir():
            old.unlink()
        for name, data in build().items():
            (target / name).write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    from fuzz.common import SEEDS_DIR

    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0]) if args else SEEDS_DIR
    write_seeds(folder)
    for harness in HARNESSES:
        print(f"{folder / harness}: {len(list((folder / harness).iterdir()))} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
