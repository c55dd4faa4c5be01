"""CDC: few-shot adaptation through cross-domain correspondence (Ojha et al., CVPR 2021).

Two parts, as the paper and its official code (utkarshojha/few-shot-gan-adaptation, ``train.py``) have them:

**Cross-domain distance consistency.** A frozen copy of the source G (the base) and the adapted G render the same
``feature_batch`` latents (official: 4, fresh each step, no style mixing). For each sample i the cosine
similarities of its intermediate feature map to those of every other sample j ≠ i are turned into a
distribution by a softmax over j; the term is

    λ · (1 / N(N−1)) · Σ_i KL(p_source,i ‖ p_adapted,i)

which is what the code computes with ``nn.KLDivLoss()(log p_adapted, p_source)`` (its default reduction
averages over the N(N−1) entries; the paper writes the KL the other way round, the code is followed). The code
draws for each row i one synthesis layer at random among all but the first (4×4) one (``layers = "sampled"``);
``layers = "all"`` averages the term over those layers instead (the paper's sum over l). λ = 1000 (``--kl_wt``).

**Anchor region and patch-level D.** ``anchors`` points z_k (official: as many as training images) are drawn once;
every ``anchor_interval``-th batch (official ``--subspace_freq``, default 4) G and D see latents near them,
``z = z_k + anchor_std·ε`` (official ``--subspace_std`` 0.1) and D judges whole images as usual. On the other
batches D judges patches: an extra 3×3 convolution (with leaky ReLU, as the code's ``Extra`` head) turns D's
feature map at ``patch_resolution`` (official: the first 512-channel 32×32 map of the 256 px D, ``--highp 1``)
into one logit per patch, for fakes and reals alike; the head trains with D's optimiser. The map is the output
of the downsampling convolution of D's block (the official ``temp2``, the residual branch before the skip is
added; this D scales that branch by √½, a constant the head absorbs).

Departures, said where they are made: both generators render with their fixed per-pixel noise (the official code
draws independent noise in each, so even equal generators differ; here equal generators give exactly zero), and
anchor batches keep the run's style mixing (the official code does not mix anchor latents).

This file is the method's options and registry entry; the torch code is ``_cdc_term.py``. Importing it imports
no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, is_dataclass
from typing import TYPE_CHECKING, Any

from ..registry import option, options_dict, regularizers

if TYPE_CHECKING:
    import torch

    from ._base import GeneratorRegularizer

NAME = "cdc"
LAYER_CHOICES = ("sampled", "all")


@dataclass(frozen=True)
class CDCOptions:
    weight: float = option(1000.0, "lambda of the distance-consistency term (official --kl_wt 1000; 0: off).",
                           check=lambda v: v >= 0, wanted=">= 0")
    feature_batch: int = option(4, "Latents per step the two generators are compared on (official 4).",
                                check=lambda v: v >= 3, wanted="at least 3")
    layers: str = option("sampled", "sampled: one random synthesis layer per sample (official code); all: the "
                                    "mean over the layers (the paper's sum).", choices=LAYER_CHOICES)
    anchors: int = option(0, "Anchor points in z (0: as many as training images, as the official code).",
                          check=lambda v: v >= 0, wanted=">= 0")
    anchor_std: float = option(0.1, "Spread of the latents drawn around an anchor (official --subspace_std).",
                               check=lambda v: v >= 0, wanted=">= 0")
    anchor_interval: int = option(4, "Every this many batches come from the anchors with the image-level D; the "
                                     "others get the patch-level D (official --subspace_freq 4; 1: anchors only).",
                                  check=lambda v: v >= 1, wanted="at least 1")
    patch_resolution: int = option(32, "Side of D's feature map the patch head reads (official: 32 at 256 px); "
                                       "capped at half the image size.",
                                   check=lambda v: v >= 4 and not v & (v - 1), wanted="a power of two >= 4")


def _checked(options: CDCOptions | Mapping[str, Any] | None) -> CDCOptions:
    values = options_dict(options) if is_dataclass(options) else dict(options or {})
    return regularizers.get(NAME).make_options(values)


def plan(options: CDCOptions | Mapping[str, Any]) -> str:
    """What --dry-run says about the term ('' when off)."""
    options = _checked(options)
    if options.weight == 0:
        return ""
    return (f"CDC: distance consistency to the base's G, lambda {options.weight:g} on {options.feature_batch} "
            f"latents ({options.layers} layers); anchors every {options.anchor_interval} batches, patch-level D "
            f"at {options.patch_resolution} px otherwise")


@regularizers.register(NAME, options=CDCOptions, plan=plan, source=True,
                       help="CDC: keep G's pairwise feature similarities those of the source G, anchor-region "
                            "image-level and patch-level D (Ojha et al. 2021).")
def build(options: CDCOptions | Mapping[str, Any], *, real_images: torch.Tensor | None = None,
          device: torch.device | str = "cpu", mirror: bool = True) -> GeneratorRegularizer:
    """The CDC term for ``options``; weight 0 gives the no-op regularizer (no anchors, no patch D either)."""
    from ._base import NullRegularizer

    options = _checked(options)
    if options.weight == 0:
        return NullRegularizer()
    from ._cdc_term import CDC

    return CDC(weight=options.weight, feature_batch=options.feature_batch, layers=options.layers,
               anchors=options.anchors, anchor_std=options.anchor_std, anchor_interval=options.anchor_interval,
               patch_resolution=options.patch_resolution)
