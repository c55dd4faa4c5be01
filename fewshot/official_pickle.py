"""Import NVIDIA stylegan2-ada-pytorch pickles without executing anything from the file.

Official snapshots are ``pickle.dump`` of ``{G, D, G_ema, augment_pipe, training_set_kwargs}``,
where each network is a "persistent class" object that embeds its module's source code and
normally runs it on load. Here the persistence reconstructor is mapped to an inert
:class:`PersistentRecord` (class name + ``__dict__``), tensors are rebuilt with torch's own
helpers under ``weights_only`` rules, and any other global in the file is refused by name.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .errors import FewshotError


@dataclass
class PersistentRecord:
    """What a persistent-class object becomes: its class name and pickled ``__dict__``; no code."""

    class_name: str
    state: dict[str, Any]
    module_src_len: int = 0

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return _plain(self.state.get("_init_kwargs") or {})

    @property
    def init_args(self) -> list[Any]:
        """Positional constructor arguments (official training passes none; hand-built networks may)."""
        return _plain(list(self.state.get("_init_args") or ()))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters and persistent buffers, keyed as ``Module.state_dict`` keys them."""
        out: dict[str, torch.Tensor] = {}
        _walk_module(self, "", out)
        return out


@dataclass
class ImportedPickle:
    """The networks and extras found in an official pickle."""

    networks: dict[str, PersistentRecord] = field(default_factory=dict)
    augment_p: float | None = None
    training_set_kwargs: dict[str, Any] | None = None
    other_keys: list[str] = field(default_factory=list)


