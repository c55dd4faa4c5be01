"""What every transfer method shares: a plan (which blocks are frozen, which re-initialised) and the machinery
that carries it out on a fewshot ``Generator`` / ``Discriminator``. The methods themselves (one file each) set the
plan from their options; AdaFM adds its modulation through the hooks marked below.

Design choices (documented here because the trainer relies on them):

* **Frozen tensors become buffers.** Every parameter of a frozen block is re-registered as a buffer
  under the same name (the official FreezeD convention, extended to the generator). The
  ``state_dict`` keys do not change, ``net.parameters()`` no longer yields them, and a phase loop
  that calls ``net.requires_grad_(True)`` cannot unfreeze them: no optimizer can ever reach them.
* **Resume = apply, then load.** A method may add parameters (AdaFM's ``...adafm_gamma`` /
  ``...adafm_beta``). To resume, build fresh nets from ``init_kwargs``, call ``apply`` (and ``apply_ema``)
  and only then load the saved ``state_dict`` (see :func:`fewshot.transfer.load_transfer_bundle`).
* **Idempotent.** Applying the same transfer twice to a net is a no-op (so ``G_ema = deepcopy(G)``
  after ``apply`` followed by ``apply_ema(G_ema)`` is fine); applying a different one is an error.

Importing this module (and every method module) does not import torch: the command line reads the methods'
options through :data:`fewshot.registry.transfers` when it is built, so torch is imported where it is used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import FewshotError
from ..registry import Entry, options_dict, transfers

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..archs import SynthesisUnit
    from ..nets import Discriminator, Generator

# Attribute names stored on an adapted network (plain Python attributes: deepcopy carries them).
MARK_ATTR = "_fewshot_transfer"  # the JSON key of the transfer applied
FROZEN_ATTR = "_fewshot_frozen"  # names (state_dict form) of former parameters now frozen as buffers


@dataclass(frozen=True)
class BlockRow:
    """One line of :meth:`Transfer.describe`."""

    net: str
    block: str
    status: str
    weights: int
    trainable: int


def check_generator(G: nn.Module) -> Generator:
    """``G`` when it is a generator of a registered network family (StyleGAN2, StyleGAN3)."""
    from ..archs import architecture_of

    try:
        architecture_of(G)
    except FewshotError:
        raise FewshotError(f"transfer methods adapt a fewshot Generator, got {type(G).__name__}") from None
    return G


def generator_units(G: nn.Module) -> list[SynthesisUnit]:
    """G's synthesis units (StyleGAN2 blocks, StyleGAN3 layers) from the input to the image."""
    from ..archs import architecture_of

    return architecture_of(G).units(G)


def check_discriminator(D: nn.Module) -> Discriminator:
    from ..nets import Discriminator

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


def _within(count: int | None, n_blocks: int, net: str, has: str) -> int:
    """``count`` blocks to freeze, checked against the ``n_blocks`` the network has (``has`` says which)."""
    if count is None or not 0 <= count <= n_blocks:
        raise FewshotError(f"{has.format(n=n_blocks)}, cannot freeze {count}",
                           hint=f"use a {net} count between 0 and {n_blocks}")
    return count


