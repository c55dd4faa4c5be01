"""What a network family tells the rest of fewshot: how to build its generator, its official training defaults,
how the loss calls it, and which of its layers the transfer methods address.

A family is one module of :mod:`fewshot.archs` that registers an :class:`Architecture` subclass in
:data:`fewshot.registry.architectures` under each name the config's ``arch`` key may take. The discriminator is
StyleGAN2's for every family (as in the official StyleGAN3 code), so only the generator side differs here.

Importing a family module imports no torch: the command line lists the families when it is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import FewshotError
from ..registry import architectures

if TYPE_CHECKING:
    import torch
    from torch import nn

# The config (TrainConfig) and its derived Hyper are typed Any here: fewshot.config asks this package for the
# family, so importing it back would close a circle.
TrainConfig = Hyper = Any

DEFAULT_ARCH = "stylegan2"  # from scratch without an `arch` key


@dataclass(frozen=True)
class SynthesisUnit:
    """One step of the synthesis network as the transfer methods count it (a StyleGAN2 block, a StyleGAN3
    layer): the modules it holds, the resolution its features live at (a block's; a layer's band, twice its
    cutoff) and the modulated convolutions in it that AdaFM may adapt."""

    modules: tuple[str, ...]
    size: int
    convs: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainingDefaults:
    """The family's official values for what the config leaves unset."""

    pl_weight: float
    style_mixing: float
    blur_init_sigma: float
    blur_fade_kimg: float
    g_reg_interval: int | None  # None: G has no lazy regularisation phase (its optimiser is not rescaled)


class Architecture:
    """Base class of a network family. ``name`` is the registered name (``stylegan2``, ``stylegan3-t``, ...)."""

    name: str = ""
    generator_classes: tuple[str, ...] = ()  # the network classes (registry names) of its generators
    # stylegan2-ada-pytorch adds ``logits * 0`` (``image * 0``) to R1 and path length, so every tensor of the
    # network gets a gradient; StyleGAN3's loss does not (fewshot.train.loss.StyleGAN2Loss.tie).
    ties_regularizer_terms = True

    # ---- which family a generator belongs to ----

    def owns(self, class_name: str, init_kwargs: dict[str, Any]) -> bool:
        """True when a generator of ``class_name`` built from ``init_kwargs`` is of this family (variant)."""
        return class_name in self.generator_classes

    # ---- hyper-parameters and training semantics ----

    def hyper_spec(self, cfg: TrainConfig, resolution: int, world_size: int) -> tuple[int, dict[str, Any]]:
        """(batch, spec): the total batch and the values ``derive_hyper`` takes for every unset key (gamma, lr_g,
        lr_d, ema_kimg, map_layers, ema_rampup, channel_base, mbstd_group)."""
        raise NotImplementedError

    def training_defaults(self, cfg: TrainConfig, batch: int, fine_tuning: bool) -> TrainingDefaults:
        raise NotImplementedError

    # ---- building ----

    def scratch_generator(self, cfg: TrainConfig, hyper: Hyper, resolution: int, c_dim: int) -> nn.Module:
        raise NotImplementedError

    def discriminator_channels(self, cfg: TrainConfig, hyper: Hyper) -> tuple[int, int]:
        """(channel_base, channel_max) of a new discriminator."""
        return hyper.channel_base, cfg.channel_max

    def base_generator_kwargs(self, kwargs: dict[str, Any], cfg: TrainConfig, hyper: Hyper) -> dict[str, Any]:
        """The constructor arguments of the run's generator, from the base generator's (changed in place)."""
        if cfg.map_layers is not None:
            kwargs.setdefault("mapping_kwargs", {})["num_layers"] = cfg.map_layers
        return kwargs

    def architecture_keys(self, G: nn.Module) -> dict[str, Any]:
        """The config's architecture keys as a built generator has them (a base's, whatever the preset said)."""
        raise NotImplementedError

    # ---- how the loss calls the generator ----

    def mapping(self, G: nn.Module, z: torch.Tensor, c: torch.Tensor | None, *, update_emas: bool,
                second: bool = False) -> torch.Tensor:
        """ws of a training pass. ``update_emas``: the pass the official code lets update G's running averages;
        ``second``: the style-mixing latent, which never does."""
        raise NotImplementedError

    def synthesis(self, G: nn.Module, ws: torch.Tensor, *, update_emas: bool) -> torch.Tensor:
        raise NotImplementedError

    # ---- what the transfer methods address ----

    def units(self, G: nn.Module) -> list[SynthesisUnit]:
        """G's synthesis units from the input to the image (the last ones are nearest the image)."""
        raise NotImplementedError

    def fixed_modules(self, G: nn.Module) -> list[str]:
        """Synthesis modules before the first unit (StyleGAN3's Fourier input), part of G's specific part."""
        return []

    def units_phrase(self, G: nn.Module) -> str:
        """How many units G has, for a transfer count out of range."""
        raise NotImplementedError


def architecture(name: str | None) -> Architecture:
    """The registered family ``name`` (the default one for None)."""
    return _built(architectures.get(name or DEFAULT_ARCH))


def _built(entry: Any) -> Architecture:
    arch = entry.target()
    arch.name = entry.name  # the name it is registered under, which configs and records hold
    return arch


def architecture_of(G: nn.Module) -> Architecture:
    """The family of a built generator."""
    return architecture_for_class(type(G).__name__, getattr(G, "init_kwargs", {}))


def architecture_for_class(class_name: str, init_kwargs: dict[str, Any]) -> Architecture:
    """The family whose generator ``class_name`` with ``init_kwargs`` is; one line naming the class if none."""
    for entry in architectures.entries():
        arch = _built(entry)
        if arch.owns(class_name, init_kwargs):
            return arch
    raise FewshotError(f"{class_name} is not a generator of a known network family",
                       hint=f"known families: {', '.join(architectures.names())}")
