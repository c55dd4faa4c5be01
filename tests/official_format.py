"""Write pickles in the byte format of NVIDIA stylegan2-ada-pytorch snapshots, without its code.

An official snapshot is ``pickle.dump`` of ``{training_set_kwargs, G, D, G_ema, augment_pipe}``.
Every network module is a "persistent class" object: it pickles as a call of the global
``torch_utils.persistence._reconstruct_persistent_obj`` with one ``meta`` dict
``{type: 'class', version, module_src, class_name, state}``, where ``state`` is the module's
``__dict__`` (``_parameters``, ``_buffers``, ``_modules`` holding nested persistent objects, the
hook dicts, ``training``, ``_init_args``, ``_init_kwargs`` as ``dnnlib.util.EasyDict``, and scalar
attributes). Tensors and Parameters pickle the way plain ``pickle.dump`` pickles them.

To make the byte stream name exactly the globals a real snapshot names, fake modules
``torch_utils.persistence`` and ``dnnlib.util`` are put in ``sys.modules`` while dumping and
removed afterwards. Nothing here imports or copies NVIDIA code. Submodules get empty
``_init_args``/``_init_kwargs`` (real ones record theirs; loaders need only the top level's).
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

PERSISTENCE_VERSION = 6  # torch_utils/persistence.py `_version` in stylegan2-ada-pytorch
FAKE_MODULE_SRC = "# stand-in for training/networks.py: a real snapshot embeds the module source here\n"
FAKE_MODULE_SRC_SG3 = "# stand-in for training/networks_stylegan3.py (Alias-Free Generative Adversarial Networks)\n"
# fewshot class -> the class name an official pickle records (StyleGAN3's generator is "Generator" there too).
OFFICIAL_CLASS_NAMES = {"StyleGAN3Generator": "Generator"}
OFFICIAL_PROTOCOL = 3  # the default pickle protocol of Python 3.7, which the official code targets
# The official layers compute these gains with np.sqrt, so a real snapshot holds numpy float64 scalars.
NUMPY_FLOAT_ATTRS = ("weight_gain", "act_gain")


class EasyDict(dict):
    """Looks like ``dnnlib.util.EasyDict`` in the pickle (module and name are patched below)."""


EasyDict.__module__ = "dnnlib.util"
EasyDict.__qualname__ = "EasyDict"


def _reconstruct_persistent_obj(meta: dict) -> Any:  # never called: only its name goes into the pickle
    raise RuntimeError("fake reconstructor must not be called")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
_reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"


class _TFNetwork:
    """Pickles as the global ``dnnlib.tflib.network.Network`` (TF-era StyleGAN pickles)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.static_kwargs = {"resolution": 32}


_TFNetwork.__module__ = "dnnlib.tflib.network"
_TFNetwork.__qualname__ = "Network"
_TFNetwork.__name__ = "Network"


@contextlib.contextmanager
def _fake_official_modules() -> Iterator[None]:
    """Register the fake upstream modules so pickle can name their globals; remove them afterwards."""
    names = ["dnnlib", "dnnlib.util", "dnnlib.tflib", "dnnlib.tflib.network", "torch_utils", "torch_utils.persistence"]
    clashing = [n for n in names if n in sys.modules]
    if clashing:
        raise RuntimeError(f"real modules {clashing} are imported; refusing to shadow them")
    modules = {n: types.ModuleType(n) for n in names}
    modules["dnnlib.util"].EasyDict = EasyDict
    modules["dnnlib.tflib.network"].Network = _TFNetwork
    modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    sys.modules.update(modules)
    try:
        yield
    finally:
        for n in names:
            sys.modules.pop(n, None)


class PersistentObject:
    """A module as the official persistence decorator pickles it."""

    def __init__(self, class_name: str, state: dict[str, Any], module_src: str = FAKE_MODULE_SRC) -> None:
        self.class_name = class_name
        self.state = state
        self.module_src = module_src

    def __reduce__(self) -> tuple:
        meta = dict(
            type="class", version=PERSISTENCE_VERSION, module_src=self.module_src, class_name=self.class_name,
            state=self.state,
        )
        return (_reconstruct_persistent_obj, (meta,))


def _easy(value: Any) -> Any:
    """Nested dicts -> EasyDicts, as dnnlib builds the official constructor kwargs."""
    if isinstance(value, dict):
        return EasyDict({k: _easy(v) for k, v in value.items()})
    return value


def _is_plain(value: Any) -> bool:
    if isinstance(value, (bool, int, float, str, type(None))):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return False


