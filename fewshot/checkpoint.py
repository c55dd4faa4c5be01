"""Checkpoint bundles: safetensors files that carry their own config and cannot run code.

A bundle holds any of the networks ``G``, ``G_ema``, ``D`` (tensors named ``<net>.<state_dict
key>``), optional extra tensors (``state.*``: optimizer moments, RNG state, ...), and string
metadata:

- ``format`` = ``fewshot.bundle``, ``format_version``, ``fewshot_version``
- ``networks``: JSON ``{name: {"class": ..., "init_kwargs": {...}}}``, enough to rebuild each net
- ``provenance``: JSON (source file, its sha256, conversion date, tool)
- ``training``: JSON (anything a trainer wants to keep: config, counters, augment p)

Writes are atomic: temp file in the same folder, fsync, rename.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import FewshotError

if TYPE_CHECKING:  # torch loads lazily: reading a header (`fewshot info`) must stay instant
    import torch
    from torch import nn

FORMAT_NAME = "fewshot.bundle"
FORMAT_VERSION = 1
NETWORK_NAMES = ("G", "G_ema", "D")
STATE_PREFIX = "state."
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass
class NetworkSpec:
    class_name: str
    init_kwargs: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"class": self.class_name, "init_kwargs": self.init_kwargs}


@dataclass
class BundleHeader:
    """Everything in a bundle except the tensor data."""

    path: Path
    specs: dict[str, NetworkSpec]
    provenance: dict[str, Any]
    training: dict[str, Any] | None
    tensor_shapes: dict[str, list[int]]
    format_version: int
    fewshot_version: str

    def num_params(self, net: str) -> int:
        prefix = net + "."
        total = 0
        for key, shape in self.tensor_shapes.items():
            if key.startswith(prefix):
                n = 1
                for s in shape:
                    n *= s
                total += n
        return total


@dataclass
class Bundle:
    """Networks rebuilt from a bundle, plus what else it carried."""

    networks: dict[str, nn.Module]
    specs: dict[str, NetworkSpec]
    provenance: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] | None = None
    state_tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def generator(self) -> nn.Module:
        """The generator to sample from: G_ema when present, else G."""
        for name in ("G_ema", "G"):
            if name in self.networks:
                return self.networks[name]
        raise FewshotError("this checkpoint holds no generator (neither G_ema nor G)")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def network_spec(net: nn.Module) -> NetworkSpec:
    """The class name and constructor kwargs a network was built with."""
    init_kwargs = getattr(net, "init_kwargs", None)
    if init_kwargs is None:
        raise FewshotError(f"{type(net).__name__} does not record its constructor arguments (init_kwargs)")
    return NetworkSpec(type(net).__name__, json.loads(json.dumps(init_kwargs)))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either the old file or the complete new one, never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def save_bundle(
    path: str | Path,
    networks: dict[str, nn.Module],
    provenance: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    state_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write networks (and optional training state) to a safetensors bundle, atomically."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    specs: dict[str, Any] = {}
    for name, net in networks.items():
        if name not in NETWORK_NAMES:
            raise FewshotError(f"bundle network names are {NETWORK_NAMES}, got {name!r}")
        specs[name] = network_spec(net).to_json()
        for key, value in net.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous().clone()
    for key, value in (state_tensors or {}).items():
        tensors[STATE_PREFIX + key] = value.detach().to("cpu").contiguous().clone()

    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "fewshot_version": __version__,
        "networks": json.dumps(specs),
        "provenance": json.dumps(provenance or {}),
    }
    if training is not None:
        metadata["training"] = json.dumps(training)
    path = Path(path)
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def _read_safetensors_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise FewshotError(f"{path}: file is too short to be a checkpoint")
            (size,) = struct.unpack("<Q", raw)
            if size > MAX_HEADER_BYTES or size > path.stat().st_size - 8:
                raise FewshotError(f"{path}: not a safetensors file (or truncated header)")
            header = json.loads(fh.read(size))
            file_size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise FewshotError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise FewshotError(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise FewshotError(f"{path}: not a safetensors file (header is not a JSON object)")
    metadata = header.pop("__metadata__", {}) or {}
    # The header says where each tensor's bytes end; a file shorter than that was cut off
    # (an interrupted copy or download). Checking sizes costs no tensor reads.
    try:
        data_end = max((int(info["data_offsets"][1]) for info in header.values()), default=0)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        raise FewshotError(f"{path}: not a safetensors file (damaged tensor table)") from None
    if 8 + size + data_end > file_size:
        raise FewshotError(
            f"{path}: file is truncated ({file_size:,} bytes, the header promises {8 + size + data_end:,})",
            hint="download or copy it again",
        )
    if not isinstance(metadata, dict):
        raise FewshotError(f"{path}: bundle metadata is damaged")
    return header, metadata


def read_header(path: str | Path) -> BundleHeader:
    """Read a bundle's metadata and tensor shapes without loading tensor data."""
    path = Path(path)
    header, metadata = _read_safetensors_header(path)
    if metadata.get("format") != FORMAT_NAME:
        raise FewshotError(f"{path}: a safetensors file, but not a fewshot checkpoint bundle")
    try:
        version = int(metadata.get("format_version", "0"))
    except (ValueError, TypeError, OverflowError):
        version = -1
    if version < 1 or version > FORMAT_VERSION:
        raise FewshotError(
            f"{path}: bundle format version {metadata.get('format_version')!r} is not supported by fewshot "
            f"{__version__} (reads up to {FORMAT_VERSION})",
            hint="upgrade fewshot" if version > FORMAT_VERSION else None,
        )
    try:
        specs = {
            name: NetworkSpec(spec["class"], spec["init_kwargs"])
            for name, spec in json.loads(metadata.get("networks", "{}")).items()
        }
        provenance = json.loads(metadata.get("provenance", "{}"))
        training = json.loads(metadata["training"]) if "training" in metadata else None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, RecursionError):
        raise FewshotError(f"{path}: bundle metadata is damaged") from None
    if not (
        all(isinstance(s.class_name, str) and isinstance(s.init_kwargs, dict) for s in specs.values())
        and isinstance(provenance, dict) and isinstance(training, (dict, type(None)))
    ):
        raise FewshotError(f"{path}: bundle metadata is damaged")
    shapes = {key: info.get("shape", []) for key, info in header.items()}
    if not all(isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape) for shape in shapes.values()):
        raise FewshotError(f"{path}: not a safetensors file (damaged tensor table)")
    return BundleHeader(
        path=path, specs=specs, provenance=provenance, training=training, tensor_shapes=shapes,
        format_version=version, fewshot_version=metadata.get("fewshot_version", "?"),
    )


