"""Feature extractors behind one small interface, with weights from the weights registry.

An extractor maps a uint8 batch ``[B, 3, H, W]`` to named float32 feature tensors on the CPU:

- ``inception-v3-fid``: ``{"pool": [B, 2048], "logits": [B, 1008]}`` (FID, KID, IS);
- ``vgg16``: ``{"fc2": [B, 4096]}`` (precision/recall, Kynkäänniemi et al.).

Weight files are the upstream ones, loaded strictly key for key: pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` and torchvision's ``vgg16-397923af.pth`` (IMAGENET1K_V1).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FewshotError
from ..frozen import prepare_frozen

INCEPTION = "inception-v3-fid"
VGG16 = "vgg16"
EXTRACTOR_NAMES = (INCEPTION, VGG16)

# ImageNet normalisation torchvision's VGG-16 was trained with.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_VGG_INPUT_SIZE = 224

_FINGERPRINTS: dict[tuple[str, int, int], str] = {}
_LOADED: dict[tuple[str, str, str], FeatureExtractor] = {}


def resolve_weights_path(name: str, explicit: str | Path | None = None) -> Path:
    """A verified local weight file for ``name`` through the weights registry (``fewshot.weights``):
    the explicit path when given (checked against the registry's hash), else the caches, else a
    download unless offline (offline without a file: one error that says where to put it)."""
    from ..weights import resolve_weights

    return Path(resolve_weights(name, path=explicit))


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


def read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    """A torch.save'd state_dict, read with ``weights_only`` (no code runs)."""
    from ..official_pickle import load_torch_tensors

    # A corrupt or foreign file, or one that would run code: one line that says which file, in fewshot's words.
    state = load_torch_tensors(path, f"{name} weights {path}")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FewshotError(f"{name} weights: {path} does not hold a state_dict of tensors")
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
        return next(self.parameters()).device

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


class InceptionExtractor(FeatureExtractor):
    name = INCEPTION

    def __init__(self, state: dict[str, torch.Tensor], fingerprint: str, source: str | Path = "state_dict") -> None:
        from .inception import POOL_DIM, RESIZE_NOTE, FIDInceptionV3

        super().__init__(fingerprint)
        self.resize = RESIZE_NOTE
        self.feature_dims = {"pool": POOL_DIM, "logits": 1008}
        self.net = FIDInceptionV3()
        # torchvision-style full Inception files carry an auxiliary classifier the FID graph never uses.
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
        load_strict(self.net, state, "FID Inception-v3", source)
        # BatchNorms folded into the convolutions, wide 3x3 ones by Winograd on the CPU: the same features to
        # float32 rounding (~2e-7 relative), 7-10% faster on the CPU (BENCHMARKS.md, "Metrics").
        prepare_frozen(self.net.eval().requires_grad_(False))

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        from .inception import preprocess

        pool, logits = self.net(preprocess(images))
        return {"pool": pool, "logits": logits}


class VGG16Extractor(FeatureExtractor):
    """torchvision's VGG-16; features = fc2 after its ReLU (the 4096-d layer Kynkäänniemi et al. use)."""

    name = VGG16

    def __init__(self, state: dict[str, torch.Tensor], fingerprint: str, source: str | Path = "state_dict") -> None:
        import torchvision

        super().__init__(fingerprint)
        self.resize = (f"bilinear (antialiased when shrinking) to {_VGG_INPUT_SIZE}x{_VGG_INPUT_SIZE}, "
                       "ImageNet mean/std normalisation")
        self.feature_dims = {"fc2": 4096}
        # Built on the meta device and filled by assignment: a random init of 138 M parameters is wasted time.
        with torch.device("meta"):
            self.net = torchvision.models.vgg16(weights=None)
        load_strict(self.net, state, "VGG-16", source, assign=True)
        # All of VGG-16's convolutions are 3x3 stride 1: by Winograd on the CPU, 1.55x faster (~2e-6 relative).
        prepare_frozen(self.net.float().eval().requires_grad_(False))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.float() / 255
        if x.shape[-2:] != (_VGG_INPUT_SIZE, _VGG_INPUT_SIZE):
            shrink = x.shape[-1] > _VGG_INPUT_SIZE
            x = F.interpolate(x, size=(_VGG_INPUT_SIZE, _VGG_INPUT_SIZE), mode="bilinear", align_corners=False,
                              antialias=shrink)
        x = (x - self.mean) / self.std
        x = torch.flatten(self.net.avgpool(self.net.features(x)), 1)
        classifier = self.net.classifier
        fc2 = F.relu(classifier[3](F.relu(classifier[0](x))))
        return {"fc2": fc2}


_CLASSES: dict[str, type[FeatureExtractor]] = {INCEPTION: InceptionExtractor, VGG16: VGG16Extractor}


def load_extractor(name: str, weights_path: str | Path | None = None, device: str | torch.device = "cpu",
                   reuse: bool = True) -> FeatureExtractor:
    """Build extractor ``name`` from its upstream weight file; kept in memory for the next call when ``reuse``."""
    if name not in _CLASSES:
        raise FewshotError(f"unknown feature extractor {name!r}", hint=f"choose from {', '.join(EXTRACTOR_NAMES)}")
    path = resolve_weights_path(name, weights_path)
    fingerprint = weights_fingerprint(path)
    key = (name, fingerprint, str(torch.device(device)))
    if reuse and key in _LOADED:
        return _LOADED[key]
    extractor = _CLASSES[name](read_state_dict(path, name), fingerprint, source=path).to(device)
    if reuse:
        # Keep one set of weights per extractor resident (they are large); a newer file replaces the older.
        for old in [k for k in _LOADED if k[0] == name]:
            del _LOADED[old]
        _LOADED[key] = extractor
    return extractor
