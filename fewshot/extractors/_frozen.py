"""Building frozen extractors from their registry facts, and their image interface.

A :class:`FeatureExtractor` maps a uint8 batch ``[B, 3, H, W]`` to named float32 feature tensors on the CPU;
:class:`FrozenExtractor` is that interface around any registered network (its ``preprocess`` applied first).
Weight files are the upstream ones, loaded strictly key for key.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FewshotError
from ..frozen import prepare_frozen
from ._spec import ExtractorSpec, Preprocess, resolve_extractor_weights

_FINGERPRINTS: dict[tuple[str, int, int], str] = {}
_LOADED: dict[tuple[str, str, str], FeatureExtractor] = {}


def weights_fingerprint(path: Path) -> str:
    """sha256 of a weight file, memoised per (path, size, mtime) so repeated metric runs hash it once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


def read_state_dict(path: Path, name: str | None = None) -> dict[str, torch.Tensor]:
    """A state_dict saved with ``torch.save`` (read under ``weights_only`` rules: no code runs) or as safetensors."""
    what = f"{name} weights {path}" if name else f"weights file {path}"
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: one line
            raise FewshotError(f"cannot read {what}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    else:
        from ..official_pickle import load_torch_tensors

        # A corrupt or foreign file, or one that would run code: one line that says which file, in fewshot's words.
        state = load_torch_tensors(path, what)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FewshotError(f"{what} does not hold a state_dict of tensors")
    return dict(state)


def load_strict(net: nn.Module, state: dict[str, torch.Tensor], name: str, path: Path | str,
                assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first mismatch."""
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}" if unexpected
                  else f"{wrong[0]!r} has shape {tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
        raise FewshotError(
            f"{path} is not a {name} weight file ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} mis-shaped keys; {detail})"
        )
    net.load_state_dict(state, strict=False if any(k.endswith("num_batches_tracked") for k in missing) else True,
                        assign=assign)


def frozen_network(spec: ExtractorSpec, weights_file: Path | None) -> nn.Module:
    """``spec.build(weights_file)``, then no grads, eval mode, BatchNorms folded into the convolutions and 3x3
    convolutions (forward and input gradient) by Winograd on the CPU: the same function to float32 rounding.
    The result's ``state_dict`` lacks the folded ``bn`` entries: weights are loaded by ``build``, never after."""
    model = spec.build(weights_file)
    if not isinstance(model, nn.Module):
        raise FewshotError(f"the builder of feature extractor {spec.name!r} returned {type(model).__name__}, "
                           "not a torch module")
    model.requires_grad_(False).eval()
    prepare_frozen(model)
    return model


class FeatureExtractor(nn.Module):
    """Base: ``name``, ``fingerprint`` (weights sha256), ``resize`` (a note for the protocol), ``calls``."""

    name: str = ""
    resize: str = ""
    feature_dims: dict[str, int] = {}

    def __init__(self, fingerprint: str) -> None:
        super().__init__()
        self.fingerprint = fingerprint
        self.calls = 0  # batches seen; tests use it to prove the statistics cache is used

    @property
    def device(self) -> torch.device:
        tensor = next(itertools.chain(self.parameters(), self.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise FewshotError(f"feature extractors take uint8 [B, 3, H, W] images, got {images.dtype} "
                               f"{tuple(images.shape)}")
        self.calls += 1
        out = self.extract(images.to(self.device))
        return {k: v.float().cpu() for k, v in out.items()}


def describe_preprocess(pre: Preprocess) -> str:
    if pre.note:
        return pre.note
    steps = [f"bilinear{' (antialiased when shrinking)' if pre.antialias else ''} to {pre.size}x{pre.size}"
             if pre.size else "no resize"]
    if pre.mean is not None:
        steps.append(f"normalised by mean {pre.mean} / std {pre.std}")
    return ", ".join(steps)


class FrozenExtractor(FeatureExtractor):
    """A registered network on uint8 images: its ``preprocess``, then the network, outputs by name."""

    def __init__(self, spec: ExtractorSpec, net: nn.Module, fingerprint: str) -> None:
        super().__init__(fingerprint)
        if spec.preprocess is None:
            raise FewshotError(f"feature extractor {spec.name!r} says nothing of how images become its input",
                               hint="register it with preprocess=Preprocess(...)")
        self.name = spec.name
        self.spec = spec
        self.pre = spec.preprocess
        self.resize = describe_preprocess(self.pre)
        self.feature_dims = dict(spec.outputs)
        self.net = net
        if self.pre.mean is not None:
            self.register_buffer("mean", torch.tensor(self.pre.mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(self.pre.std).view(1, -1, 1, 1), persistent=False)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        size = self.pre.size
        if size and x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=self.pre.antialias and x.shape[-1] > size)
        if self.pre.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(self.prepare(images))
        names = list(self.feature_dims)
        if isinstance(out, torch.Tensor):
            values = [out]
        elif isinstance(out, dict):
            values = [out[n] for n in names]
        else:
            values = list(out)
        if len(values) != len(names):
            raise FewshotError(f"feature extractor {self.name!r} returned {len(values)} outputs, "
                               f"it registered {len(names)} ({', '.join(names)})")
        return {n: v.flatten(1) for n, v in zip(names, values, strict=True)}


def image_extractor(spec: ExtractorSpec, weights_path: str | Path | None, device: torch.device | str,
                    reuse: bool) -> FeatureExtractor:
    weights_file = resolve_extractor_weights(spec, weights_path)
    fingerprint = weights_fingerprint(weights_file) if weights_file is not None else f"{spec.name}:no-weights"
    key = (spec.name, fingerprint, str(torch.device(device)))
    if reuse and key in _LOADED:
        return _LOADED[key]
    extractor = FrozenExtractor(spec, frozen_network(spec, weights_file), fingerprint).to(device)
    if reuse:
        # Keep one set of weights per extractor resident (they are large); a newer file replaces the older.
        for old in [k for k in _LOADED if k[0] == spec.name]:
            del _LOADED[old]
        _LOADED[key] = extractor
    return extractor
