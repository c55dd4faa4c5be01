"""Closed-form latent directions (SeFa, Shen & Zhou, CVPR 2021) and edits along them.

Every style layer maps w through an affine ``s = A_l w + b_l`` before modulating its convolution. SeFa's
directions are the unit vectors n that move the styles most, ``argmax sum ||A n||^2``: the top eigenvectors of
``A^T A``, where ``A`` stacks the affine weight matrices of the chosen layers row by row, each row (one output
channel's weights) scaled to unit norm as the paper's code does (``weight / ||weight||`` over ``w_dim``). They
need no training and no samples, only the generator's weights.

Which layers: w index ``i`` feeds the style convolutions that read it; the last index, read by the final ToRGB
alone, contributes that ToRGB (the paper's code likewise takes the output layer only there). A fine-tune
shares its base's w space, so the base's directions edit it too (``fewshot edit ADAPTED --directions
base-directions.npz``). An edit adds ``strength * direction`` to the ws of the edited layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import FewshotError

if TYPE_CHECKING:
    from torch import nn

    from .nets import Generator


@dataclass(frozen=True)
class Directions:
    """SeFa directions ``[k, w_dim]`` (unit rows, orthogonal), their eigenvalues, and the ws they came from."""

    vectors: torch.Tensor
    eigenvalues: torch.Tensor
    layers: tuple[int, ...]


def style_affines(G: Generator) -> list[list[nn.Module]]:
    """Per w index, the affine layers that read it: the style convolutions, else (the last index) the ToRGB.

    StyleGAN3 gives every w one reader: ws[0] the Fourier input's affine (its rotation and translation),
    ws[i + 1] synthesis layer i's style affine, the last one ToRGB's.
    """
    if hasattr(G.synthesis, "layers") and hasattr(G.synthesis, "input"):
        return [[G.synthesis.input.affine]] + [[layer.affine] for layer in G.synthesis.layers()]
    convs: list[list[nn.Module]] = [[] for _ in range(G.num_ws)]
    torgbs: list[list[nn.Module]] = [[] for _ in range(G.num_ws)]
    w_idx = 0
    for block in G.synthesis.blocks():  # a block's ToRGB reads the w after its convs (the next block's first)
        for offset, name in enumerate(n for n in ("conv0", "conv1") if hasattr(block, n)):
            convs[w_idx + offset].append(getattr(block, name).affine)
        if getattr(block, "torgb", None) is not None and w_idx + block.num_conv < G.num_ws:
            torgbs[w_idx + block.num_conv].append(block.torgb.affine)
        w_idx += block.num_conv
    return [conv or rgb for conv, rgb in zip(convs, torgbs, strict=True)]


def _affine_matrix(affine: nn.Module) -> torch.Tensor:
    return affine.weight.detach().double().cpu() * affine.weight_gain  # [out, w_dim], as applied to w


def sefa_directions(G: Generator, layers: Sequence[int] | None = None, k: int = 10) -> Directions:
    """The top ``k`` SeFa directions of the ws ``layers`` (default all)."""
    layers = tuple(range(G.num_ws)) if layers is None else tuple(sorted(set(layers)))
    if not layers or any(not 0 <= i < G.num_ws for i in layers):
        raise FewshotError(f"layers must lie in 0-{G.num_ws - 1}")
    if not 1 <= k <= G.w_dim:
        raise FewshotError(f"--k must be in 1-{G.w_dim} (the w dimension), got {k}")
    by_w = style_affines(G)
    rows = torch.cat([_affine_matrix(a) for i in layers for a in by_w[i]])
    rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    values, vectors = torch.linalg.eigh(rows.T @ rows)  # ascending, columns orthonormal (float64)
    values, vectors = values.flip(0)[:k], vectors.flip(1)[:, :k].T.contiguous()
    # An eigenvector's sign is arbitrary (LAPACK builds differ): make each one's largest entry positive.
    signs = torch.sign(vectors.gather(1, vectors.abs().argmax(dim=1, keepdim=True)))
    return Directions(vectors=(vectors * signs).float(), eigenvalues=values.float(), layers=layers)


def save_directions(path: str | Path, directions: Directions) -> Path:
    import io

    from .image_output import write_file as atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, directions=directions.vectors.numpy(), eigenvalues=directions.eigenvalues.numpy(),
             layers=np.asarray(directions.layers, dtype=np.int64))
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_directions(path: str | Path, w_dim: int) -> Directions:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            vectors = torch.from_numpy(np.asarray(npz["directions"], dtype=np.float32))
            values = torch.from_numpy(np.asarray(npz["eigenvalues"], dtype=np.float32)) if "eigenvalues" in npz.files \
                else torch.zeros(len(vectors))
            layers = tuple(int(i) for i in npz["layers"]) if "layers" in npz.files else ()
    except KeyError:
        raise FewshotError(f"{path} has no array 'directions'", hint="write one with fewshot directions") from None
    except (OSError, ValueError, EOFError) as exc:
        reason = "not an .npz of arrays" if "pickle" in str(exc) else exc
        raise FewshotError(f"cannot read {path} as directions: {reason}") from None
    if vectors.ndim != 2 or vectors.shape[1] != w_dim:
        raise FewshotError(f"{path}: directions of shape {tuple(vectors.shape)}; this generator's w has {w_dim} values")
    return Directions(vectors=vectors, eigenvalues=values, layers=layers)


def edit_ws(ws: torch.Tensor, direction: torch.Tensor, strengths: Sequence[float],
            layers: Sequence[int]) -> torch.Tensor:
    """``[S, N, num_ws, w_dim]``: each of the N ws moved by each strength along ``direction`` in ``layers``."""
    mask = torch.zeros(ws.shape[1], 1, dtype=ws.dtype, device=ws.device)
    mask[list(layers)] = 1
    step = mask * direction.to(ws)  # [num_ws, w_dim]
    return torch.stack([ws + float(s) * step for s in strengths])
