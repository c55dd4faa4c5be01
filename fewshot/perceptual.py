"""LPIPS (Zhang et al., CVPR 2018), VGG-16 variant, v0.1: the perceptual distance of the projector and the metrics.

The distance is the ``lpips`` package's: its ``LPIPS(net="vgg")`` module and the linear-layer weights that ship
inside it (``lpips/weights/v0.1/vgg.pth``, calibrated on human judgements). Its VGG-16 trunk is torchvision's
ImageNet network, which the package would download itself; here it is filled from fewshot's weights registry
(``vgg16``, the same ``vgg16-397923af.pth`` file the precision/recall metric reads), so it works offline once the
file is in the cache, and fails in one line with the remedies when it is not. NVIDIA's projector reads a
TorchScript ``vgg16.pt`` instead: that is code, and fewshot does not load it.

Two ways to use it:

* ``lpips(a, b)``: the distance of each pair of float images in ``[-1, 1]``, differentiable (the projector);
* ``lpips.embed(images)``: one vector per image with ``lpips(a, b) == ||embed(a) - embed(b)||^2`` (to float32
  rounding), so N x M distances cost N + M trunk passes and one matrix product (:func:`pairwise_lpips`, for the
  metrics). It holds because each LPIPS layer term is ``mean_hw(sum_c w_c (f_a - f_b)^2)`` with ``w_c >= 0``:
  scaling the unit-normalised features by ``sqrt(w_c / HW)`` turns it into a squared Euclidean distance.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import FewshotError

LPIPS_INSTALL = "pip install lpips"
WEIGHTS_NAME = "vgg16"  # the fewshot.weights entry of the trunk
# torchvision's VGG-16 ``features`` indices of each LPIPS stage (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
_STAGES = (range(0, 4), range(4, 9), range(9, 16), range(16, 23), range(23, 30))


def _lpips_package():
    try:
        import lpips
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] != "lpips":  # installed, but one of its own imports is missing
            raise FewshotError(f"the lpips package cannot import {exc.name!r}",
                               hint=f"pip install {exc.name.split('.')[0]}") from None
        raise FewshotError("LPIPS needs the 'lpips' package", hint=f"install it: {LPIPS_INSTALL}") from None
    return lpips


def _trunk_state(weights_file: Path) -> dict[str, torch.Tensor]:
    """torchvision's ``features.N.*`` keys as the lpips trunk names them (``net.sliceK.N.*``)."""
    from .extractors._frozen import read_state_dict

    state = read_state_dict(weights_file, "VGG-16")
    mapped = {}
    for k, stage in enumerate(_STAGES, start=1):
        for index in stage:
            for part in ("weight", "bias"):
                key = f"features.{index}.{part}"
                if key in state:
                    mapped[f"net.slice{k}.{index}.{part}"] = state[key]
    return mapped


class LPIPS(nn.Module):
    """The frozen LPIPS-VGG distance; see the module docstring."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        if any(bool((w < 0).any()) for w in self._lin_weights()):
            raise FewshotError("LPIPS linear weights with negative entries: not the published v0.1 file")

    def _lin_weights(self) -> list[torch.Tensor]:
        return [layer.model[-1].weight.detach().flatten() for layer in self.model.lins]  # [C] each, all >= 0

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distances ``[N]`` of float images ``[N, 3, H, W]`` in ``[-1, 1]``."""
        return self.model(a, b).flatten()

    def stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's five unit-normalised feature maps of images in ``[-1, 1]``."""
        import lpips

        feats = self.model.net(self.model.scaling_layer(images))
        return [lpips.normalize_tensor(f) for f in feats]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` vectors whose squared distances are the LPIPS distances (images in ``[-1, 1]``)."""
        parts = []
        for w, f in zip(self._lin_weights(), self.stages(images), strict=True):
            scale = (w / (f.shape[2] * f.shape[3])).sqrt().view(1, -1, 1, 1)  # in the model's dtype
            parts.append((f * scale).flatten(1))
        return torch.cat(parts, dim=1)


def load_lpips(weights_path: str | Path | None = None, *, device: torch.device | str = "cpu",
               random_trunk: bool = False, seed: int = 0, flag: str | None = None) -> LPIPS:
    """The LPIPS-VGG distance, frozen, on ``device``.

    ``weights_path``: an explicit VGG-16 file (else the registry's cache, a download, or one line with the
    remedies; ``flag`` names the caller's option for the file). ``random_trunk``: a VGG-16 with seeded random
    weights and the published linear layers, for tests and for timing without the file.
    """
    from .frozen import prepare_frozen
    from .weights import resolve_weights

    lpips = _lpips_package()
    trunk_file = None if random_trunk else resolve_weights(WEIGHTS_NAME, weights_path, flag=flag)
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")  # torchvision's note on the ``pretrained`` argument the package passes
        torch.manual_seed(seed)
        model = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)  # trunk filled below, never downloaded
    if trunk_file is not None:
        state = _trunk_state(trunk_file)
        trunk_keys = {k for k in model.state_dict() if k.startswith("net.")}
        if set(state) != trunk_keys:
            missing = sorted(trunk_keys - set(state))[:3]
            raise FewshotError(f"VGG-16 weights {trunk_file} are not torchvision's vgg16 layout "
                               f"(missing {', '.join(missing) or 'nothing'})")
        model.load_state_dict(state, strict=False)
    model.requires_grad_(False).eval()
    prepare_frozen(model.net)
    return LPIPS(model).to(device)


def uint8_to_lpips(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` -> float32 in ``[-1, 1]``, the range LPIPS takes."""
    return images.float() / 127.5 - 1


@torch.no_grad()
def embed_uint8(lpips: LPIPS, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """:meth:`LPIPS.embed` of uint8 images in batches, on the CPU."""
    device = next(lpips.parameters()).device
    out = [lpips.embed(uint8_to_lpips(images[i:i + batch_size]).to(device)).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 0)


def pairwise_lpips(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` LPIPS distances from two sets of :meth:`LPIPS.embed` vectors (float64 sums: the squared norms
    of 10^5..10^6-long vectors, subtracted, lose float32's digits)."""
    x, y = x.double(), y.double()
    d = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None] - 2 * x @ y.T
    return d.clamp_min_(0).float()
