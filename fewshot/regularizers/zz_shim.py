"""TEMPORARY (lead's branch only, replaced by Reg-DGM's own registration): Reg-DGM in the one registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..registry import option, regularizers


@dataclass(frozen=True)
class RegDGMOptions:
    weight: float = option(0.0, "lambda", check=lambda v: v >= 0, wanted=">= 0")
    model: str = option("resnet18", "extractor")
    estimator: str = option("mean", "estimator", choices=("mean", "paired"))
    normalize: bool = option(False, "normalize")
    weights: str | None = option(None, "weights file")


def _plan(options: Any) -> str:
    from pathlib import Path

    from .extractors import get_extractor_spec

    spec = get_extractor_spec(options.model)
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


@regularizers.register("reg-dgm", options=RegDGMOptions, help="Reg-DGM", plan=lambda o: _plan(o) if o.weight > 0 else "")
def build(options: Any, *, real_images: Any = None, device: Any = "cpu", mirror: bool = True) -> Any:
    import fewshot.regularizers as package

    return package.build_regularizer("reg-dgm", model=options.model, lam=options.weight, estimator=options.estimator,
                                     normalize=options.normalize, real_images=real_images, device=device,
                                     mirror=mirror, weights_path=options.weights)
