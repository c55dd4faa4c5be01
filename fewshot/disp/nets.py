"""DISP networks: a StyleGAN2 generator conditioned on instance priors, and a projection discriminator.

The generator needs no new class: StyleGAN2's mapping network already embeds a continuous condition
``c`` (``mapping.embed``) and concatenates it with z, so a DISP generator is a plain ``Generator``
whose ``c_dim`` is the prior's dimension. :func:`condition_generator` converts an unconditional base
so that it reproduces the base exactly at the start: fc0 keeps the base's z columns (rescaled for
the equalized-lr gain, which depends on fc0's fan-in) and gets zero columns for the embedded prior.

The discriminator is the projection form of Miyato & Koyama used by DISP:
``D(x, y) = psi(phi(x)) + <emb(y), phi(x)> / sqrt(C)`` where ``phi(x)`` is the epilogue's fc output
(C features), ``psi`` the base's ``out`` layer and ``emb`` a new linear map of the prior, zero at the
start so a converted D equals its base. (The 1/sqrt(C) keeps the projection on the scale of
StyleGAN2's own conditional head.)
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..errors import FewshotError
from ..nets.discriminator import Discriminator
from ..nets.generator import Generator
from ..nets.layers import FullyConnectedLayer
from ..registry import networks


class ProjectionDiscriminator(Discriminator):
    """A StyleGAN2 discriminator with a projection head on a continuous prior ``y`` of ``prior_dim``.

    Constructor kwargs are those of :class:`Discriminator` (with ``c_dim = 0``: the condition enters
    only through the projection) plus ``prior_dim``; all are JSON, so bundles rebuild it.
    State dict: the base's keys plus ``proj.weight [C, prior_dim]``.
    """

    def __init__(self, prior_dim: int, c_dim: int = 0, **kwargs: Any) -> None:
        if c_dim != 0:
            raise ValueError("ProjectionDiscriminator takes its condition through prior_dim; c_dim must be 0")
        if prior_dim < 1:
            raise ValueError(f"prior_dim must be positive, got {prior_dim}")
        super().__init__(c_dim=0, **kwargs)
        self.init_kwargs = {**self.init_kwargs, "prior_dim": prior_dim}
        self.prior_dim = prior_dim
        self.feature_dim = self.b4.fc.out_features
        self.proj = FullyConnectedLayer(prior_dim, self.feature_dim, bias=False)
        with torch.no_grad():
            self.proj.weight.zero_()

    def features(self, img: torch.Tensor, **block_kwargs: Any) -> torch.Tensor:
        """phi(x): the blocks, then the epilogue up to and including its fc layer -> [N, C]."""
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(
                f"D expects images [N, {self.img_channels}, {self.img_resolution}, {self.img_resolution}], "
                f"got {tuple(img.shape)}"
            )
        x = None
        for block in self.blocks():
            x, img = block(x, img, **block_kwargs)
        head = self.b4
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if head.architecture == "skip":
            x = x + head.fromrgb(img.to(torch.float32))
        if head.mbstd is not None:
            x = head.mbstd(x)
        x = head.conv(x)
        return head.fc(x.flatten(1))

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None, **block_kwargs: Any) -> torch.Tensor:
        phi = self.features(img, **block_kwargs)
        logits = self.b4.out(phi)  # psi(phi(x)), [N, 1]
        if c is None or c.numel() == 0:
            return logits
        if c.ndim != 2 or c.shape != (img.shape[0], self.prior_dim):
            raise ValueError(f"D expects priors [{img.shape[0]}, {self.prior_dim}], got {tuple(c.shape)}")
        projection = (self.proj(c.to(torch.float32)) * phi).sum(dim=1, keepdim=True)
        return logits + projection * (1 / math.sqrt(self.feature_dim))


# Registered here (fewshot.nets imports this module) so bundles rebuild it whichever package loads first.
networks.register("ProjectionDiscriminator", help="DISP's projection discriminator")(ProjectionDiscriminator)


def is_disp_generator(G: nn.Module) -> bool:
    return _is_family_generator(G) and int(getattr(G, "c_dim", 0)) > 0


def _is_family_generator(G: nn.Module) -> bool:
    """A generator of a registered network family: StyleGAN2's, StyleGAN3's (their mappings embed c alike)."""
    from ..archs import architecture_of

    try:
        architecture_of(G)
    except FewshotError:
        return False
    return True


def condition_generator(G: Generator, prior_dim: int, seed: int = 0) -> Generator:
    """A copy of the unconditional ``G`` whose mapping also takes a prior of ``prior_dim``.

    The new ``mapping.embed`` starts from a seeded random init (the global RNG is untouched); fc0's
    prior columns start at zero, so the converted G computes exactly the base's function at first.
    A G that is already conditioned on ``prior_dim`` is returned as a copy.
    """
    if not _is_family_generator(G):
        raise FewshotError(f"DISP conditions a fewshot Generator, got {type(G).__name__}")
    if G.c_dim == prior_dim:
        return copy.deepcopy(G)
    if G.c_dim != 0:
        raise FewshotError(
            f"the base generator is already conditional (c_dim {G.c_dim}); DISP needs an unconditional base "
            f"or one conditioned on {prior_dim}-d priors"
        )
    kwargs = copy.deepcopy(G.init_kwargs)
    kwargs["c_dim"] = prior_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = type(G)(**kwargs)
    new = new.to(next(G.parameters()).device)
    src = G.state_dict()
    own = new.state_dict()
    z_dim = G.z_dim
    with torch.no_grad():
        for key, value in src.items():
            if key == "mapping.fc0.weight":
                target = own[key]
                # The equalized-lr gain is lr_mul/sqrt(fan_in): fan-in grew, so scale the stored z
                # columns by sqrt(new_fan_in / old_fan_in) to keep the effective weights identical.
                scale = math.sqrt(target.shape[1] / value.shape[1])
                target.zero_()
                target[:, :z_dim].copy_(value * scale)
            elif key in own and own[key].shape == value.shape:
                own[key].copy_(value)
            else:
                raise FewshotError(f"cannot convert generator tensor {key} {tuple(value.shape)} for DISP")
    new.train(G.training)
    return new


def projection_discriminator(D: Discriminator, prior_dim: int) -> ProjectionDiscriminator:
    """A :class:`ProjectionDiscriminator` holding ``D``'s weights; equal to ``D`` at the start (zero ``proj``)."""
    if isinstance(D, ProjectionDiscriminator):
        if D.prior_dim != prior_dim:
            raise FewshotError(f"the base discriminator projects {D.prior_dim}-d priors, not {prior_dim}-d")
        return copy.deepcopy(D)
    if not isinstance(D, Discriminator):
        raise FewshotError(f"DISP converts a fewshot Discriminator, got {type(D).__name__}")
    if D.c_dim != 0:
        raise FewshotError(f"the base discriminator is class-conditional (c_dim {D.c_dim}); DISP needs an unconditional one")
    kwargs = {k: v for k, v in copy.deepcopy(D.init_kwargs).items() if k != "c_dim"}
    new = ProjectionDiscriminator(prior_dim=prior_dim, **kwargs).to(next(D.parameters()).device)
    missing, unexpected = new.load_state_dict(D.state_dict(), strict=False)
    if unexpected or set(missing) != {"proj.weight"}:
        raise FewshotError(f"cannot convert the discriminator for DISP (missing {missing}, unexpected {unexpected})")
    new.train(D.training)
    return new


def condition_networks(nets: dict[str, nn.Module], prior_dim: int, seed: int = 0) -> dict[str, nn.Module]:
    """G, G_ema -> prior-conditioned generators (same new embedding in both); D -> projection D."""
    out = dict(nets)
    out["G"] = condition_generator(nets["G"], prior_dim, seed)
    out["G_ema"] = copy.deepcopy(out["G"]).eval()
    out["D"] = projection_discriminator(nets["D"], prior_dim)
    return out
