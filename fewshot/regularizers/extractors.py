"""Frozen feature extractors for Reg-DGM, registered by name.

Each entry says how to build the architecture, which weights it needs (a name the weights registry of
``fewshot.weights`` resolves, or an explicit file), the size of its output and the input size below which
images are upsampled. Adding an extractor is adding one ``ExtractorSpec`` to ``EXTRACTORS`` (or calling
``register_extractor``).

The weights files are the upstream ones, key for key: torchvision's ResNet ``state_dict`` files, OpenAI's
CLIP archives (or open_clip state_dicts), facenet-pytorch's ``20180402-114759-vggface2.pt``.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import FewshotError
from ..frozen import prepare_frozen

ModelBuilder = Callable[[Path | None], nn.Module]


@dataclass(frozen=True)
class ExtractorSpec:
    """How to build one frozen extractor.

    ``build(weights_file)`` returns the network with the weights loaded; ``weights_file`` is None only when
    ``weights_name`` is None (extractors without weights, e.g. test toys). ``min_input_size`` is the
    smallest side the network sees: smaller images are upsampled (nearest, by a power of two).
    ``fixed_input_size`` is for networks that accept one size only (ViTs): images are resized to it.
    """

    name: str
    build: ModelBuilder
    feature_dim: int
    weights_name: str | None = None
    min_input_size: int = 224
    fixed_input_size: int | None = None
    description: str = ""


EXTRACTORS: dict[str, ExtractorSpec] = {}


def register_extractor(spec: ExtractorSpec, *, replace: bool = False) -> ExtractorSpec:
    """Add an extractor to the registry (``replace=True`` to overwrite an entry of the same name)."""
    if spec.name in EXTRACTORS and not replace:
        raise FewshotError(f"feature extractor {spec.name!r} is already registered")
    EXTRACTORS[spec.name] = spec
    return spec


def get_extractor_spec(name: str) -> ExtractorSpec:
    """The registry entry for ``name``, or a FewshotError listing the known names."""
    try:
        return EXTRACTORS[name]
    except KeyError:
        raise FewshotError(
            f"unknown Reg-DGM feature extractor {name!r}", hint=f"known: {', '.join(sorted(EXTRACTORS))}"
        ) from None


def resolve_extractor_weights(spec: ExtractorSpec, weights_path: str | Path | None = None) -> Path | None:
    """The weights file for ``spec``: the explicit path when given, else the weights registry's answer."""
    if spec.weights_name is None:
        return None
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FewshotError(f"weights file for {spec.name!r} not found: {path}")
        return path
    try:
        # Imported lazily: the weights registry pulls in hub code that a λ=0 run never needs.
        from ..weights import resolve_weights
    except ImportError:
        raise FewshotError(
            f"cannot locate the {spec.weights_name!r} weights for the {spec.name!r} extractor",
            hint="pass an explicit weights file (weights_path / --reg-weights)",
        ) from None
    return Path(resolve_weights(spec.weights_name, path=None))


def build_extractor(
    name: str, weights_path: str | Path | None = None, device: torch.device | str = "cpu"
) -> tuple[nn.Module, ExtractorSpec]:
    """Build the named extractor, load its weights and freeze it (no grads, eval mode).

    Known architectures (ResNets, CLIP RN50, FaceNet) come back with their BatchNorms folded into the convolutions (same function,
    ``state_dict`` without the ``bn`` entries); load weights through ``spec.build``, not into the result.
    """
    spec = get_extractor_spec(name)
    weights_file = resolve_extractor_weights(spec, weights_path)
    model = spec.build(weights_file)
    model.requires_grad_(False).eval()
    # BatchNorms folded into the convolutions, 3x3 convolutions (forward and input gradient) by Winograd on the CPU.
    prepare_frozen(model)
    return model.to(device), spec


# ---------------------------------------------------------------------------------------------------------------
# Weights files


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict saved with ``torch.save`` (tensors only) or as safetensors."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path))
        except Exception as exc:  # a truncated or foreign file
            raise FewshotError(f"cannot read weights file {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    from ..official_pickle import load_torch_tensors

    # A corrupt file, a pickle with code, a truncated download: one line in fewshot's words.
    state = load_torch_tensors(path, f"weights file {path}")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FewshotError(f"weights file {path} does not hold a state_dict of tensors")
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], what: str, path: Path) -> None:
    """``load_state_dict(strict=True)`` with a one-line error that names the mismatching keys."""
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise FewshotError(f"{path} is not a {what} checkpoint: {'; '.join(detail)}")


