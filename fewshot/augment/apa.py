"""``apa`` and ``ada+apa``: Adaptive Pseudo Augmentation (Jiang et al., NeurIPS 2021).

When D looks at reals, each real is replaced, with probability ``p``, by one of the fakes G made
in the latest batch (stored detached). D can then no longer be confidently right on every
"real", which curbs its overfitting; ``p`` follows the ADA rule with target 0.6 on
``mean(sign(D(real')))``. ``apa`` leaves images otherwise untouched (``forward`` is the identity);
``ada+apa`` additionally runs the ADA pipeline, both driven by the same ``p``.

The stored fakes are a buffer, so a resumed run replaces reals exactly as the original would.
"""

from __future__ import annotations

import torch

from ..errors import FewshotError
from ..registry import augmentations
from .ada import AdaAugment, AdaOptions
from .base import Augment


class PseudoAugmentMixin:
    """``replace_reals`` / ``remember_fakes`` on top of an :class:`Augment` with a ``p`` buffer."""

    p: torch.Tensor
    stored_fakes: torch.Tensor

    def _init_store(self) -> None:
        # Empty until the first fakes arrive; before that reals pass through unchanged.
        self.register_buffer("stored_fakes", torch.zeros(0))  # type: ignore[attr-defined]

    @torch.no_grad()
    def remember_fakes(self, fakes: torch.Tensor) -> None:
        self.stored_fakes = fakes.detach().clone()

    def replace_reals(self, reals: torch.Tensor) -> torch.Tensor:
        fakes = self.stored_fakes
        if fakes.numel() == 0:
            return reals
        if fakes.shape[1:] != reals.shape[1:]:
            raise FewshotError(
                f"APA: stored fakes have shape {tuple(fakes.shape[1:])} but reals {tuple(reals.shape[1:])}",
                hint="generator and data resolution/channels must match",
            )
        count = reals.shape[0]
        # Real i is paired with fake i (cycling when fewer fakes than reals were kept).
        index = torch.arange(count, device=fakes.device) % fakes.shape[0]
        fakes = fakes[index].to(device=reals.device, dtype=reals.dtype)
        replace = (torch.rand(count, 1, 1, 1, device=reals.device) < self.p.to(reals.device)).to(reals.dtype)
        # Blend with a 0/1 mask: exact for both choices, and gradients still reach the kept reals.
        return reals * (1 - replace) + fakes * replace

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # type: ignore[no-untyped-def]
        # The stored batch changes shape (empty -> [B, C, H, W]); size the buffer before copying.
        key = prefix + "stored_fakes"
        if key in state_dict:
            incoming = state_dict[key]
            self._buffers["stored_fakes"] = torch.empty_like(incoming, device=self.p.device)  # type: ignore[attr-defined]
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


@augmentations.register("apa", help="adaptive pseudo augmentation: reals replaced by fakes with adaptive p")
class ApaAugment(PseudoAugmentMixin, Augment):
    """APA alone: reals replaced by stored fakes with adaptive probability ``p``; no image transform."""

    adaptive = True

    def __init__(self, p: float = 0.0, target: float = 0.6, ada_kimg: float = 500, interval: int = 4) -> None:
        super().__init__(p=p, target=target, ada_kimg=ada_kimg, interval=interval)
        self._init_store()


@augmentations.register("ada+apa", options=AdaOptions, help="the ADA pipeline and APA, driven by one adaptive p")
class AdaApaAugment(PseudoAugmentMixin, AdaAugment):
    """ADA pipeline and APA replacement, one adaptive ``p`` for both."""

    adaptive = True

    def __init__(
        self, p: float = 0.0, target: float = 0.6, ada_kimg: float = 500, interval: int = 4,
        pipeline: str = "bgc", ops: dict[str, float] | None = None,
    ) -> None:
        super().__init__(p=p, target=target, ada_kimg=ada_kimg, interval=interval, pipeline=pipeline, ops=ops)
        self._init_store()
