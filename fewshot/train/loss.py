"""StyleGAN2 losses by phase, with the official semantics.

- Gmain: non-saturating ``softplus(-D(aug(G(z))))`` (+ a regularizer such as Reg-DGM).
  With ``adversarial="hinge"`` (DISP's loss): G ``-D(G(z))``, D ``relu(1 - D(x)) + relu(1 + D(G(z)))``.
- Greg: path-length regularisation on half the batch (lazy, every ``pl_interval`` steps).
- Dmain: ``softplus(D(aug(G(z)))) + softplus(-D(aug(x)))``.
- Dreg: R1 ``(gamma/2) * ||grad_x D(aug(x))||^2`` on un-augmented reals through the augmentation
  (and on fakes too when the transfer method asks for it), lazily every ``r1_interval`` steps.

Each call accumulates gradients for one chunk of the batch, scaled by ``gain`` (the phase
interval, so a lazily applied regulariser keeps its strength).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..registry import losses

PHASES = ("Gmain", "Greg", "Dmain", "Dreg")


@dataclass
class LossWeights:
    r1_gamma: float
    pl_weight: float
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9
    r1_fake: bool = False
    adversarial: str = "logistic"  # logistic | hinge
    blur_init_sigma: float = 0.0  # D's inputs blurred (Gaussian, sigma in px), fading linearly ...
    blur_fade_kimg: float = 0.0  # ... to none over this many kimg (StyleGAN3-R from scratch)


def blur_sigma(weights: LossWeights, cur_nimg: int) -> float:
    """The blur of D's inputs after ``cur_nimg`` images: ``blur_init_sigma`` fading linearly to 0 over
    ``blur_fade_kimg``, as the official StyleGAN3 loss (0 when no fade is set)."""
    if weights.blur_fade_kimg <= 0:
        return 0.0
    return max(1 - cur_nimg / (weights.blur_fade_kimg * 1e3), 0) * weights.blur_init_sigma


def blur_images(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian of ``sigma`` px, taps out to 3 sigma, normalised, zero padded to keep the size (the official
    ``upfirdn2d.filter2d`` of a separable ``exp2(-(x/sigma)^2)``); the images themselves when under a tap."""
    size = math.floor(sigma * 3)
    if size <= 0:
        return images
    from ..cuda.resample import filter2d

    taps = torch.arange(-size, size + 1, device=images.device, dtype=torch.float32).div(sigma).square().neg().exp2()
    return filter2d(images, taps / taps.sum())


