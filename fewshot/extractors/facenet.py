"""FaceNet (InceptionResnetV1 trained on VGGFace2) through facenet-pytorch: 8631-d identity logits.

facenet-pytorch is installed with ``--no-deps`` (its pins ask for an old torch). Weights:
``20180402-114759-vggface2.pt`` as facenet-pytorch publishes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..registry import extractors
from . import require

FACENET_EXTRA = "pip install requests && pip install --no-deps facenet-pytorch"
FACENET_CLASSES = 8631  # VGGFace2 identities


@extractors.register("facenet", help="FaceNet InceptionResnetV1, VGGFace2 identity logits (8631-d)",
                     weights_name="facenet-vggface2", outputs={"logits": FACENET_CLASSES}, min_input_size=160,
                     offers={"reg-dgm": "logits"})
def build_facenet(weights_file: Path | None) -> Any:
    from ._frozen import load_strict, read_state_dict

    InceptionResnetV1 = require("facenet_pytorch", FACENET_EXTRA, "facenet").InceptionResnetV1
    # pretrained=None: never let facenet-pytorch download on its own; we load the file we resolved.
    model = InceptionResnetV1(pretrained=None, classify=True, num_classes=FACENET_CLASSES)
    if weights_file is not None:
        load_strict(model, read_state_dict(weights_file), "facenet-pytorch VGGFace2", weights_file)
    return model