def to_persistent(
    module: nn.Module, class_name: str | None = None, init_kwargs: dict | None = None
) -> PersistentObject:
    """Mirror ``module.__dict__`` into the official persistent-object state, recursively."""
    state: dict[str, Any] = {}
    for key, value in module.__dict__.items():
        if key == "_parameters":
            state[key] = collections.OrderedDict(value.items())
        elif key == "_buffers":
            state[key] = collections.OrderedDict(value.items())
        elif key == "_modules":
            state[key] = collections.OrderedDict(
                (name, to_persistent(child) if child is not None else None) for name, child in value.items()
            )
        elif key == "_non_persistent_buffers_set":
            state[key] = set(value)
        elif key.startswith("_") and isinstance(value, dict):
            state[key] = collections.OrderedDict()  # hook tables: empty in a saved snapshot
        elif key == "init_kwargs":
            continue  # ours; the official record is _init_kwargs below
        elif key in NUMPY_FLOAT_ATTRS and isinstance(value, float):
            state[key] = np.float64(value)
        elif _is_plain(value) or isinstance(value, np.ndarray):
            state[key] = value  # StyleGAN3 keeps sizes as numpy arrays: they pickle through numpy's _reconstruct
    state["_init_args"] = ()
    state["_init_kwargs"] = _easy(dict(init_kwargs or {}))
    own_name = type(module).__name__
    src = FAKE_MODULE_SRC_SG3 if type(module).__module__.endswith("stylegan3") else FAKE_MODULE_SRC
    return PersistentObject(class_name or OFFICIAL_CLASS_NAMES.get(own_name, own_name), state, src)


def _augment_pipe(p: float) -> PersistentObject:
    """An AugmentPipe-like record: buffers ``p`` and ``Hz_geom`` as the official one has."""
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(),
        "_buffers": collections.OrderedDict(p=torch.tensor(float(p)), Hz_geom=torch.randn(12)),
        "_non_persistent_buffers_set": set(),
        "_modules": collections.OrderedDict(),
        "xflip": 1.0,
        "rotate90": 1.0,
        "_init_args": (),
        "_init_kwargs": EasyDict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1),
    }
    return PersistentObject("AugmentPipe", state)


def make_official_pickle(
    path: str | Path,
    G: nn.Module | None = None,
    D: nn.Module | None = None,
    G_ema: nn.Module | None = None,
    augment_p: float | None = None,
    training_set_kwargs: dict | None = None,
    protocol: int = OFFICIAL_PROTOCOL,
    snapshot: bool = True,
) -> Path:
    """Write ``{training_set_kwargs, G, D, G_ema, augment_pipe}`` in the official persistent-class format.

    ``snapshot=False`` writes a published-network-style file holding only the entries given.
    """
    data: dict[str, Any] = {}
    if snapshot or training_set_kwargs is not None:
        data["training_set_kwargs"] = _easy(
            training_set_kwargs
            if training_set_kwargs is not None
            else dict(class_name="training.dataset.ImageFolderDataset", path="~/datasets/tiny.zip", use_labels=False,
                      max_size=100, xflip=False, resolution=32)
        )
    for name, net in (("G", G), ("D", D), ("G_ema", G_ema)):
        if net is not None:
            data[name] = to_persistent(net, init_kwargs=net.init_kwargs)
        elif snapshot:
            data[name] = None
    if augment_p is not None:
        data["augment_pipe"] = _augment_pipe(augment_p)
    elif snapshot:
        data["augment_pipe"] = None
    return dump_official(path, data, protocol=protocol)


class _RunsShell:
    """Unpickles as ``os.system(command)``: the classic malicious pickle."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def make_malicious_pickle(path: str | Path, marker_file: str | Path, G: nn.Module | None = None) -> Path:
    """A snapshot-looking pickle whose load would create ``marker_file`` (via ``os.system``).

    With ``G``, the payload hides inside the generator's state after many allowed globals,
    so a loader must check every global, not just the first.
    """
    payload = _RunsShell(f"touch '{marker_file}'")
    if G is None:
        data: Any = {"G_ema": payload}
    else:
        record = to_persistent(G, init_kwargs=G.init_kwargs)
        record.state["_payload"] = payload
        data = {"training_set_kwargs": None, "G_ema": record}
    path = Path(path)
    with _fake_official_modules(), path.open("wb") as fh:
        pickle.dump(data, fh, protocol=OFFICIAL_PROTOCOL)
    return path


def make_tf_pickle(path: str | Path) -> Path:
    """A TF-era StyleGAN pickle lookalike: a tuple (G, D, Gs) of ``dnnlib.tflib.network.Network``."""
    path = Path(path)
    with _fake_official_modules(), path.open("wb") as fh:
        pickle.dump(tuple(_TFNetwork(n) for n in ("G", "D", "Gs")), fh, protocol=2)
    return path


def dump_official(path: str | Path, data: Any, protocol: int = OFFICIAL_PROTOCOL) -> Path:
    """Pickle any structure (e.g. hand-edited ``PersistentObject`` records) with the official globals.

    Official snapshots were written with numpy 1.x, whose scalars pickle as
    ``numpy.core.multiarray.scalar``; numpy 2 writes ``numpy._core...``. Protocol <= 3 names globals
    as plain text lines, so the 1.x spelling is restored by a byte replacement there.
    """
    with _fake_official_modules():
        raw = pickle.dumps(data, protocol=protocol)
    if protocol <= 3:
        raw = raw.replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
        raw = raw.replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")
    path = Path(path)
    path.write_bytes(raw)
    return path
