"""Import NVIDIA stylegan2-ada-pytorch and stylegan3 pickles without executing anything from the file.

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
import struct
import sys
import warnings
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

    @property
    def fewshot_class(self) -> str:
        """The fewshot network class that rebuilds this record (see :func:`fewshot_class_name`)."""
        return fewshot_class_name(self)

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


def _submodule(record: Any, name: str) -> Any:
    state = record.state if isinstance(record, PersistentRecord) else getattr(record, "__dict__", {})
    modules = state.get("_modules") if isinstance(state, dict) else None
    return modules.get(name) if isinstance(modules, dict) else None


def fewshot_class_name(record: PersistentRecord) -> str:
    """Which fewshot class a persistent network record stands for.

    StyleGAN3's generator (training/networks_stylegan3.py) is also named ``Generator`` in its pickles; it is the
    one whose synthesis network starts from a Fourier-feature ``input`` module (StyleGAN2's has blocks ``b4...``).
    StyleGAN3 pickles hold StyleGAN2's discriminator, so ``Discriminator`` stays as it is.
    """
    if record.class_name == "Generator" and _submodule(_submodule(record, "synthesis"), "input") is not None:
        return "StyleGAN3Generator"
    return record.class_name


_SG2_GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                       "synthesis_kwargs")


def fewshot_init_kwargs(class_name: str, init_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A record's constructor kwargs as the fewshot class takes them.

    The StyleGAN2 generator of NVlabs/stylegan3 (``networks_stylegan2.Generator``, the NGC ``stylegan2-*.pkl``
    files) takes its synthesis kwargs flat, where stylegan2-ada-pytorch's nests them in ``synthesis_kwargs``;
    they are nested here. Its ``fused_modconv_default`` only picks a convolution path (fewshot picks it per
    device and mode), so it is dropped.
    """
    if class_name != "Generator":
        return dict(init_kwargs)
    flat = {k: v for k, v in init_kwargs.items() if k not in _SG2_GENERATOR_ARGS}
    kwargs = {k: v for k, v in init_kwargs.items() if k in _SG2_GENERATOR_ARGS}
    synthesis = {**(kwargs.get("synthesis_kwargs") or {}), **flat}
    synthesis.pop("fused_modconv_default", None)
    if synthesis or "synthesis_kwargs" in kwargs:
        kwargs["synthesis_kwargs"] = synthesis
    return kwargs


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
    if isinstance(value, _NumpyArray) and value.array is not None:
        return value.array.tolist()
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


class _BoundedReader:
    """A stream whose reads never ask for more than is left in it: a length field of a damaged pickle must
    not make the reader allocate what it claims (a 10-byte file can claim 2**63 bytes)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._pos = stream.tell()
        self._end = stream.seek(0, io.SEEK_END)
        stream.seek(self._pos)

    def read(self, size: int | None = -1) -> bytes:
        left = max(self._end - self._pos, 0)
        data = self._stream.read(left if size is None or size < 0 else min(size, left))
        self._pos += len(data)
        return data

    def readline(self) -> bytes:
        line = self._stream.readline()
        self._pos += len(line)
        return line


def _load_bytearray8(self: pickle._Unpickler) -> None:
    (size,) = struct.unpack("<Q", self.read(8))
    if size > sys.maxsize:
        raise pickle.UnpicklingError("BYTEARRAY8 exceeds system's maximum size")
    data = self.read(size)
    if len(data) < size:
        raise pickle.UnpicklingError("pickle data was truncated")
    self.append(bytearray(data))


# The stock handler of BYTEARRAY8 allocates (and zeroes) the claimed length before reading.
_BOUNDED_DISPATCH = {**pickle._Unpickler.dispatch, pickle.BYTEARRAY8[0]: _load_bytearray8}


class _StorageClaims(pickle._Unpickler):
    """Reads one pickle of a legacy torch.save blob only to add up the bytes its storages claim."""

    dispatch = _BOUNDED_DISPATCH
    claimed = 0

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name.endswith("Storage") and isinstance(getattr(torch, name, None), type):
            return getattr(torch, name)
        raise FewshotError(f"refusing to load pickle (one of its tensor blobs): it names the global "
                           f"'{module}.{name}', which tensor data never needs (nothing from the file was executed)")

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage type, key, location, element count, view): torch allocates the count first.
        if isinstance(pid, tuple) and len(pid) > 4 and isinstance(pid[4], int):
            dtype = getattr(pid[1], "dtype", None)
            self.claimed += max(pid[4], 0) * (dtype.itemsize if isinstance(dtype, torch.dtype) else 1)
        return None


def _load_storage_from_bytes(data: bytes) -> Any:
    # Storages are nested torch.save blobs (legacy format: magic number, protocol, system info and storage
    # pickles, then the raw bytes); read them under weights_only rules. torch allocates each storage at the
    # size its pickle claims before reading the bytes, so the claims are checked against the blob first.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage deprecation, odd pickle protocols: the error says enough
            stream, claimed = io.BytesIO(data), 0
            for _ in range(4):
                claims = _StorageClaims(_BoundedReader(stream))
                claims.load()
                claimed += claims.claimed
            if claimed > len(data):
                raise FewshotError(f"corrupt tensor data in pickle: a record of {len(data):,} bytes claims {claimed:,}")
            return load_torch_tensors(data, "pickle (one of its tensor blobs)")
    except FewshotError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch's legacy reader fails on damaged bytes in many ways
        raise FewshotError(f"corrupt tensor data in pickle ({type(exc).__name__}: {_first_line(exc)})") from None


def _rebuild_tensor(*args: Any) -> torch.Tensor:
    # torch's _rebuild_tensor_v2 trusts its arguments: a damaged record (metadata that is not a dict, say)
    # fails inside torch with an AssertionError or worse, which must not escape as a traceback.
    try:
        return torch._utils._rebuild_tensor_v2(*args)
    except Exception as exc:  # noqa: BLE001 - any failure here is a malformed tensor record in the file
        raise FewshotError(f"corrupt tensor record in pickle ({type(exc).__name__}: {_first_line(exc)})") from None


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, backward_hooks: Any, *state: Any) -> torch.Tensor:
    return data.detach()


class _NumpyDtype:
    """What ``numpy.dtype(...)`` in a pickle becomes: a plain number type. Its BUILD state comes here rather
    than to numpy's ``dtype.__setstate__``, which trusts sizes and offsets from the file (a crafted state
    crashes the process); only the byte order is taken from it."""

    def __init__(self, spec: Any, align: bool = False, copy: bool = False) -> None:
        dtype = np.dtype(spec) if isinstance(spec, str) else None
        if dtype is None or dtype.kind not in "biufc":
            raise FewshotError(f"pickle holds numpy dtype {spec!r}, which is not a plain number type; refused")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subarray, names, fields, item size, alignment, flags): a plain type's is
        # (3, '<', None, None, None, -1, -1, 0).
        if not (isinstance(state, tuple) and len(state) >= 8 and state[1] in ("<", ">", "|", "=")
                and state[2:7] == (None, None, None, -1, -1)):
            raise FewshotError("pickle holds a numpy dtype with an unusual layout; refused")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_scalar(dtype: _NumpyDtype, data: bytes | None = None) -> Any:
    if not isinstance(dtype, _NumpyDtype):
        raise FewshotError("pickle holds a numpy scalar without a plain number type; refused")
    dtype = dtype.dtype
    if data is None:
        return dtype.type(0)
    return np.frombuffer(data, dtype=dtype)[0]


class _NumpyArray:
    """What ``numpy.core.multiarray._reconstruct(ndarray, ...)`` in a pickle becomes; its BUILD state (version,
    shape, dtype, Fortran order, raw bytes) is checked and read with ``np.frombuffer``, never handed to
    ``ndarray.__setstate__``. StyleGAN3's layers keep their sizes as small numpy arrays (``size``, ``in_size``)."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[1], tuple)
                and all(type(n) is int and n >= 0 for n in state[1]) and isinstance(state[2], _NumpyDtype)
                and isinstance(state[4], (bytes, bytearray))):
            raise FewshotError("pickle holds a numpy array with an unusual layout; refused")
        dtype = state[2].dtype
        count = int(np.prod(state[1], dtype=np.int64)) if state[1] else 1
        if count * dtype.itemsize != len(state[4]):
            raise FewshotError(f"pickle holds a numpy array of shape {state[1]} but {len(state[4])} bytes; refused")
        order = "F" if state[3] else "C"
        self.array = np.frombuffer(bytes(state[4]), dtype=dtype).reshape(state[1], order=order).copy()


