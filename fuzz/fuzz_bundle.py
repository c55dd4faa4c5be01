"""Fuzz the safetensors bundle reader: `fewshot info FILE` (header only) and loading the networks.

An input is either a whole file (the 8-byte header length, the JSON header, tensor bytes), or, when it starts
with ``{``, just the JSON header: the harness then writes the length prefix and enough zero bytes for the
tensors the header describes, so mutations reach the metadata and network checks instead of stopping at the
length field.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

from fuzz import common

NAME = "bundle"
INSTRUMENT = ("fewshot",)
MAX_PADDING = 1 << 20  # zero tensor bytes appended to a header-only input (its tensors are tiny or refused)
DICTIONARY = (
    b'"__metadata__"', b'"data_offsets"', b'"shape"', b'"dtype"', b'"F32"', b'"F16"', b'"I64"', b'"BOOL"',
    b'"format"', b'"fewshot.bundle"', b'"format_version"', b'"networks"', b'"provenance"', b'"training"',
    b'\\"class\\"', b'\\"init_kwargs\\"', b'\\"Generator\\"', b'\\"Discriminator\\"', b'\\"num_layers\\"',
    b'\\"img_resolution\\"', b'\\"channel_max\\"', b"1e400", b"-1", b"null", b"[]", b"{}",
)

_path: Path | None = None


def load() -> None:
    import fewshot.checkpoint  # noqa: F401
    import fewshot.nets  # noqa: F401


def prepare(root: Path) -> None:
    global _path
    _path = root / "input.safetensors"


def file_bytes(data: bytes) -> bytes:
    """The file a fuzz input stands for (see the module docstring)."""
    if not data.startswith(b"{"):
        return data
    end = 0
    try:
        header = json.loads(data)
        if isinstance(header, dict):
            for info in header.values():
                if isinstance(info, dict) and isinstance(info.get("data_offsets"), list) and info["data_offsets"]:
                    value = info["data_offsets"][-1]
                    if isinstance(value, int):
                        end = max(end, value)
    except (ValueError, RecursionError):
        pass
    return struct.pack("<Q", len(data)) + data + bytes(min(max(end, 0), MAX_PADDING))


def _info_then_load(path: Path) -> None:
    from fewshot.checkpoint import load_checkpoint, read_header

    header = read_header(path)  # what `fewshot info` shows
    summary = {name: {"class": spec.class_name, "init_kwargs": spec.init_kwargs, "params": header.num_params(name)}
               for name, spec in header.specs.items()}
    json.dumps({"networks": summary, "provenance": header.provenance, "training": header.training or {}}, default=str)
    bundle = load_checkpoint(path)
    assert set(bundle.networks) == set(header.specs)
    for name, net in bundle.networks.items():  # what loaded is what the header promised
        for key, value in net.state_dict().items():
            assert list(value.shape) == header.tensor_shapes[f"{name}.{key}"], (name, key)


def target(data: bytes) -> str:
    assert _path is not None, "prepare() first"
    _path.write_bytes(file_bytes(data))
    return common.contract(lambda: _info_then_load(_path))


if __name__ == "__main__":
    sys.exit(common.main(sys.modules[__name__]))
