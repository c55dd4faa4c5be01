"""EWC as torch code: the Fisher information estimate and the penalty (the method and its facts: ``ewc.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import FewshotError
from ._base import GeneratorRegularizer, TrainingContext, require_unconditional

FISHER_SEED = 0xE5C  # the estimate's own random stream, from the run's seed


def estimate_fisher(G: nn.Module, D: nn.Module, params: Sequence[nn.Parameter], *, samples: int, batch: int,
                    adversarial: str = "logistic", seed: int = 0) -> list[torch.Tensor]:
    """Diagonal Fisher information of ``params`` (tensors of ``G``): the mean over ``samples`` generated images of
    the squared gradient of G's adversarial loss under the frozen ``D``, ``batch`` images per gradient.

    Runs on its own seeded random stream (latents and G's per-pixel noise) and leaves the global one as it was;
    G's w average is not updated."""
    from ..archs import architecture_of
    from ..train.loss import generator_adv_loss

    arch = architecture_of(G)
    device = params[0].device
    fisher = [torch.zeros_like(p) for p in params]
    steps = -(-samples // batch)
    was = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for _ in range(steps):
                z = torch.randn([batch, G.z_dim], device=device)
                with torch.enable_grad():
                    # The family's passes, leaving G's running averages alone (no training step of G).
                    ws = arch.mapping(G, z, None, update_emas=False, second=True)
                    images = arch.synthesis(G, ws, update_emas=False)
                    loss = generator_adv_loss(D(images, None), adversarial)
                    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
                for total, grad in zip(fisher, grads, strict=True):
                    if grad is not None:
                        total.add_(grad.square(), alpha=1 / steps)
    finally:
        for p, flag in zip(params, was, strict=True):
            p.requires_grad_(flag)
    return fisher


def ewc_penalty(params: Sequence[torch.Tensor], source: Sequence[torch.Tensor],
                fisher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_i F_i (θ_i − θ_source,i)² over every element of every tensor."""
    total = params[0].new_zeros(())
    for theta, theta_source, f in zip(params, source, fisher, strict=True):
        total = total + (f * (theta - theta_source).square()).sum()
    return total


class EWC(GeneratorRegularizer):
    """``λ Σ F (θ − θ_source)²`` on G's trainable tensors that the source network has too."""

    hooks_training = True  # for bind: it needs G's tensors and the source networks

    def __init__(self, weight: float, fisher_samples: int = 256, fisher_batch: int = 1) -> None:
        super().__init__()
        self.weight = weight
        self.fisher_samples = fisher_samples
        self.fisher_batch = fisher_batch
        self._last = 0.0

    def bind(self, context: TrainingContext) -> None:
        require_unconditional(context, "EWC")
        nets = context.source()
        source_G, source_D = nets["G"].eval(), nets["D"]
        group = getattr(getattr(source_D, "b4", None), "mbstd", None)
        size = getattr(group, "group_size", None)
        if size and self.fisher_batch > size and self.fisher_batch % size:
            raise FewshotError(f"EWC fisher_batch {self.fisher_batch} does not split into D's minibatch-stddev "
                               f"groups of {size}", hint=f"a multiple of {size}, or at most {size}")
        names = {id(p): name for name, p in context.G.named_parameters()}
        own = dict(source_G.named_parameters())
        pairs = [(p, own[names[id(p)]]) for p in context.g_parameters
                 if names.get(id(p)) in own and own[names[id(p)]].shape == p.shape]
        if not pairs:
            raise FewshotError("EWC found none of G's trainable tensors in the source network")
        held = [s for _, s in pairs]
        fisher = estimate_fisher(source_G, source_D, held, samples=self.fisher_samples, batch=self.fisher_batch,
                                 adversarial=context.adversarial, seed=context.seed * 1000 + FISHER_SEED)
        # Plain attributes: the run saves the networks; the source and F are rebuilt on resume.
        object.__setattr__(self, "_params", [p for p, _ in pairs])
        object.__setattr__(self, "_source", [s.detach().clone() for s in held])
        object.__setattr__(self, "_fisher", fisher)

    def generator_loss(self, fake_images: torch.Tensor, real_images: torch.Tensor | None = None) -> torch.Tensor:
        term = self.weight * ewc_penalty(self._params, self._source, self._fisher)
        self._last = term.detach()
        return term

    def stats(self) -> dict[str, float]:
        return {"ewc_penalty": float(self._last)}

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, fisher_samples={self.fisher_samples}, fisher_batch={self.fisher_batch}"
