"""What every transfer method shares: a plan (which blocks are frozen, modulated, re-initialised) and
the machinery that carries it out on a fewshot ``Generator`` / ``Discriminator``.

Design choices (documented here because the trainer relies on them):

* **Frozen tensors become buffers.** Every parameter of a frozen block is re-registered as a buffer
  under the same name (the official FreezeD convention, extended to the generator). The
  ``state_dict`` keys do not change, ``net.parameters()`` no longer yields them, and a phase loop
  that calls ``net.requires_grad_(True)`` cannot unfreeze them: no optimizer can ever reach them.
* **AdaFM swaps the layer class.** A modulated layer becomes ``AdaFMSynthesisLayer`` /
  ``AdaFMToRGBLayer`` (subclasses of the plain layers) that gain two parameters, ``adafm_gamma`` and
  ``adafm_beta`` of shape ``[out, in]``, and override ``conv_weight()``. Subclasses (not bound
  methods) keep ``copy.deepcopy`` and pickling working.
* **Resume = apply, then load.** AdaFM adds ``...adafm_gamma`` / ``...adafm_beta`` keys to the
  ``state_dict``. To resume, build fresh nets from ``init_kwargs``, call ``apply`` (and ``apply_ema``)
  and only then load the saved ``state_dict`` (see :func:`fewshot.transfer.load_transfer_bundle`).
* **Idempotent.** Applying the same transfer twice to a net is a no-op (so ``G_ema = deepcopy(G)``
  after ``apply`` followed by ``apply_ema(G_ema)`` is fine); applying a different one is an error.
"""

from __future__ import annotations

import copy
import json
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import FewshotError
from ..nets import Discriminator, Generator
from ..nets.generator import SynthesisLayer, ToRGBLayer
from .options import default_general, official_freezed_count  # noqa: F401  (re-export)

# Attribute names stored on an adapted network (plain Python attributes: deepcopy carries them).
MARK_ATTR = "_fewshot_transfer"  # the JSON key of the transfer applied
FROZEN_ATTR = "_fewshot_frozen"  # names (state_dict form) of former parameters now frozen as buffers

ADAFM_GAMMA = "adafm_gamma"
ADAFM_BETA = "adafm_beta"


def _modulated_weight(layer: nn.Module) -> torch.Tensor:
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


class AdaFMSynthesisLayer(SynthesisLayer):
    """A frozen ``SynthesisLayer`` whose base weight is adapted by AdaFM before (de)modulation."""

    adafm_active: bool = True

    def conv_weight(self) -> torch.Tensor:
        return _modulated_weight(self)


class AdaFMToRGBLayer(ToRGBLayer):
    """A frozen ``ToRGBLayer`` whose base weight is adapted by AdaFM before modulation."""

    adafm_active: bool = True

    def conv_weight(self) -> torch.Tensor:
        return _modulated_weight(self)


ADAFM_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    SynthesisLayer: AdaFMSynthesisLayer,
    ToRGBLayer: AdaFMToRGBLayer,
}
PLAIN_CLASSES: dict[type[nn.Module], type[nn.Module]] = {v: k for k, v in ADAFM_CLASSES.items()}


@dataclass(frozen=True)
class BlockRow:
    """One line of :meth:`Transfer.describe`."""

    net: str
    block: str
    status: str
    weights: int
    trainable: int


def _check_generator(G: nn.Module) -> Generator:
    if not isinstance(G, Generator):
        raise FewshotError(f"transfer methods adapt a fewshot Generator, got {type(G).__name__}")
    return G


def _check_discriminator(D: nn.Module) -> Discriminator:
    if not isinstance(D, Discriminator):
        raise FewshotError(f"transfer methods adapt a fewshot Discriminator, got {type(D).__name__}")
    return D


def _freeze_as_buffers(net: nn.Module, prefix: str) -> None:
    """Re-register every parameter under ``prefix`` (a submodule name) as a buffer of the same name."""
    frozen: set[str] = getattr(net, FROZEN_ATTR)
    root = net.get_submodule(prefix)
    for mod_name, module in root.named_modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            del module._parameters[name]
            module.register_buffer(name, param.detach())
            frozen.add(".".join(p for p in (prefix, mod_name, name) if p))


def _count(tensors: dict[str, torch.Tensor], prefix: str) -> int:
    return sum(t.numel() for k, t in tensors.items() if k == prefix or k.startswith(prefix + "."))