def load_bundle(
    path: str | Path, names: tuple[str, ...] | None = None, device: str | torch.device = "cpu",
    with_state: bool = False,
) -> Bundle:
    """Rebuild the networks of a bundle (all, or only ``names``) with their weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .nets import build_network

    header = read_header(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise FewshotError(f"{path}: cannot read tensor data ({exc})") from None
    wanted = names or tuple(header.specs)
    networks: dict[str, nn.Module] = {}
    for name in wanted:
        if name not in header.specs:
            raise FewshotError(f"{path}: no network {name!r} in this bundle (has: {', '.join(header.specs)})")
        spec = header.specs[name]
        net = build_network(spec.class_name, spec.init_kwargs, max_elements=Path(path).stat().st_size)
        prefix = name + "."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        load_state_strict(net, state, f"{path}:{name}")
        networks[name] = net.to(device).eval().requires_grad_(False)
    state_tensors = (
        {k[len(STATE_PREFIX):]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)} if with_state else {}
    )
    return Bundle(networks, {n: header.specs[n] for n in wanted}, header.provenance, header.training, state_tensors)


def load_state_strict(net: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load every tensor or fail naming what is missing, unexpected, or of the wrong shape."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"wrong shape {len(wrong)} (e.g. {'; '.join(wrong[:3])})")
        raise FewshotError(f"{where}: weights do not fit the architecture: {'; '.join(parts)}")
    import torch

    with torch.no_grad():
        for key, value in own.items():
            value.copy_(state[key].to(value.dtype))


def detect_format(path: str | Path) -> str:
    """'safetensors', 'pickle', 'torch-zip' or 'unknown', from the first bytes."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            size = fh.seek(0, 2)
    except OSError as exc:
        raise FewshotError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head[:2] == b"PK":
        return "torch-zip"
    # safetensors: an 8-byte little-endian header length, then the JSON header. Tested before the pickle
    # signature: a header length whose low byte is 0x80 (1 bundle in 256) starts with a pickle's PROTO byte.
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    return "unknown"


