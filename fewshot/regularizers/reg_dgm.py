"""Reg-DGM: regularizing a generator with a non-transferable pre-trained model (Zhong et al., ICLR 2023).

The generator minimises ``D(p_d ‖ p_g) + λ·E_{x~p_g}[E_f(x)]`` with

    E_f(x) = E_{x'~p_d}[(1/d)‖f(x) − f(x')‖²]

for a frozen network ``f`` with d outputs. Two estimators of ``E_f`` on a fake batch:

``paired`` (the official code): fake i against real i of the current batch,
    ``MSE(f(fake), f(real).detach())`` averaged over batch and feature dims. One extra forward of f per step.
``mean`` (default): since ``E_{x'}‖f(x) − f(x')‖² = ‖f(x) − μ_f‖² + tr Σ_f``, μ_f and tr Σ_f are computed once
    over the whole training set (with horizontal flips when the loop mirrors the data), and
    ``E_f(x) = (1/d)(‖f(x) − μ_f‖² + tr Σ_f)``. Same expectation and gradient, lower variance, no real forward.

Preprocessing follows the official code: images in [−1, 1] are normalised with the per-channel mean/std of the
training set (in [−1, 1] space); images smaller than the extractor's useful size are upsampled by nearest
neighbour by a power of two (32 px → ×8 = 256 px, as the official code; 64 px → ×4; ≥ 224 px unchanged).

Feature-scale normalisation (``normalize=True``) divides the energy by ``s = E_{x'}‖f(x') − μ_f‖²/d`` = tr Σ_f/d,
the spread of the training set's features. The normalised energy of a real image is 2 on average whatever the
extractor, so one λ carries across extractors. The paper's λ (un-normalised) maps to ``λ_norm = λ_paper · s``;
``stats()['reg_feature_scale']`` reports ``s`` for the data set at hand.

This file is the method: its options (:class:`RegDGMOptions`, the config section ``[regularizers.reg-dgm]``),
its registry entry (the builder, and ``plan`` for ``--dry-run``) and the keyword form older callers use
(:func:`build_reg_dgm`). The term itself, a torch module, is ``_reg_dgm_term.RegDGM``; f comes from
:data:`fewshot.registry.extractors` (any extractor that offers ``reg-dgm`` features). Importing this file
imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FewshotError
from ..extractors import build_extractor, extractor_spec, offering
from ..registry import option, options_dict, regularizers

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ._base import GeneratorRegularizer

from ._reg_dgm_facts import ESTIMATORS, NAME, upsample_factor  # noqa: E402, F401 - upsample_factor: public here


def _models() -> tuple[str, ...]:
    return offering(NAME)


@dataclass(frozen=True)
class RegDGMOptions:
    weight: float = option(0.0, "lambda, the weight of the term in G's loss (0: off; nothing is built or loaded).",
                           check=lambda v: v >= 0, wanted=">= 0")
    model: str = option("resnet18", "The frozen network f whose features the fakes are pulled towards.",
                        choices=_models, unknown="unknown Reg-DGM feature extractor {value!r}")
    estimator: str = option("mean", "mean: against the training set's feature mean and spread (computed once); "
                                    "paired: against the current real batch (the official code).",
                            choices=ESTIMATORS)
    normalize: bool = option(False, "Divide the energy by the training set's feature spread, so that one lambda "
                                    "carries across extractors.")
    weights: str | None = option(None, "Weights file for f in its upstream format (not hash-checked); "
                                       "none: the weights registry's file.")


def _checked(options: RegDGMOptions | Mapping[str, Any] | None) -> RegDGMOptions:
    """Options converted and range-checked (an instance made by hand is checked as one read from a preset)."""
    values = options_dict(options) if is_dataclass(options) else dict(options or {})
    return regularizers.get(NAME).make_options(values)


def plan(options: RegDGMOptions | Mapping[str, Any]) -> str:
    """What a run would regularise with and where f's weights would come from, loading nothing ('' when off)."""
    options = _checked(options)
    if options.weight == 0:
        return ""
    spec = extractor_spec(options.model)
    line = f"Reg-DGM: {spec.name}, lambda {options.weight:g}, estimator {options.estimator}; weights: "
    if options.weights:
        found = Path(options.weights).expanduser().is_file()
        return line + f"{options.weights}" + ("" if found else " (not found: the run would stop)")
    if spec.weights_name is None:
        return line + "none needed"
    from ..weights import weights_status

    status = weights_status(spec.weights_name, rehash=False)
    if status.path is not None and status.state in ("ok", "unverified"):
        return line + f"{status.path}"
    return line + f"{spec.weights_name} {status.state}, fetched when the run starts (`fewshot weights fetch " \
        f"{spec.weights_name}` now, or --reg-weights FILE)"


