"""EWC: few-shot adaptation with elastic weight consolidation (Li et al., NeurIPS 2020).

G's weights are held near the source network's in proportion to how much each mattered to it:

    λ · Σ_i F_i (θ_i − θ_source,i)²

with F the diagonal of the Fisher information of G's weights at the source, estimated as the paper does from a
proxy likelihood: the frozen source D's verdict on generated images, ``log D(G(z))``. F_i is the mean over
``fisher_samples`` generated images of the squared gradient of G's adversarial loss (``−log D(G(z))`` for the
logistic loss: the same squared gradient) with respect to θ_i, ``fisher_batch`` images per gradient (1: the
empirical Fisher's per-image squares; a larger batch is faster and averages before squaring, which makes F
smaller). The estimate runs once when the run starts (again on resume, from the config's base, with its own
seeded random stream: the same F bit for bit, so a snapshot need not carry it).

λ = 5·10⁸ is the value the paper is cited for (its implementation details; the number was not re-read from the
paper's text when this was written, and no official code is public); with ``fisher_batch`` 1 F is the
per-sample empirical Fisher. Only G's trainable tensors that the source has under the same name and shape are held.

This file is the method's options and registry entry; the torch code is ``_ewc.py``. Importing it imports no
torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, is_dataclass
from typing import TYPE_CHECKING, Any

from ..registry import option, options_dict, regularizers

if TYPE_CHECKING:
    import torch

    from ._base import GeneratorRegularizer

NAME = "ewc"


@dataclass(frozen=True)
class EWCOptions:
    weight: float = option(5e8, "lambda of the penalty (the paper: 5e8; 0: off).", check=lambda v: v >= 0,
                           wanted=">= 0")
    fisher_samples: int = option(256, "Generated images the Fisher information is averaged over.",
                                 check=lambda v: v >= 1, wanted="at least 1")
    fisher_batch: int = option(1, "Images per gradient in the estimate (1: per-image squared gradients).",
                               check=lambda v: v >= 1, wanted="at least 1")


def _checked(options: EWCOptions | Mapping[str, Any] | None) -> EWCOptions:
    values = options_dict(options) if is_dataclass(options) else dict(options or {})
    return regularizers.get(NAME).make_options(values)


def plan(options: EWCOptions | Mapping[str, Any]) -> str:
    options = _checked(options)
    if options.weight == 0:
        return ""
    return (f"EWC: lambda {options.weight:g}, Fisher information from the base's D on {options.fisher_samples} "
            f"generated images ({options.fisher_batch} per gradient), estimated when the run starts")


@regularizers.register(NAME, options=EWCOptions, plan=plan, source=True,
                       help="EWC: hold G's weights near the source's, weighted by their Fisher information "
                            "(Li et al. 2020).")
def build(options: EWCOptions | Mapping[str, Any], *, real_images: torch.Tensor | None = None,
          device: torch.device | str = "cpu", mirror: bool = True) -> GeneratorRegularizer:
    """The EWC penalty for ``options``; weight 0 gives the no-op regularizer (no Fisher estimate)."""
    from ._base import NullRegularizer

    options = _checked(options)
    if options.weight == 0:
        return NullRegularizer()
    from ._ewc import EWC

    return EWC(weight=options.weight, fisher_samples=options.fisher_samples, fisher_batch=options.fisher_batch)
