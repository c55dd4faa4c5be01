"""The Reg-DGM term as a torch module, and the statistics it needs (the method, its options and its math:
``reg_dgm.py``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FewshotError
from ._base import GeneratorRegularizer
from ._reg_dgm_facts import ESTIMATORS, upsample_factor


def uint8_to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [−1, 1] (the training loop's real-image convention)."""
    return images.to(torch.float32) / 127.5 - 1.0


def channel_mean_std(real_images: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of uint8 images, measured in [−1, 1] space, shapes [1, C, 1, 1].

    Chunked in float64 so a large data set neither needs a float copy in memory nor loses precision.
    """
    channels = real_images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, real_images.shape[0], chunk):
        x = real_images[start : start + chunk].to(torch.float64) / 127.5 - 1.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = real_images.shape[0] * real_images.shape[2] * real_images.shape[3]
    mean = total / count
    var = (total_sq - count * mean.square()) / max(count - 1, 1)
    std = var.clamp_min(0).sqrt().clamp_min(1e-6)  # a constant channel must not divide by zero
    return mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)


class FeatureMoments:
    """Streaming mean and summed per-dimension variance of feature vectors (Chan et al. merge, float64)."""

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.m2 = torch.zeros(dim, dtype=torch.float64)  # sum of squared deviations per dimension

    def update(self, features: torch.Tensor) -> None:
        batch = features.detach().to("cpu", torch.float64)
        n_b = batch.shape[0]
        mean_b = batch.mean(dim=0)
        m2_b = (batch - mean_b).square().sum(dim=0)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta.square() * (self.count * n_b / n)
        self.count = n

    def trace_cov(self) -> float:
        """tr Σ_f with the population normalisation (E‖f − μ‖², as in the identity)."""
        return float(self.m2.sum() / max(self.count, 1))


class RegDGM(GeneratorRegularizer):
    """The Reg-DGM term ``λ·E_f(G(z))`` for G's main loss. The extractor is frozen and stays in eval mode."""

    def __init__(
        self,
        extractor: nn.Module,
        lam: float,
        real_images: torch.Tensor,
        estimator: str = "mean",
        normalize: bool = False,
        mirror: bool = True,
        min_input_size: int = 224,
        fixed_input_size: int | None = None,
        device: torch.device | str = "cpu",
        stats_batch: int = 32,
        name: str = "custom",
        fuse_upsampling: Callable[[nn.Module, int], bool] | None = None,
    ) -> None:
        super().__init__()
        if estimator not in ESTIMATORS:
            raise FewshotError(f"unknown Reg-DGM estimator {estimator!r}", hint=f"use one of {', '.join(ESTIMATORS)}")
        self.extractor_name = name
        self.lam = float(lam)
        self.estimator = estimator
        self.normalize = bool(normalize)
        self.requires_real_batch = estimator == "paired"
        self.resolution = int(real_images.shape[-1])
        self.fixed_input_size = fixed_input_size
        self.factor = 1 if fixed_input_size else upsample_factor(self.resolution, min_input_size)

        # f never learns: no grads, eval mode (BatchNorm uses its running stats), kept so by train() below.
        self.extractor = extractor.requires_grad_(False).eval().to(device)
        # An extractor that can (a registered torchvision ResNet, never a caller's module) takes the nearest
        # upsampling into its stem (same function, far less work); preprocess() then hands it the small images.
        self.stem_fused = bool(fuse_upsampling is not None and not fixed_input_size
                               and fuse_upsampling(self.extractor, self.factor))
        self.upsample_in_extractor = self.stem_fused and self.factor > 1
        mean, std = channel_mean_std(real_images)
        self.register_buffer("channel_mean", mean.to(device))
        self.register_buffer("channel_std", std.to(device))

        self.feature_dim = 0
        self.register_buffer("feature_mean", torch.zeros(0, device=device))
        self.trace_cov = 0.0
        self.feature_scale = 1.0
        # The data pass is needed for the mean estimator and for the normalisation scale.
        if estimator == "mean" or self.normalize:
            moments = self._data_moments(real_images, mirror=mirror, batch=stats_batch, device=device)
            self.feature_dim = moments.mean.numel()
            self.feature_mean = moments.mean.to(device=device, dtype=torch.float32)
            self.trace_cov = moments.trace_cov()
            self.feature_scale = self.trace_cov / self.feature_dim
            if self.normalize and not self.feature_scale > 0:
                raise FewshotError(
                    f"the {name!r} features of the training set do not vary, so they cannot set a scale",
                    hint="use normalize=False",
                )
        self._last_energy: torch.Tensor | None = None

    def train(self, mode: bool = True) -> RegDGM:
        # The loop may call .train() on everything it owns; f must keep its eval-mode BatchNorm/Dropout.
        super().train(mode)
        self.extractor.eval()
        return self

    # -- features ---------------------------------------------------------------------------------------------

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[−1, 1] images → the extractor's input: data-set normalisation, then nearest upsampling."""
        x = (images.to(torch.float32) - self.channel_mean) / self.channel_std
        if self.fixed_input_size and x.shape[-1] != self.fixed_input_size:
            # Networks with a fixed input size (ViT position embeddings): a smooth resize, differentiable.
            size = (self.fixed_input_size, self.fixed_input_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=x.shape[-1] > size[0])
        elif self.factor > 1 and not self.upsample_in_extractor:
            x = F.interpolate(x, scale_factor=self.factor, mode="nearest")
        return x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """f(x) as [B, d] float32 for images in [−1, 1]."""
        return self.extractor(self.preprocess(images)).flatten(1).to(torch.float32)

    @torch.no_grad()
    def _data_moments(self, real_images: torch.Tensor, mirror: bool, batch: int, device: torch.device | str):
        moments: FeatureMoments | None = None
        for start in range(0, real_images.shape[0], batch):
            x = uint8_to_unit_range(real_images[start : start + batch].to(device))
            views = [x, x.flip(dims=[3])] if mirror else [x]
            for view in views:
                feats = self.features(view)
                if moments is None:
                    moments = FeatureMoments(feats.shape[1])
                moments.update(feats)
        assert moments is not None
        return moments

    # -- the term ---------------------------------------------------------------------------------------------

    def energy(self, fake_images: torch.Tensor, real_images: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample E_f estimate, shape [B] (divided by the feature scale when normalising)."""
        self._check_images(fake_images, "fake images")
        fake_feats = self.features(fake_images)
        if self.estimator == "paired":
            if real_images is None:
                raise FewshotError("the paired Reg-DGM estimator needs the real batch (real_images=...)")
            self._check_images(real_images, "real images")
            if real_images.shape[0] != fake_images.shape[0]:
                raise FewshotError(
                    f"paired Reg-DGM needs as many reals as fakes, got {real_images.shape[0]} and {fake_images.shape[0]}"
                )
            if real_images.dtype == torch.uint8:
                real_images = uint8_to_unit_range(real_images)
            with torch.no_grad():  # reals are targets, as the official .detach(); no graph is kept for them
                real_feats = self.features(real_images.to(fake_images.device))
            energy = (fake_feats - real_feats).square().mean(dim=1)
        else:
            energy = ((fake_feats - self.feature_mean).square().sum(dim=1) + self.trace_cov) / fake_feats.shape[1]
        if self.normalize:
            energy = energy / self.feature_scale
        return energy

    def generator_loss(self, fake_images: torch.Tensor, real_images: torch.Tensor | None = None) -> torch.Tensor:
        """λ·mean_batch(E_f(fake)): a scalar whose gradient flows through f into the fakes."""
        energy = self.energy(fake_images, real_images).mean()
        self._last_energy = energy.detach()
        return self.lam * energy

    def stats(self) -> dict[str, float]:
        out = {"reg_lambda": self.lam, "reg_feature_scale": float(self.feature_scale)}
        if self._last_energy is not None:
            value = float(self._last_energy)
            out["reg_energy"] = value
            out["reg_loss"] = self.lam * value
        return out

    def _check_images(self, images: torch.Tensor, what: str) -> None:
        if images.ndim != 4 or images.shape[1] != self.channel_mean.shape[1]:
            raise FewshotError(
                f"Reg-DGM expects {what} of shape [B, {self.channel_mean.shape[1]}, H, W], got {list(images.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"extractor={self.extractor_name}, lam={self.lam:g}, estimator={self.estimator}, "
            f"normalize={self.normalize}, upsample=x{self.factor}{' (in the stem)' if self.upsample_in_extractor else ''}"
        )