def bundle_from_pickle(path: str | Path) -> tuple[Bundle, dict[str, Any]]:
    """Import an official pickle into networks; returns the bundle and its training extras."""
    from .nets import build_network, named_init_kwargs
    from .official_pickle import fewshot_init_kwargs, import_official_pickle

    path = Path(path)
    imported = import_official_pickle(path)
    networks: dict[str, nn.Module] = {}
    specs: dict[str, NetworkSpec] = {}
    for name, record in imported.networks.items():
        class_name = record.fewshot_class  # StyleGAN3's generator pickles as "Generator" too
        init_kwargs = fewshot_init_kwargs(class_name, named_init_kwargs(class_name, record.init_args,
                                                                         record.init_kwargs))
        net = build_network(class_name, init_kwargs, max_elements=path.stat().st_size)
        load_state_strict(net, record.state_dict(), f"{path}:{name}")
        networks[name] = net.eval().requires_grad_(False)
        specs[name] = network_spec(net)
    provenance = {
        "source": path.name,
        "source_sha256": sha256_file(path),
        "source_format": "stylegan3 pickle" if any(r.fewshot_class == "StyleGAN3Generator"
                                                   for r in imported.networks.values()) else "stylegan2-ada-pytorch pickle",
        "converted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "converted_by": f"fewshot {__version__}",
    }
    training: dict[str, Any] = {}
    if imported.augment_p is not None:
        training["augment_p"] = imported.augment_p
    if imported.training_set_kwargs:
        training["training_set_kwargs"] = imported.training_set_kwargs
    return Bundle(networks, specs, provenance, training or None), training


# torch.save's legacy (pre-1.6, non-zip) format starts with this number pickled at protocol 2.
TORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
FOREIGN_KINDS = ("pickle", "torch-zip")  # detect_format kinds that are imported rather than opened


def bundle_from_foreign(path: str | Path, kind: str | None = None) -> tuple[Bundle, dict[str, Any]]:
    """Import a checkpoint of another tool: an official pickle, or a rosinality ``.pt`` (zip or legacy
    torch.save); nothing from the file runs."""
    kind = kind or detect_format(path)
    if kind == "pickle":
        with open(path, "rb") as fh:
            legacy = fh.read(len(TORCH_LEGACY_HEAD)) == TORCH_LEGACY_HEAD
        if not legacy:
            return bundle_from_pickle(path)
    elif kind != "torch-zip":
        raise not_a_checkpoint(path, kind)
    from .rosinality import import_rosinality

    networks, provenance, training = import_rosinality(path)
    specs = {name: network_spec(net) for name, net in networks.items()}
    return Bundle(networks, specs, provenance, training or None), training


def export_rosinality(src: str | Path, dst: str | Path) -> list[str]:
    """Write a checkpoint's networks as a rosinality/stylegan2-pytorch ``.pt`` (atomically); returns notes."""
    from .rosinality import rosinality_file_bytes

    data, notes = rosinality_file_bytes(load_checkpoint(src).networks)
    atomic_write_bytes(dst, data)
    return notes


def convert_pickle(src: str | Path, dst: str | Path) -> Path:
    """Official pickle or rosinality ``.pt`` -> safetensors bundle (atomic); the file's code never runs."""
    bundle, training = bundle_from_foreign(src)
    return save_bundle(dst, bundle.networks, provenance=bundle.provenance, training=training or None)


def load_checkpoint(path: str | Path, names: tuple[str, ...] | None = None, device: str = "cpu") -> Bundle:
    """Open a bundle or an official pickle (imported in memory) by looking at its bytes."""
    path = Path(path)
    if path.is_dir():
        raise FewshotError(f"{path} is a folder, not a checkpoint file")
    if not path.exists():
        raise FewshotError(f"no such checkpoint: {path}")
    kind = detect_format(path)
    if kind == "safetensors":
        return load_bundle(path, names=names, device=device)
    if kind in FOREIGN_KINDS:
        bundle, _ = bundle_from_foreign(path, kind)
        if names:
            missing = [n for n in names if n not in bundle.networks]
            if missing:
                raise FewshotError(f"{path}: no network {missing[0]!r} in this checkpoint")
            bundle.networks = {n: bundle.networks[n] for n in names}
            bundle.specs = {n: bundle.specs[n] for n in names}
        for net in bundle.networks.values():
            net.to(device)
        return bundle
    raise not_a_checkpoint(path, kind)


def not_a_checkpoint(path: str | Path, kind: str | None) -> FewshotError:
    """The error for a file that is neither a fewshot bundle nor an official pickle (``kind``: detect_format's)."""
    return FewshotError(f"{path} is not a checkpoint (neither a fewshot safetensors bundle, an official pickle "
                        "nor a rosinality .pt)")