class _NdarrayType:
    """Stands for ``numpy.ndarray`` in a pickle: only ever the class argument of ``_reconstruct``."""


def _numpy_reconstruct(cls: Any, shape: Any, typecode: Any) -> _NumpyArray:
    if cls is not _NdarrayType:
        raise FewshotError("pickle reconstructs a numpy array of a class other than ndarray; refused")
    return _NumpyArray()


def _codecs_encode(text: str, encoding: str = "latin1") -> bytes:
    return text.encode(encoding)


class _EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a plain dict."""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "ndarray"): _NdarrayType,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("_codecs", "encode"): _codecs_encode,
    # Protocol-3 pickles (Python 3.7, which the official code targets) spell sets as a call of
    # builtins.set; every nn.Module state holds one (_non_persistent_buffers_set). Inert constructors.
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}

_TF_ERA = {("dnnlib.tflib.network", "Network"), ("dnnlib.tflib.network", "_Network")}


class SafeUnpickler(pickle._Unpickler):
    """An unpickler that resolves only allow-listed globals and never imports from the file.

    The pure-Python unpickler, not the C one: the C unpickler sizes its memo table from the index a PUT
    opcode names, so a 10-byte file could make it allocate and zero gigabytes (this one keeps a dict).
    Official checkpoints load as fast either way (the time goes to the tensor records).
    """

    dispatch = _BOUNDED_DISPATCH

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
        return SafeUnpickler(_BoundedReader(stream)).load()
    except FewshotError:
        raise
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, struct.error,
        OverflowError,
    ) as exc:
        raise FewshotError(f"not a readable network pickle ({type(exc).__name__}: {_first_line(exc)})") from None
    except RuntimeError as exc:  # torch.load of a corrupt storage blob
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
                raise FewshotError(f"{source}: entry {key!r} is a {value.class_name}, not a StyleGAN2 or StyleGAN3 network")
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