def build_reg_dgm(
    *,
    model: str | nn.Module = "resnet18",
    lam: float = 1.0,
    estimator: str = "mean",
    normalize: bool = False,
    real_images: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    weights_path: str | None = None,
    mirror: bool = True,
    min_input_size: int | None = None,
    stats_batch: int = 32,
) -> GeneratorRegularizer:
    """Reg-DGM from keywords (``build_regularizer("reg-dgm", model=..., lam=...)``): ``model`` is an extractor
    name or a module mapping images to features (then ``min_input_size`` defaults to 224)."""
    named = isinstance(model, str)
    options = _checked({"weight": lam, "estimator": estimator, "normalize": normalize,
                        "weights": None if weights_path is None else str(weights_path),
                        **({"model": model} if named else {})})
    return build(options, real_images=real_images, device=device, mirror=mirror,
                 network=None if named else model, min_input_size=min_input_size, stats_batch=stats_batch)


@regularizers.register(NAME, options=RegDGMOptions, plan=plan, keywords=build_reg_dgm, aliases=("reg_dgm",),
                       help="Reg-DGM: pull the fakes' features under a frozen pre-trained network towards the "
                            "training set's (Zhong et al. 2023).")
def build(
    options: RegDGMOptions | Mapping[str, Any],
    *,
    real_images: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    mirror: bool = True,
    network: nn.Module | None = None,
    min_input_size: int | None = None,
    stats_batch: int = 32,
) -> GeneratorRegularizer:
    """The Reg-DGM term for ``options``; weight 0 gives the no-op regularizer, which loads and touches nothing.

    ``real_images``: the training set, uint8 ``[N, 3, R, R]``; ``mirror``: whether the loop trains on its
    x-flips too. ``network`` replaces the registered extractor by a caller's module (tests, experiments).
    """
    from ._base import NullRegularizer

    options = _checked(options)  # an unknown model fails even at weight 0
    if options.weight == 0:
        return NullRegularizer()
    real_images = _check_real_images(real_images)
    if network is None:
        from ..hub import suggesting

        with suggesting("--reg-weights FILE"):  # weights that cannot be fetched: the hint offers the run's option
            extractor, spec = build_extractor(options.model, weights_path=options.weights, device=device)
        if len(spec.outputs) > 1:
            raise FewshotError(f"Reg-DGM reads one feature vector; the {spec.name!r} network returns "
                               f"{len(spec.outputs)} ({', '.join(spec.outputs)})")
        name, size, fixed, fuse = spec.name, spec.min_input_size, spec.fixed_input_size, spec.fuse_upsampling
    else:
        extractor, name, size, fixed, fuse = network, type(network).__name__, 224, None, None
    from ._reg_dgm_term import RegDGM

    return RegDGM(
        extractor,
        lam=options.weight,
        real_images=real_images,
        estimator=options.estimator,
        normalize=options.normalize,
        mirror=mirror,
        min_input_size=size if min_input_size is None else min_input_size,
        fixed_input_size=fixed,
        device=device,
        stats_batch=stats_batch,
        name=name,
        fuse_upsampling=fuse,
    )


def _check_real_images(real_images: object) -> torch.Tensor:
    import torch

    if real_images is None:
        raise FewshotError("Reg-DGM needs the training images (real_images) for its normalisation statistics")
    if not isinstance(real_images, torch.Tensor):
        try:
            real_images = torch.as_tensor(real_images)
        except Exception:  # noqa: BLE001 - anything that is not an image array
            raise FewshotError("Reg-DGM real_images must be a uint8 tensor [N, 3, R, R]") from None
    if real_images.dtype != torch.uint8 or real_images.ndim != 4 or real_images.shape[0] < 1:
        raise FewshotError(
            f"Reg-DGM real_images must be a uint8 tensor [N, C, R, R], got {real_images.dtype} {list(real_images.shape)}"
        )
    if real_images.shape[1] != 3:
        raise FewshotError(f"Reg-DGM extractors take RGB images, the training set has {real_images.shape[1]} channels")
    return real_images
