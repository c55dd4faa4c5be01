"""``adafm`` (Zhao, Cong & Carin 2020): general-part transfer plus adaptive filter modulation.

Every frozen conv of G's general part gets per-(out, in)-channel ``gamma`` (init 1) and ``beta``
(init 0): ``W_hat[o, i] = gamma[o, i] * W[o, i] + beta[o, i]``, applied to the base weight BEFORE
StyleGAN2's modulation and demodulation (demodulation cancels a per-output common factor of gamma;
beta survives). Only gamma, beta and the specific part train. D's general part stays plainly frozen.

ToRGB: the paper's general part includes the RGB output layer and modulates every frozen conv, so
ToRGB layers of frozen blocks are modulated too (``adafm_torgb=True``, default). Note that for a 1x1
kernel gamma/beta can reach any weight matrix, so this effectively lets those ToRGB weights adapt;
``adafm_torgb=False`` keeps them plainly frozen.

``adafm_start_kimg``: until the trainer reports that many kimg through ``on_kimg``, gamma/beta stay
at 1/0 (they enter the forward detached, so they get no gradient) while the specific part trains.
Export (``export_generator``) folds gamma/beta into plain weights.

How a layer is modulated: after freezing, each modulated ``SynthesisLayer`` / ``ToRGBLayer`` is replaced in its
parent block by an :class:`AdaFMSynthesisLayer` / :class:`AdaFMToRGBLayer` built from it. The new layer holds the
very tensors and submodules of the old one under the same names (so the ``state_dict`` keys are the plain ones
plus ``adafm_gamma`` / ``adafm_beta``), runs no constructor (no random numbers drawn), and overrides
``conv_weight()``. They are ordinary subclasses, so ``copy.deepcopy`` and pickling work. They subclass the
networks' layers, which import torch; they are defined the first time they are needed, so that importing this
module (the command line reads its options) stays torch-free.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import FewshotError
from ..registry import option, transfers
from ._base import BlockRow, check_generator
from .general_part import GENERAL_HELP, GeneralPart, GeneralPartOptions, parse_general

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..nets import Generator

ADAFM_GAMMA = "adafm_gamma"
ADAFM_BETA = "adafm_beta"
_LAYER_CLASS_NAMES = ("AdaFMSynthesisLayer", "AdaFMToRGBLayer", "AdaFMStyleGAN3Layer")


class AdaFMLayer:
    """What the AdaFM layers add to a frozen modulated layer (mixed into a subclass of it)."""

    adafm_active: bool = True  # False until the AdaFM start: gamma/beta enter detached

    @classmethod
    def from_layer(cls, layer: nn.Module, active: bool) -> AdaFMLayer:
        """An AdaFM layer holding ``layer``'s own state (same tensors, submodules, names, hooks) plus gamma = 1 and
        beta = 0 of shape [out, in]. No ``__init__`` runs: it would draw fresh random weights."""
        import torch
        from torch import nn

        new = cls.__new__(cls)
        # Module bookkeeping (_parameters, _buffers, _modules, hook dicts, ...) copied, so the two never share it.
        new.__dict__.update({k: copy.copy(v) if isinstance(v, (dict, set)) else v for k, v in vars(layer).items()})
        out_channels, in_channels = layer.weight.shape[:2]
        like = dict(device=layer.weight.device, dtype=layer.weight.dtype)
        new.register_parameter(ADAFM_GAMMA, nn.Parameter(torch.ones([out_channels, in_channels], **like)))
        new.register_parameter(ADAFM_BETA, nn.Parameter(torch.zeros([out_channels, in_channels], **like)))
        new.adafm_active = active
        return new

    def conv_weight(self) -> torch.Tensor:
        return modulated_weight(self)


def modulated_weight(layer: Any) -> torch.Tensor:
    """AdaFM: ``W_hat[o, i, :, :] = gamma[o, i] * W[o, i, :, :] + beta[o, i]`` on the base weight.

    While the AdaFM start is not reached, gamma/beta enter detached, so they get no gradient
    (whatever the trainer does with ``requires_grad``) and stay at their values.
    """
    gamma = getattr(layer, ADAFM_GAMMA)
    beta = getattr(layer, ADAFM_BETA)
    if not layer.adafm_active:
        gamma, beta = gamma.detach(), beta.detach()
    weight = layer.weight
    return weight * gamma.to(weight.dtype)[:, :, None, None] + beta.to(weight.dtype)[:, :, None, None]


_layer_classes: dict[type, type] = {}  # plain layer class -> its AdaFM subclass, filled on first use


def adafm_layer_classes() -> dict[type, type]:
    """``{SynthesisLayer: AdaFMSynthesisLayer, ToRGBLayer: AdaFMToRGBLayer, StyleGAN3's SynthesisLayer:
    AdaFMStyleGAN3Layer}`` (defined on the first call)."""
    if not _layer_classes:
        from ..nets.generator import SynthesisLayer, ToRGBLayer
        from ..nets.stylegan3 import SynthesisLayer as StyleGAN3Layer

        class AdaFMSynthesisLayer(AdaFMLayer, SynthesisLayer):
            """A frozen ``SynthesisLayer`` whose base weight is adapted by AdaFM before (de)modulation."""

        class AdaFMToRGBLayer(AdaFMLayer, ToRGBLayer):
            """A frozen ``ToRGBLayer`` whose base weight is adapted by AdaFM before modulation."""

        class AdaFMStyleGAN3Layer(AdaFMLayer, StyleGAN3Layer):
            """A frozen StyleGAN3 layer (ToRGB included) whose base weight is adapted by AdaFM before its
            normalisation and (de)modulation. The layer reads ``self.weight`` in its forward and has no weight
            hook, so the forward reads the adapted weight in its place: a frozen weight is a buffer, swapped for
            the call only (the state_dict between calls is the plain one)."""

            def forward(self, x: torch.Tensor, w: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                base = self._buffers["weight"]
                self._buffers["weight"] = modulated_weight(self)
                try:
                    return super().forward(x, w, **kwargs)
                finally:
                    self._buffers["weight"] = base

        for cls in (AdaFMSynthesisLayer, AdaFMToRGBLayer, AdaFMStyleGAN3Layer):
            cls.__qualname__ = cls.__name__
            globals()[cls.__name__] = cls  # a module attribute, so pickling finds the class by name
        _layer_classes.update({SynthesisLayer: AdaFMSynthesisLayer, ToRGBLayer: AdaFMToRGBLayer,
                               StyleGAN3Layer: AdaFMStyleGAN3Layer})
    return _layer_classes


def __getattr__(name: str) -> Any:
    if name in _LAYER_CLASS_NAMES:
        adafm_layer_classes()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_torgb(layer: nn.Module) -> bool:
    """A ToRGB layer: StyleGAN2's ToRGBLayer, StyleGAN3's last synthesis layer."""
    return type(layer).__name__ in ("ToRGBLayer", "AdaFMToRGBLayer") or bool(getattr(layer, "is_torgb", False))


@dataclass(frozen=True)
class AdaFMOptions(GeneralPartOptions):
    general: tuple[int, int] | None = option(
        None, GENERAL_HELP, parse=parse_general, check=lambda v: v[0] >= 1,
        wanted="at least one frozen generator block to modulate (G >= 1)",
    )
    adafm_start_kimg: float = option(
        0.0, "AdaFM: keep gamma=1, beta=0 until this many kimg (the specific part trains first).",
        check=lambda v: v >= 0, wanted=">= 0",
    )
    adafm_torgb: bool = option(
        True, "AdaFM: modulate the ToRGB layers of the frozen blocks too (the paper's general part includes "
        "the RGB output layer); false keeps them plainly frozen.",
    )


@transfers.register("adafm", options=AdaFMOptions)
class AdaFM(GeneralPart):
    """General-part transfer with AdaFM (gamma*W+beta) on every frozen G conv; specific part trains."""

    settings: AdaFMOptions
    added_parameters = (ADAFM_GAMMA, ADAFM_BETA)

    def __init__(self, options: AdaFMOptions | None = None, *, r1_fake: bool = False, seed: int = 0) -> None:
        super().__init__(options, r1_fake=r1_fake, seed=seed)
        self._adafm_open = self.adafm_start_kimg <= 0
        self._adafm_layers: weakref.WeakSet[Any] = weakref.WeakSet()  # the trained G's AdaFM layers (gated)

    @property
    def adafm_start_kimg(self) -> float:
        return self.settings.adafm_start_kimg

    @property
    def adafm_torgb(self) -> bool:
        return self.settings.adafm_torgb

    def _plan(self) -> dict[str, Any]:
        return {**super()._plan(), "adafm": True, "adafm_torgb": self.adafm_torgb}

    def g_general_count(self, G: Generator) -> int:
        g = super().g_general_count(G)
        if g == 0:
            raise FewshotError("adafm needs at least one frozen generator block to modulate (general G >= 1)")
        return g

    def modulated_layers(self, G: Generator) -> list[str]:
        names = []
        for unit in self.frozen_g_units(G):
            for conv in unit.convs:
                if self.adafm_torgb or not _is_torgb(G.get_submodule(conv)):
                    names.append(conv)
        return names

    def _adapt_frozen(self, G: Generator) -> None:
        classes = adafm_layer_classes()
        for layer_name in self.modulated_layers(G):
            parent_name, _, child = layer_name.rpartition(".")
            parent, layer = G.get_submodule(parent_name), G.get_submodule(layer_name)
            adafm_class = classes.get(type(layer))
            if adafm_class is None:
                raise FewshotError(f"AdaFM cannot modulate a {type(layer).__name__} ({layer_name})")
            setattr(parent, child, adafm_class.from_layer(layer, self._adafm_open))  # same slot: same key order

    def _adopt_trained(self, G: Generator) -> None:
        for module in G.modules():
            if isinstance(module, AdaFMLayer):
                self._adafm_layers.add(module)
                module.adafm_active = self._adafm_open

    def on_kimg(self, kimg: float) -> bool:
        """Open the AdaFM gate once ``kimg >= adafm_start_kimg``; returns True when the state changed.

        Until then gamma/beta are in the optimizer but get no gradient, so they stay at 1 and 0 while
        the specific part trains. Call it after ``apply`` and on every step (cheap); on resume call
        it with the resumed kimg.
        """
        should_open = kimg >= self.adafm_start_kimg
        if should_open == self._adafm_open:
            return False
        self._adafm_open = should_open
        for layer in self._adafm_layers:
            layer.adafm_active = should_open
        return True

    def export_generator(self, G: nn.Module) -> nn.Module:
        """A new plain Generator whose conv weights are the folded ``gamma * W + beta`` and whose state_dict has
        no ``adafm_*`` keys (``G`` itself when it carries no AdaFM layer)."""
        import torch

        G = check_generator(G)
        if not any(isinstance(m, AdaFMLayer) for m in G.modules()):
            return G
        state: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for module_name, module in G.named_modules():
                if isinstance(module, AdaFMLayer):
                    state[f"{module_name}.weight"] = modulated_weight(module).detach().clone()
            for key, value in G.state_dict().items():
                leaf = key.rsplit(".", 1)[-1]
                if leaf in self.added_parameters or key in state:
                    continue
                state[key] = value.detach().clone()
        with torch.random.fork_rng(devices=[]):  # construction draws random numbers; keep the trainer's RNG
            plain = type(G)(**copy.deepcopy(G.init_kwargs))
        plain.load_state_dict(state, strict=True)
        device = next(iter(state.values())).device
        return plain.to(device).train(G.training)

    def frozen_block_row(self, G: Generator, block: str, weights: int) -> BlockRow:
        here = [m for m in self.modulated_layers(G) if m == block or m.startswith(block + ".")]
        if not here:
            return super().frozen_block_row(G, block, weights)
        shapes = [G.get_submodule(m).weight.shape for m in here]
        gamma_beta = sum(2 * shape[0] * shape[1] for shape in shapes)
        parts = ",".join(m.rsplit(".", 1)[1] for m in here)
        return BlockRow("G", block, f"frozen + AdaFM ({parts})", weights, gamma_beta)

    def header(self) -> str:
        start = f", AdaFM from {self.adafm_start_kimg:g} kimg" if self.adafm_start_kimg > 0 else ""
        torgb = "" if self.adafm_torgb else ", ToRGB not modulated"
        return super().header() + start + torgb