def _walk_module(node: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = node.state if isinstance(node, PersistentRecord) else getattr(node, "__dict__", {})
    if not isinstance(state, dict):
        raise FewshotError(f"unexpected module state at {prefix or '<root>'}: {type(state).__name__}")
    non_persistent = set(state.get("_non_persistent_buffers_set", ()) or ())
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in non_persistent:
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _walk_module(child, prefix + name + ".", out)


def _plain(value: Any) -> Any:
    """EasyDicts, OrderedDicts and numpy scalars -> JSON-friendly Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _reconstruct_persistent_obj(meta: dict[str, Any]) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise FewshotError("unsupported persistent object in pickle (only persistent classes are known)")
    state = meta.get("state") or {}
    return PersistentRecord(
        class_name=str(meta.get("class_name")), state=state, module_src_len=len(meta.get("module_src") or "")
    )


def _first_line(exc: BaseException) -> str:
    """An exception's first sentence, or its class name; never a library's advice (torch's refusals
    suggest ``weights_only=False``, which would run the file's code)."""
    text = str(exc).strip().splitlines()[0].split(". ")[0].rstrip(".") if str(exc).strip() else ""
    return type(exc).__name__ if not text or "weights_only" in text or "weights only" in text.lower() else text


def load_torch_tensors(source: str | os.PathLike[str] | bytes | BinaryIO, what: str, hint: str | None = None) -> Any:
    """``torch.load`` under ``weights_only`` rules (tensors and plain containers, no code), with every
    refusal and failure told in one line of fewshot's own (``what`` names the file for the message)."""
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        return torch.load(stream, weights_only=True, map_location="cpu")
    except OSError as exc:
        raise FewshotError(f"cannot read {what}: {exc.strerror or _first_line(exc)}", hint=hint) from None
    except pickle.UnpicklingError as exc:
        # torch names the refused global in its text ("... GLOBAL posix.system ..."); its advice is not repeated.
        found = re.search(r"GLOBAL ([A-Za-z_][\w.]*)", str(exc))
        if found:
            raise FewshotError(
                f"refusing to load {what}: it names the global '{found.group(1)}', which tensor data never needs "
                "(nothing from the file was executed)", hint=hint,
            ) from None
        raise FewshotError(f"cannot read {what}: damaged or not a torch.save file (nothing from it was executed)",
                           hint=hint) from None
    except (RuntimeError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise FewshotError(f"cannot read {what}: damaged or not a torch.save file ({_first_line(exc)})",
                           hint=hint) from None


def _load_storage_from_bytes(data: bytes) -> Any:
    # Storages are nested torch.save blobs; read them under weights_only rules.
    return load_torch_tensors(data, "pickle (one of its tensor blobs)")


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, backward_hooks: Any, *state: Any) -> torch.Tensor:
    return data.detach()


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    if dtype.hasobject:
        raise FewshotError("pickle holds a numpy object scalar, which could run code; refused")
    if data is None:
        return dtype.type(0)
    return np.frombuffer(data, dtype=dtype)[0]


def _codecs_encode(text: str, encoding: str = "latin1") -> bytes:
    return text.encode(encoding)


class _EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a plain dict."""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("_codecs", "encode"): _codecs_encode,
    # Protocol-3 pickles (Python 3.7, which the official code targets) spell sets as a call of
    # builtins.set; every nn.Module state holds one (_non_persistent_buffers_set). Inert constructors.
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}

_TF_ERA = {("dnnlib.tflib.network", "Network"), ("dnnlib.tflib.network", "_Network")}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals and never imports from the file."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if key in _TF_ERA:
            raise FewshotError(
                "this is a TensorFlow-era StyleGAN pickle, which fewshot does not read",
                hint="convert it with NVIDIA's legacy.py to the PyTorch format first",
            )
        raise FewshotError(
            f"refusing to load pickle: it names the global '{module}.{name}', which is not on the allow-list "
            "of an official StyleGAN2-ADA checkpoint (nothing from the file was executed)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise FewshotError("refusing to load pickle: it uses persistent ids (not an official network pickle)")


def safe_load(file: BinaryIO | bytes) -> Any:
    """Unpickle with the allow-list; every failure becomes a :class:`FewshotError`."""
    stream = io.BytesIO(file) if isinstance(file, (bytes, bytearray)) else file
    try:
        return SafeUnpickler(stream).load()
    except FewshotError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise FewshotError(f"not a readable network pickle ({type(exc).__name__}: {_first_line(exc)})") from None
    except RuntimeError as exc:  # a tensor rebuilt from inconsistent sizes or strides
        raise FewshotError(f"corrupt tensor data in pickle: {_first_line(exc)}") from None


def import_official_pickle(path: str | Path) -> ImportedPickle:
    """Read an official ``network-snapshot-*.pkl`` or published ``*.pkl`` safely."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = safe_load(fh)
    except OSError as exc:
        raise FewshotError(f"cannot read {path}: {exc.strerror or exc}") from None
    return interpret_pickle_data(data, source=str(path))


def interpret_pickle_data(data: Any, source: str = "<pickle>") -> ImportedPickle:
    """Pick the networks out of an unpickled snapshot dict."""
    if isinstance(data, PersistentRecord):
        data = {"G_ema": data} if data.class_name == "Generator" else {data.class_name: data}
    if not isinstance(data, dict):
        raise FewshotError(f"{source}: expected a dict of networks, found {type(data).__name__}")
    result = ImportedPickle()
    for key, value in data.items():
        if key in ("G", "D", "G_ema"):
            if value is None:
                continue
            if not isinstance(value, PersistentRecord):
                raise FewshotError(f"{source}: entry {key!r} is not a persistent network object")
            if value.class_name not in ("Generator", "Discriminator"):
                raise FewshotError(f"{source}: entry {key!r} is a {value.class_name}, not a StyleGAN2 network")
            result.networks[key] = value
        elif key == "augment_pipe":
            if isinstance(value, PersistentRecord):
                p = (value.state.get("_buffers") or {}).get("p")
                if isinstance(p, torch.Tensor):
                    result.augment_p = float(p.reshape(-1)[0])
        elif key == "training_set_kwargs":
            result.training_set_kwargs = _plain(value) if isinstance(value, dict) else None
        else:
            result.other_keys.append(str(key))
    if not result.networks:
        raise FewshotError(f"{source}: no G, D or G_ema network found in the pickle")
    return result