def _generator_modules(G: nn.Module) -> list[str]:
    """G's modules as the transfer methods see them: mapping, the synthesis input (StyleGAN3), the units'."""
    from ..archs import architecture_of

    units = [name for unit in generator_units(G) for name in unit.modules]
    return ["mapping", *architecture_of(G).fixed_modules(G), *units]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class Transfer:
    """Base class of the transfer methods; a method registers itself in :data:`fewshot.registry.transfers`.

    ``Method(options, *, r1_fake=False, seed=0)``: ``options`` is the method's options dataclass (or a mapping of
    its fields, or None for the defaults), checked through the registry like a preset's. The subclass sets the
    plan in ``__init__``: ``general_g`` synthesis blocks (highest resolutions, with their ToRGB) frozen,
    ``general_d`` discriminator blocks (nearest the input) frozen, ``specific`` = "finetune" or "reinit" for the
    rest of G (low-resolution synthesis blocks + mapping). Everything else is shared.
    """

    # Leaf names of the parameters a method adds to the layers it adapts (not weights of the network itself).
    added_parameters: tuple[str, ...] = ()

    def __init__(self, options: Any = None, *, r1_fake: bool = False, seed: int = 0) -> None:
        entry = self.entry()
        if options is None:
            values: dict[str, Any] = {}
        elif isinstance(options, Mapping):
            values = dict(options)
        elif isinstance(options, entry.options):
            values = options_dict(options)
        else:
            raise FewshotError(f"transfer {entry.name!r} takes {entry.options.__name__}, got {type(options).__name__}")
        self.settings = entry.make_options(values)  # the method's options dataclass, converted and checked
        self.r1_fake = bool(r1_fake)
        self.seed = int(seed)
        self.general_g: int | None = 0
        self.general_d: int | None = 0
        self.specific = "finetune"

    @classmethod
    def entry(cls) -> Entry:
        """This method's registry entry (its name, options class and help)."""
        for entry in transfers.entries():
            if entry.target is cls:
                return entry
        raise FewshotError(f"{cls.__qualname__} is not a registered transfer method",
                           hint="decorate the class with @fewshot.registry.transfers.register(name, options=...)")

    @property
    def name(self) -> str:
        return self.entry().name

    # ---- options: what a training record stores to rebuild this transfer on resume ----

    @property
    def options(self) -> dict[str, Any]:
        """JSON-able record; ``transfer_from_record(t.options)`` rebuilds an equal transfer."""
        record = {"name": self.name, "r1_fake": self.r1_fake, "seed": self.seed}
        record.update({k: _plain(v) for k, v in options_dict(self.settings).items()})
        return record

    def _plan(self) -> dict[str, Any]:
        # What must agree for a net to count as "already adapted by this transfer".
        return {"name": self.name, "general_g": self.general_g, "general_d": self.general_d,
                "specific": self.specific, "seed": self.seed}

    def _key(self, G_or_D: str) -> str:
        return json.dumps({**self._plan(), "net": G_or_D}, sort_keys=True)

    # ---- the plan, resolved against concrete nets ----

    def g_general_count(self, G: Generator) -> int:
        from ..archs import architecture_of

        return _within(self.general_g, len(generator_units(G)), "G", "general: " + architecture_of(G).units_phrase(G))

    def d_general_count(self, D: Discriminator) -> int:
        return _within(self.general_d, len(D.block_resolutions), "D",
                       f"the discriminator has {{n}} blocks before its 4x4 epilogue (b{D.img_resolution}..b8)")

    def frozen_g_units(self, G: Generator) -> list[SynthesisUnit]:
        """The frozen (general) synthesis units (StyleGAN2 blocks, StyleGAN3 layers), nearest the image first."""
        g = self.g_general_count(G)
        return generator_units(G)[::-1][:g]

    def frozen_g_blocks(self, G: Generator) -> list[str]:
        """Module names of the frozen (general) synthesis units, nearest the image first."""
        return [name for unit in self.frozen_g_units(G) for name in unit.modules]

    def specific_g_modules(self, G: Generator) -> list[str]:
        """Module names of G's specific part: the mapping network, the synthesis input (StyleGAN3) and the
        non-frozen synthesis units."""
        return [name for name in _generator_modules(G) if name not in set(self.frozen_g_blocks(G))]

    def frozen_d_blocks(self, D: Discriminator) -> list[str]:
        """Module names of the frozen D blocks, nearest the input first."""
        return [f"b{r}" for r in D.block_resolutions[: self.d_general_count(D)]]

    def modulated_layers(self, G: Generator) -> list[str]:
        """Module names of the frozen G layers a method adapts (AdaFM); none here."""
        return []

    # ---- applying it ----

    def apply(self, G: nn.Module | None, D: nn.Module | None = None) -> None:
        """Adapt G and/or D in place: re-initialise the specific part, freeze the general part, then the
        method's own adaptation of the frozen layers (AdaFM)."""
        if G is not None:
            self._apply_generator(check_generator(G), trained=True)
        if D is not None:
            self._apply_discriminator(check_discriminator(D))

    def apply_ema(self, G_ema: nn.Module) -> None:
        """Give the EMA generator the same structure (and re-initialisation) as G."""
        self._apply_generator(check_generator(G_ema), trained=False)

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

    def _apply_generator(self, G: Generator, trained: bool) -> None:
        frozen_blocks = self.frozen_g_blocks(G)  # resolves and validates the plan before touching anything
        key = self._key("G")
        if self._already(G, key):
            if trained:
                self._adopt_trained(G)
            return
        if self.specific == "reinit":
            self._reinit_specific(G)
        setattr(G, FROZEN_ATTR, set())
        for block_name in frozen_blocks:
            _freeze_as_buffers(G, block_name)
        self._adapt_frozen(G)
        setattr(G, MARK_ATTR, key)
        if trained:
            self._adopt_trained(G)

    def _apply_discriminator(self, D: Discriminator) -> None:
        frozen_blocks = self.frozen_d_blocks(D)
        key = self._key("D")
        if self._already(D, key):
            return
        setattr(D, FROZEN_ATTR, set())
        for block_name in frozen_blocks:
            _freeze_as_buffers(D, block_name)
        setattr(D, MARK_ATTR, key)

    def _adapt_frozen(self, G: Generator) -> None:
        """Hook: adapt G's frozen layers after freezing (AdaFM wraps them). Nothing here."""

    def _adopt_trained(self, G: Generator) -> None:
        """Hook: ``G`` (not the EMA copy) is the generator the optimizer trains (AdaFM gates it). Nothing here."""

    def _reinit_specific(self, G: Generator) -> None:
        """Copy the specific part from a freshly constructed generator (seeded; global RNG untouched)."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            fresh = type(G)(**G.init_kwargs)
        fresh_state = fresh.state_dict()
        own_state = G.state_dict(keep_vars=True)
        prefixes = tuple(name + "." for name in self.specific_g_modules(G))
        with torch.no_grad():
            for key, value in own_state.items():
                if key.startswith(prefixes):
                    value.copy_(fresh_state[key])

    # ---- during training ----

    def on_kimg(self, kimg: float) -> bool:
        """Called by the trainer on every step with the progress in kimg; True when that changed something
        (AdaFM's start gate). Nothing here."""
        return False

    def trainable_parameters(self, net: nn.Module) -> list[nn.Parameter]:
        """What the optimizer gets: every parameter left after freezing (AdaFM gamma/beta included)."""
        from ..nets import Discriminator

        if not isinstance(net, Discriminator):
            try:
                check_generator(net)
            except FewshotError:
                raise FewshotError("trainable_parameters expects a fewshot Generator or Discriminator, got "
                                   f"{type(net).__name__}") from None
        if getattr(net, MARK_ATTR, None) is None:
            raise FewshotError("call transfer.apply(G, D) before asking for the trainable parameters")
        return [p for p in net.parameters()]

    def trainable_names(self, net: nn.Module) -> set[str]:
        """Names (``named_parameters`` form) of what trains; the tests compare them with the gradients."""
        return {name for name, _ in net.named_parameters()}

    # ---- export ----

    def export_generator(self, G: nn.Module) -> nn.Module:
        """A plain fewshot Generator with the standard state_dict: here ``G`` itself (frozen tensors are buffers
        with the standard names, so its state_dict is already standard). AdaFM folds its modulation."""
        return check_generator(G)

    # ---- description for --dry-run ----

    def header(self) -> str:
        return self.name

    def describe(self, G: nn.Module, D: nn.Module | None = None) -> str:
        """Block-by-block table: what is frozen, what is modulated (AdaFM), what trains, with counts.

        Works on nets before or after ``apply``.
        """
        rows = self._rows_generator(check_generator(G))
        if D is not None:
            rows += self._rows_discriminator(check_discriminator(D))
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

    def _weights(self, net: nn.Module) -> dict[str, torch.Tensor]:
        # The network's own weights: parameters plus former parameters frozen as buffers, minus what a method added.
        frozen = getattr(net, FROZEN_ATTR, set())
        tensors = {k: v for k, v in net.named_parameters() if k.rsplit(".", 1)[-1] not in self.added_parameters}
        tensors.update({k: v for k, v in net.named_buffers() if k in frozen})
        return tensors

    def frozen_block_row(self, G: Generator, block: str, weights: int) -> BlockRow:
        """The describe row of a frozen G block (AdaFM adds what it modulates there)."""
        return BlockRow("G", block, "frozen", weights, 0)

    def _rows_generator(self, G: Generator) -> list[BlockRow]:
        weights = self._weights(G)
        frozen = set(self.frozen_g_blocks(G))
        specific_status = "re-initialised, trains" if self.specific == "reinit" else "trains"
        rows = []
        for module_name in _generator_modules(G):
            total = _count(weights, module_name)
            if module_name in frozen:
                rows.append(self.frozen_block_row(G, module_name, total))
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
