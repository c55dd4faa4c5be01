"""Generator regularizers: terms added to G's main loss, one file per method, in :data:`fewshot.registry.regularizers`.

    from fewshot.registry import regularizers

    entry = regularizers.get("reg-dgm")
    options = entry.make_options({"weight": 1.0, "model": "resnet18"})
    reg = regularizers.build("reg-dgm", options, real_images=uint8_images, device=device, mirror=True)
    loss_G = loss_G + reg.generator_loss(fake_images, real_images=reals if reg.requires_real_batch else None)

A method registers ``build(options, *, real_images, device, mirror, ...) -> GeneratorRegularizer`` with its
options dataclass; a weight of 0 must give :class:`NullRegularizer` without building or loading anything. Its
entry may carry ``plan=callable(options) -> str`` (what ``--dry-run`` says it would load; '' when off) and
``keywords=callable(**kwargs)`` (the method's own keyword form, for :func:`build_regularizer`).

This package imports no torch until a regularizer is built.
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from ..errors import FewshotError
from ..lazy import lazy_exports
from ..registry import regularizers

if TYPE_CHECKING:
    from ._base import GeneratorRegularizer

NONE = "none"  # the no-op: not a method, the absence of one


def build_regularizer(name: str, **kwargs: Any) -> GeneratorRegularizer:
    """Build a regularizer from keywords: ``build_regularizer("reg-dgm", model=..., lam=..., real_images=...)``.

    A method with a ``keywords`` builder takes its own keywords; any other takes its option names plus the
    build arguments (``real_images``, ``device``, ``mirror``). ``"none"`` gives the no-op regularizer.
    """
    if name == NONE:
        from ._base import NullRegularizer

        return NullRegularizer()
    entry = regularizers.get(name)
    builder = entry.extra.get("keywords")
    if builder is None:
        option_names = {f.name for f in fields(entry.options)}
        options = entry.make_options({k: v for k, v in kwargs.items() if k in option_names})
        kwargs = {k: v for k, v in kwargs.items() if k not in option_names}
        builder, args = entry.target, (options,)
    else:
        args = ()
    try:
        inspect.signature(builder).bind(*args, **kwargs)
    except TypeError as exc:  # a misspelt option from a preset or a caller
        raise FewshotError(f"bad options for regularizer {entry.name!r}: {exc}") from None
    return builder(*args, **kwargs)


_LAZY = {"GeneratorRegularizer": "_base", "NullRegularizer": "_base", "RegDGM": "_reg_dgm_term",
         "RegDGMOptions": "reg_dgm", "build_reg_dgm": "reg_dgm"}

__getattr__ = lazy_exports(__name__, _LAZY)  # torch-backed names, imported when first asked for

__all__ = ["GeneratorRegularizer", "NullRegularizer", "RegDGM", "RegDGMOptions", "build_reg_dgm", "build_regularizer"]
