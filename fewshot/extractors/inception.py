"""The FID Inception-v3 (the TF graph of 2015-12-05, ``_inception_net``): what FID, KID and IS read.

Outputs: ``pool``, the 2048-d average-pool features (FID, KID), and ``logits``, the 1008 logits without the
bias (IS, as the original TF code reads them). Input protocol (pytorch-fid): uint8 -> [0, 1] -> bilinear
resize to 299x299 (``align_corners=False``, no antialiasing) -> [-1, 1]. Weights: pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth``, pinned: an explicit file must be the published one, or the numbers
would not be FIDs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..registry import extractors
from . import Preprocess

INCEPTION = "inception-v3-fid"
# (x - 0.5) / 0.5 is 2x - 1 exactly in binary floating point: halving and doubling are exact.
INCEPTION_299 = Preprocess(299, antialias=False, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                           note="bilinear to 299x299 (align_corners=False, no antialias), scaled to [-1, 1]")


@extractors.register(INCEPTION, help="FID Inception-v3 (TF 2015-12-05 graph): 2048-d pool features, 1008 logits",
                     weights_name=INCEPTION, outputs={"pool": 2048, "logits": 1008}, preprocess=INCEPTION_299,
                     pinned=True)
def build_inception(weights_file: Path | None) -> Any:
    from ._frozen import load_strict, read_state_dict
    from ._inception_net import FIDInceptionV3

    net = FIDInceptionV3()
    # torchvision-style full Inception files carry an auxiliary classifier the FID graph never uses.
    state = {k: v for k, v in read_state_dict(weights_file, INCEPTION).items() if not k.startswith("AuxLogits.")}
    load_strict(net, state, "FID Inception-v3", weights_file)
    return net