class Transfer:
    """Base class: subclasses set the plan in ``__init__``; everything else is shared.

    The plan: ``general_g`` synthesis blocks (highest resolutions, with their ToRGB) frozen,
    ``general_d`` discriminator blocks (nearest the input) frozen, ``specific`` = "finetune" or
    "reinit" for the rest of G (low-resolution synthesis blocks + mapping), ``adafm`` on the frozen
    G convs. ``general_g = None`` means "the default for the generator's resolution".
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    accepted_options: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        general_g: int | None = 0,
        general_d: int = 0,
        specific: str = "finetune",
        adafm: bool = False,
        adafm_torgb: bool = True,
        adafm_start_kimg: float = 0.0,
        r1_fake: bool = False,
        seed: int = 0,
    ) -> None:
        if specific not in ("finetune", "reinit"):
            raise FewshotError(f"specific must be 'finetune' or 'reinit', got {specific!r}")
        if adafm_start_kimg < 0:
            raise FewshotError(f"adafm_start_kimg must be >= 0, got {adafm_start_kimg}")
        self.general_g = general_g
        self.general_d = general_d
        self.specific = specific
        self.adafm = adafm
        self.adafm_torgb = adafm_torgb
        self.adafm_start_kimg = float(adafm_start_kimg)
        self.r1_fake = bool(r1_fake)
        self.seed = int(seed)
        self._adafm_open = self.adafm_start_kimg <= 0
        self._adafm_layers: weakref.WeakSet[nn.Module] = weakref.WeakSet()

    # ---- options: what a training record stores to rebuild this transfer on resume ----

    @property
    def options(self) -> dict[str, Any]:
        """JSON-able options; ``build_transfer(**t.options)`` rebuilds an equal transfer."""
        return {"name": self.name, "r1_fake": self.r1_fake, "seed": self.seed}

    def _key(self, G_or_D: str) -> str:
        # What must agree for a net to count as "already adapted by this transfer".
        plan = {"name": self.name, "general_g": self.general_g, "general_d": self.general_d,
                "specific": self.specific, "adafm": self.adafm, "adafm_torgb": self.adafm_torgb,
                "seed": self.seed, "net": G_or_D}
        return json.dumps(plan, sort_keys=True)

    # ---- the plan, resolved against concrete nets ----

    def g_general_count(self, G: Generator) -> int:
        n_blocks = len(G.synthesis.block_resolutions)
        g = self.general_g if self.general_g is not None else default_general(G.img_resolution)[0]
        if not 0 <= g <= n_blocks:
            raise FewshotError(
                f"general: the generator has {n_blocks} synthesis blocks "
                f"(b4..b{G.img_resolution}), cannot freeze {g}",
                hint=f"use a G count between 0 and {n_blocks}",
            )
        return g

    def d_general_count(self, D: Discriminator) -> int:
        n_blocks = len(D.block_resolutions)
        if not 0 <= self.general_d <= n_blocks:
            raise FewshotError(
                f"the discriminator has {n_blocks} blocks before its 4x4 epilogue "
                f"(b{D.img_resolution}..b8), cannot freeze {self.general_d}",
                hint=f"use a D count between 0 and {n_blocks}",
            )
        return self.general_d

    def frozen_g_blocks(self, G: Generator) -> list[str]:
        """Module names of the frozen (general) synthesis blocks, highest resolution first."""
        g = self.g_general_count(G)
        resolutions = G.synthesis.block_resolutions[::-1][:g]
        return [f"synthesis.b{r}" for r in resolutions]

    def specific_g_modules(self, G: Generator) -> list[str]:
        """Module names of G's specific part: the mapping network and the non-frozen synthesis blocks."""
        frozen = set(self.frozen_g_blocks(G))
        blocks = [f"synthesis.b{r}" for r in G.synthesis.block_resolutions if f"synthesis.b{r}" not in frozen]
        return ["mapping", *blocks]

    def frozen_d_blocks(self, D: Discriminator) -> list[str]:
        """Module names of the frozen D blocks, nearest the input first."""
        return [f"b{r}" for r in D.block_resolutions[: self.d_general_count(D)]]

    def modulated_layers(self, G: Generator) -> list[str]:
        """Module names of the G layers that carry AdaFM (empty unless this is AdaFM)."""
        if not self.adafm:
            return []
        names = []
        for block_name in self.frozen_g_blocks(G):
            block = G.get_submodule(block_name)
            for child in ("conv0", "conv1") + (("torgb",) if self.adafm_torgb else ()):
                if hasattr(block, child):
                    names.append(f"{block_name}.{child}")
        return names

    # ---- applying it ----

    def apply(self, G: nn.Module | None, D: nn.Module | None = None) -> None:
        """Adapt G and/or D in place: re-initialise the specific part, wrap AdaFM, freeze the general part."""
        if G is not None:
            self._apply_generator(_check_generator(G), record_gates=True)
        if D is not None:
            self._apply_discriminator(_check_discriminator(D))

    def apply_ema(self, G_ema: nn.Module) -> None:
        """Give the EMA generator the same structure (and re-initialisation) as G."""
        self._apply_generator(_check_generator(G_ema), record_gates=False)

    def _already(self, net: nn.Module, key: str) -> bool:
        mark = getattr(net, MARK_ATTR, None)
        if mark is None:
            return False
        if mark != key:
            raise FewshotError(
                "this network was already adapted by a different transfer setting",
                hint="build fresh networks from the checkpoint before applying another transfer",
            )
        return True

    def _apply_generator(self, G: Generator, record_gates: bool) -> None:
        key = self._key("G")
        if self._already(G, key):
            if record_gates:
                self._record_gates(G)
            return
        frozen_blocks = self.frozen_g_blocks(G)  # validates before touching anything
        if self.specific == "reinit":
            self._reinit_specific(G)
        setattr(G, FROZEN_ATTR, set())
        for block_name in frozen_blocks:
            _freeze_as_buffers(G, block_name)
        for layer_name in self.modulated_layers(G):
            self._wrap_adafm(G.get_submodule(layer_name))
        setattr(G, MARK_ATTR, key)
        if record_gates:
            self._record_gates(G)

    def _apply_discriminator(self, D: Discriminator) -> None:
        key = self._key("D")
        if self._already(D, key):
            return
        frozen_blocks = self.frozen_d_blocks(D)
        setattr(D, FROZEN_ATTR, set())
        for block_name in frozen_blocks:
            _freeze_as_buffers(D, block_name)
        setattr(D, MARK_ATTR, key)

    def _reinit_specific(self, G: Generator) -> None:
        """Copy the specific part from a freshly constructed generator (seeded; global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            fresh = Generator(**G.init_kwargs)
        fresh_state = fresh.state_dict()
        own_state = G.state_dict(keep_vars=True)
        prefixes = tuple(name + "." for name in self.specific_g_modules(G))
        with torch.no_grad():
            for key, value in own_state.items():
                if key.startswith(prefixes):
                    value.copy_(fresh_state[key])

    def _wrap_adafm(self, layer: nn.Module) -> None:
        adafm_class = ADAFM_CLASSES.get(type(layer))
        if adafm_class is None:
            raise FewshotError(f"AdaFM cannot wrap a {type(layer).__name__}")
        out_channels, in_channels = layer.weight.shape[:2]
        options = dict(device=layer.weight.device, dtype=layer.weight.dtype)
        layer.__class__ = adafm_class
        layer.register_parameter(ADAFM_GAMMA, nn.Parameter(torch.ones([out_channels, in_channels], **options)))
        layer.register_parameter(ADAFM_BETA, nn.Parameter(torch.zeros([out_channels, in_channels], **options)))
        layer.adafm_active = self._adafm_open

    def _record_gates(self, G: Generator) -> None:
        for module in G.modules():
            if type(module) in PLAIN_CLASSES:
                self._adafm_layers.add(module)
                module.adafm_active = self._adafm_open

    # ---- during training ----

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

    def trainable_parameters(self, net: nn.Module) -> list[nn.Parameter]:
        """What the optimizer gets: every parameter left after freezing (AdaFM gamma/beta included)."""
        if not isinstance(net, (Generator, Discriminator)):
            raise FewshotError(f"trainable_parameters expects a fewshot Generator or Discriminator, got {type(net).__name__}")
        if getattr(net, MARK_ATTR, None) is None:
            raise FewshotError("call transfer.apply(G, D) before asking for the trainable parameters")
        return [p for p in net.parameters()]

    def trainable_names(self, net: nn.Module) -> set[str]:
        """Names (``named_parameters`` form) of what trains; the tests compare them with the gradients."""
        return {name for name, _ in net.named_parameters()}

    # ---- export ----

    def export_generator(self, G: nn.Module) -> nn.Module:
        """A plain fewshot Generator with the standard state_dict.

        Without AdaFM this is ``G`` itself (frozen tensors are buffers with the standard names, so the
        state_dict is already standard). With AdaFM, a new Generator whose conv weights are the folded
        ``gamma * W + beta`` and whose state_dict has no ``adafm_*`` keys.
        """
        G = _check_generator(G)
        if not any(type(m) in PLAIN_CLASSES for m in G.modules()):
            return G
        state: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for module_name, module in G.named_modules():
                if type(module) in PLAIN_CLASSES:
                    state[f"{module_name}.weight"] = _modulated_weight(module).detach().clone()
            for key, value in G.state_dict().items():
                leaf = key.rsplit(".", 1)[-1]
                if leaf in (ADAFM_GAMMA, ADAFM_BETA) or key in state:
                    continue
                state[key] = value.detach().clone()
        with torch.random.fork_rng(devices=[]):  # construction draws random numbers; keep the trainer's RNG
            plain = Generator(**copy.deepcopy(G.init_kwargs))
        plain.load_state_dict(state, strict=True)
        device = next(iter(state.values())).device
        return plain.to(device).train(G.training)

    # ---- description for --dry-run ----

    def header(self) -> str:
        return self.name

    def describe(self, G: nn.Module, D: nn.Module | None = None) -> str:
        """Block-by-block table: what is frozen, what is modulated (AdaFM), what trains, with counts.

        Works on nets before or after ``apply``.
        """
        rows = self._rows_generator(_check_generator(G))
        if D is not None:
            rows += self._rows_discriminator(_check_discriminator(D))
        lines = [self.header(), ""]
        widths = (3, max(len(r.block) for r in rows), max(len(r.status) for r in rows), 12, 12)
        titles = ("net", "block", "status", "weights", "trainable")

        def line(cells: tuple[str, ...]) -> str:
            # Text columns left-aligned, counts right-aligned.
            return "  ".join(
                c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        lines.append(line(titles))
        for r in rows:
            lines.append(line((r.net, r.block, r.status, f"{r.weights:,}", f"{r.trainable:,}")))
        for net in ("G", "D"):
            sel = [r for r in rows if r.net == net]
            if sel:
                weights = sum(r.weights for r in sel)
                trainable = sum(r.trainable for r in sel)
                lines.append(f"{net}: {weights:,} weights, {trainable:,} trainable")
        return "\n".join(lines)

    @staticmethod
    def _weights(net: nn.Module) -> dict[str, torch.Tensor]:
        # The network's own weights: parameters plus former parameters frozen as buffers, minus AdaFM.
        frozen = getattr(net, FROZEN_ATTR, set())
        tensors = {k: v for k, v in net.named_parameters() if k.rsplit(".", 1)[-1] not in (ADAFM_GAMMA, ADAFM_BETA)}
        tensors.update({k: v for k, v in net.named_buffers() if k in frozen})
        return tensors

    def _rows_generator(self, G: Generator) -> list[BlockRow]:
        weights = self._weights(G)
        frozen = set(self.frozen_g_blocks(G))
        modulated = self.modulated_layers(G)
        specific_status = "re-initialised, trains" if self.specific == "reinit" else "trains"
        rows = []
        for module_name in ["mapping"] + [f"synthesis.b{r}" for r in G.synthesis.block_resolutions]:
            total = _count(weights, module_name)
            if module_name in frozen:
                mod_here = [m for m in modulated if m.startswith(module_name + ".")]
                adafm = sum(2 * G.get_submodule(m).weight.shape[0] * G.get_submodule(m).weight.shape[1] for m in mod_here)
                if mod_here:
                    parts = ",".join(m.rsplit(".", 1)[1] for m in mod_here)
                    status = f"frozen + AdaFM ({parts})"
                else:
                    status = "frozen"
                rows.append(BlockRow("G", module_name, status, total, adafm))
            else:
                rows.append(BlockRow("G", module_name, specific_status, total, total))
        return rows

    def _rows_discriminator(self, D: Discriminator) -> list[BlockRow]:
        weights = self._weights(D)
        frozen = set(self.frozen_d_blocks(D))
        rows = []
        names = [f"b{r}" for r in D.block_resolutions] + ["b4"] + (["mapping"] if D.c_dim > 0 else [])
        for module_name in names:
            total = _count(weights, module_name)
            label = "b4 (epilogue)" if module_name == "b4" else module_name
            if module_name in frozen:
                rows.append(BlockRow("D", label, "frozen", total, 0))
            else:
                rows.append(BlockRow("D", label, "trains", total, total))
        return rows