def _require(module: str, extra: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] != module:
            # The package is there but one of its own imports is not (facenet-pytorch installed --no-deps).
            raise FewshotError(
                f"the {what} extractor's package {module!r} cannot import {exc.name!r}",
                hint=f"pip install {exc.name.split('.')[0]}",
            ) from None
        raise FewshotError(f"the {what} extractor needs the {module!r} package", hint=f"install it: {extra}") from None


# ---------------------------------------------------------------------------------------------------------------
# torchvision ResNets: 1000-d ImageNet logits, as the official Reg-DGM code uses them.


def _resnet_builder(arch: str) -> ModelBuilder:
    def build(weights_file: Path | None) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None)
        if weights_file is not None:
            load_into(model, load_state_dict_file(weights_file), f"torchvision {arch}", weights_file)
        return model

    return build


for _arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    register_extractor(
        ExtractorSpec(
            name=_arch,
            build=_resnet_builder(_arch),
            feature_dim=1000,
            weights_name=_arch,
            description=f"torchvision {_arch}, ImageNet logits (1000-d)",
        )
    )


# ---------------------------------------------------------------------------------------------------------------
# CLIP through open_clip (optional extra).

CLIP_EXTRA = "pip install 'fewshot[clip]'"


def _is_torchscript_archive(path: Path) -> bool:
    # OpenAI's CLIP files (RN50.pt) are TorchScript archives, not plain state_dicts.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _clip_visual_state(path: Path) -> dict[str, torch.Tensor]:
    """The ``visual.*`` tensors of a CLIP checkpoint, prefix stripped (OpenAI TorchScript or open_clip)."""
    if _is_torchscript_archive(path):
        try:
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as exc:
            raise FewshotError(f"cannot read CLIP archive {path}: {exc}") from None
    else:
        state = load_state_dict_file(path)
    if any(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    visual = {key.removeprefix("visual."): value for key, value in state.items() if key.startswith("visual.")}
    if not visual:
        raise FewshotError(f"{path} holds no CLIP visual tower (no 'visual.*' keys)")
    return visual


class _AvgPoolFlatten(nn.Module):
    """Replaces CLIP RN50's attention pooling: global average pooling to a 2048-d vector (official Reg-DGM)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _open_clip_visual(arch: str, what: str) -> nn.Module:
    open_clip = _require("open_clip", CLIP_EXTRA, what)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns that no weights were loaded: we load them ourselves
    try:
        return open_clip.create_model(arch, pretrained=None, device="cpu").visual
    finally:
        logging.disable(previous)


def _build_clip_rn50(weights_file: Path | None) -> nn.Module:
    visual = _open_clip_visual("RN50", "clip")
    if weights_file is not None:
        load_into(visual, _clip_visual_state(weights_file), "CLIP RN50", weights_file)
    # Swapped after loading so that the checkpoint's attnpool keys still match strictly.
    visual.attnpool = _AvgPoolFlatten()
    return visual


def _build_clip_vit_b32(weights_file: Path | None) -> nn.Module:
    visual = _open_clip_visual("ViT-B-32", "clip-vit-b32")
    if weights_file is not None:
        load_into(visual, _clip_visual_state(weights_file), "CLIP ViT-B/32", weights_file)
    return visual


register_extractor(
    ExtractorSpec(
        name="clip",
        build=_build_clip_rn50,
        feature_dim=2048,
        weights_name="clip-rn50",
        description="CLIP RN50 visual tower, attention pooling replaced by average pooling (2048-d)",
    )
)
register_extractor(
    ExtractorSpec(
        name="clip-vit-b32",
        build=_build_clip_vit_b32,
        feature_dim=512,
        weights_name="clip-vit-b32",
        fixed_input_size=224,
        description="CLIP ViT-B/32 image embedding (512-d)",
    )
)


# ---------------------------------------------------------------------------------------------------------------
# FaceNet through facenet-pytorch (installed with --no-deps: its pins ask for an old torch).

FACENET_EXTRA = "pip install requests && pip install --no-deps facenet-pytorch"
FACENET_CLASSES = 8631  # VGGFace2 identities


def _build_facenet(weights_file: Path | None) -> nn.Module:
    InceptionResnetV1 = _require("facenet_pytorch", FACENET_EXTRA, "facenet").InceptionResnetV1
    # pretrained=None: never let facenet-pytorch download on its own; we load the file we resolved.
    model = InceptionResnetV1(pretrained=None, classify=True, num_classes=FACENET_CLASSES)
    if weights_file is not None:
        load_into(model, load_state_dict_file(weights_file), "facenet-pytorch VGGFace2", weights_file)
    return model


register_extractor(
    ExtractorSpec(
        name="facenet",
        build=_build_facenet,
        feature_dim=FACENET_CLASSES,
        weights_name="facenet-vggface2",
        min_input_size=160,
        description="FaceNet InceptionResnetV1, VGGFace2 identity logits (8631-d)",
    )
)