def generator_adv_loss(gen_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """G's adversarial loss: the registered loss ``kind`` (:mod:`fewshot.train.losses`)."""
    return losses.get(kind).target.generator(gen_logits)


def discriminator_adv_losses(gen_logits: torch.Tensor | None, real_logits: torch.Tensor | None,
                             kind: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(loss on fakes, loss on reals) of the discriminator under the registered loss ``kind``."""
    return losses.get(kind).target.discriminator(gen_logits, real_logits)


class StyleGAN2Loss(nn.Module):
    """Holds the nets it differentiates through and the path-length running mean (resumable buffer)."""

    def __init__(self, G: nn.Module, D: nn.Module, augment: nn.Module, weights: LossWeights,
                 regularizer: nn.Module | list[nn.Module] | None = None, arch: Any = None) -> None:
        super().__init__()
        from ..archs import architecture

        # How this network family's generator is called (which passes update its running averages).
        object.__setattr__(self, "arch", arch if arch is not None else architecture(None))
        # Plain attributes (not submodules): the loss must not own or save the networks.
        object.__setattr__(self, "G", G)
        object.__setattr__(self, "D", D)
        object.__setattr__(self, "augment", augment)
        regularizers = regularizer if isinstance(regularizer, (list, tuple)) else [regularizer]
        # One at weight 0 is inactive: it adds nothing, not even a zero to the log.
        object.__setattr__(self, "regularizers", [r for r in regularizers if r is not None
                                                  and getattr(r, "active", True)])
        # Those that also choose latents or judge with D's features (CDC); see GeneratorRegularizer's hooks.
        object.__setattr__(self, "hooks", [r for r in self.regularizers if getattr(r, "hooks_training", False)])
        self.batch_idx = 0  # the loop's batch index (Run.step sets it): hooks may act on some batches only
        self.cur_nimg = 0  # images shown so far (Run.step sets it): the blur of D's inputs fades with it
        self.weights = weights
        self.register_buffer("pl_mean", torch.zeros([]))

    def tie(self, output: torch.Tensor) -> torch.Tensor | float:
        """``output * 0`` where the family's official loss adds it to a regularisation term (stylegan2-ada-pytorch:
        every parameter then gets a gradient, zeros included, and Adam moves it by its decaying moments); 0 where
        it does not (StyleGAN3: a tensor the term does not reach gets no gradient, and Adam leaves it alone)."""
        return output * 0 if self.arch.ties_regularizer_terms else 0.0

    # -- network passes ---------------------------------------------------------------------------
    def run_G(self, z: torch.Tensor, c: torch.Tensor | None,
              update_emas: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``update_emas``: the pass whose statistics the official StyleGAN3 code tracks (Dmain's fakes);
        StyleGAN2 tracks w_avg in every pass (:meth:`fewshot.archs.Architecture.mapping`)."""
        ws = self.arch.mapping(self.G, z, c, update_emas=update_emas)
        if self.weights.style_mixing > 0:
            # With probability style_mixing, ws after a random cutoff come from a second latent.
            cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, ws.shape[1])
            mix = torch.rand([], device=ws.device) < self.weights.style_mixing
            cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, ws.shape[1]))
            ws2 = self.arch.mapping(self.G, torch.randn_like(z), c, update_emas=False, second=True)
            keep = torch.arange(ws.shape[1], device=ws.device) < cutoff
            ws = torch.where(keep[None, :, None], ws, ws2)
        img = self.arch.synthesis(self.G, ws, update_emas=update_emas)
        return img, ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        # Reals and fakes alike: blurred (while the blur lasts), then augmented, then judged.
        img = self.augment(blur_images(img, blur_sigma(self.weights, self.cur_nimg)))
        for hook in self.hooks:
            logits = hook.discriminate(self.D, img, c)
            if logits is not None:
                return logits
        return self.D(img, c)

    # -- one phase, one chunk ---------------------------------------------------------------------
    def accumulate_gradients(
        self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor | None, gen_z: torch.Tensor,
        gen_c: torch.Tensor | None, gain: float,
    ) -> dict[str, torch.Tensor]:
        """Backpropagate the loss of ``phase`` on one chunk; returns detached values for the log."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        w = self.weights
        stats: dict[str, torch.Tensor] = {}
        for hook in self.hooks:
            gen_z = hook.phase_latents(phase, self.batch_idx, gen_z)

        if phase == "Gmain":
            gen_img, _ = self.run_G(gen_z, gen_c)
            self.augment.remember_fakes(gen_img)
            gen_logits = self.run_D(gen_img, gen_c)
            loss = generator_adv_loss(gen_logits, w.adversarial)
            stats["loss_G"] = loss.detach()
            if self.regularizers:  # the generator regularizers' terms (Reg-DGM, ...), summed
                terms = [r.generator_loss(gen_img, real_images=real_img) for r in self.regularizers]
                reg = terms[0]
                for term in terms[1:]:
                    reg = reg + term
                stats["loss_reg"] = reg.detach()
                loss = loss + reg
            loss.mul(gain).backward()

        elif phase == "Greg" and w.pl_weight != 0:
            batch = max(gen_z.shape[0] // w.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:batch], gen_c[:batch] if gen_c is not None else None)
            pl_noise = torch.randn_like(gen_img) / math.sqrt(gen_img.shape[2] * gen_img.shape[3])
            (pl_grads,) = torch.autograd.grad((gen_img * pl_noise).sum(), gen_ws, create_graph=True)
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
            pl_mean = self.pl_mean.lerp(pl_lengths.mean(), w.pl_decay)
            self.pl_mean.copy_(pl_mean.detach())
            pl_penalty = (pl_lengths - pl_mean).square()
            stats["pl_penalty"] = pl_penalty.mean().detach()
            # stylegan2-ada-pytorch ties the loss to the image, so every synthesis parameter is in the graph.
            (self.tie(gen_img[:, 0, 0, 0]) + pl_penalty * w.pl_weight).mean().mul(gain).backward()

        elif phase == "Dmain":
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c, update_emas=True)
            self.augment.remember_fakes(gen_img)
            gen_logits = self.run_D(gen_img, gen_c)
            loss_gen, _ = discriminator_adv_losses(gen_logits, None, w.adversarial)
            loss_gen.mul(gain).backward()

            real = self.augment.replace_reals(real_img.detach())
            real_logits = self.run_D(real, real_c)
            self.augment.accumulate(real_logits.detach())
            _, loss_real = discriminator_adv_losses(None, real_logits, w.adversarial)
            loss_real.mul(gain).backward()
            stats["loss_D"] = (loss_gen + loss_real).detach()
            stats["D_real"] = real_logits.detach().mean()
            stats["D_fake"] = gen_logits.detach().mean()

        elif phase == "Dreg" and w.r1_gamma != 0:
            real = self.augment.replace_reals(real_img.detach()).requires_grad_(True)
            real_logits = self.run_D(real, real_c)
            self.augment.accumulate(real_logits.detach())
            (r1_grads,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1_penalty = r1_grads.square().sum([1, 2, 3])
            loss = self.tie(real_logits) + (r1_penalty * (w.r1_gamma / 2)).unsqueeze(1)
            stats["r1_penalty"] = r1_penalty.mean().detach()
            if w.r1_fake:
                with torch.no_grad():
                    gen_img, _ = self.run_G(gen_z, gen_c)
                fake = gen_img.detach().requires_grad_(True)
                fake_logits = self.run_D(fake, gen_c)
                (r1_fake_grads,) = torch.autograd.grad(fake_logits.sum(), fake, create_graph=True)
                r1_fake_penalty = r1_fake_grads.square().sum([1, 2, 3])
                loss = loss + self.tie(fake_logits) + (r1_fake_penalty * (w.r1_gamma / 2)).unsqueeze(1)
                stats["r1_fake_penalty"] = r1_fake_penalty.mean().detach()
            loss.mean().mul(gain).backward()

        return stats
