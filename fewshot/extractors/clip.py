"""CLIP visual towers through open_clip (the optional extra ``fewshot[clip]``).

``clip``: RN50 with its attention pooling replaced by average pooling (2048-d), as the official Reg-DGM code;
``clip-vit-b32``: the ViT-B/32 image embedding (512-d), which takes 224 px inputs only. Weights: OpenAI's
TorchScript archives (``RN50.pt``) or open_clip state_dicts; only the ``visual.*`` tensors are read.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

from ..errors import FewshotError
from ..registry import extractors
from . import Preprocess, require

CLIP_EXTRA = "pip install 'fewshot[clip]'"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_224 = Preprocess(224, mean=CLIP_MEAN, std=CLIP_STD,
                      note="bilinear (antialiased when shrinking) to 224x224, CLIP mean/std normalisation")


def _is_torchscript_archive(path: Path) -> bool:
    # OpenAI's CLIP files (RN50.pt) are TorchScript archives, not plain state_dicts.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def clip_visual_state(path: Path) -> dict[str, Any]:
    """The ``visual.*`` tensors of a CLIP checkpoint, prefix stripped (OpenAI TorchScript or open_clip)."""
    from ._frozen import read_state_dict

    if _is_torchscript_archive(path):
        import torch

        try:
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as exc:  # noqa: BLE001 - a damaged archive: one line
            raise FewshotError(f"cannot read CLIP archive {path}: {exc}") from None
    else:
        state = read_state_dict(path)
    if any(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    visual = {key.removeprefix("visual."): value for key, value in state.items() if key.startswith("visual.")}
    if not visual:
        raise FewshotError(f"{path} holds no CLIP visual tower (no 'visual.*' keys)")
    return visual


def _open_clip_visual(arch: str, what: str) -> Any:
    open_clip = require("open_clip", CLIP_EXTRA, what)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns that no weights were loaded: we load them ourselves
    try:
        return open_clip.create_model(arch, pretrained=None, device="cpu").visual
    finally:
        logging.disable(previous)


@extractors.register("clip", help="CLIP RN50 visual tower, attention pooling replaced by average pooling (2048-d)",
                     weights_name="clip-rn50", outputs={"embedding": 2048}, preprocess=CLIP_224,
                     offers={"reg-dgm": "embedding", "disp": "embedding"})
def build_clip_rn50(weights_file: Path | None) -> Any:
    from ._frozen import load_strict
    from ._modules import AvgPoolFlatten

    visual = _open_clip_visual("RN50", "clip")
    if weights_file is not None:
        load_strict(visual, clip_visual_state(weights_file), "CLIP RN50", weights_file)
    # Swapped after loading so that the checkpoint's attnpool keys still match strictly.
    visual.attnpool = AvgPoolFlatten()
    return visual


@extractors.register("clip-vit-b32", help="CLIP ViT-B/32 image embedding (512-d)", weights_name="clip-vit-b32",
                     outputs={"embedding": 512}, preprocess=CLIP_224, fixed_input_size=224,
                     offers={"reg-dgm": "embedding"})
def build_clip_vit_b32(weights_file: Path | None) -> Any:
    from ._frozen import load_strict

    visual = _open_clip_visual("ViT-B-32", "clip-vit-b32")
    if weights_file is not None:
        load_strict(visual, clip_visual_state(weights_file), "CLIP ViT-B/32", weights_file)
    return visual
