"""StyleGAN3 (NVlabs/stylegan3): the alias-free generator, trained with StyleGAN2's discriminator.

The official train.py's ``--cfg stylegan3-t`` / ``stylegan3-r``: a 2-layer mapping network, G lr 0.0025 and D lr
0.002, ``ema_kimg = batch * 10 / 32`` (ramped up from scratch), no path-length regularisation (so G has no lazy
phase and its optimiser is not rescaled), no style mixing, G's input-magnitude EMA at
``magnitude_ema_beta = 0.5 ** (batch / 20000)`` (set again for the run's batch when fine-tuning, as the official
``--resume`` builds G from the new run's arguments). StyleGAN3-R: 1x1 convolutions, twice the feature maps in G,
radially symmetric downsampling filters, and D's inputs blurred (sigma 10, fading out over
``batch * 200 / 32`` kimg) when training from scratch; a fine-tune (official ``--resume``) starts unblurred.
The official code requires ``--batch`` and ``--gamma``; left unset, fewshot takes stylegan2-ada-pytorch's 'auto'
rules (batch ``min(4096 / res, 32)``, gamma ``0.0002 * res**2 / batch``).

The transfer methods count synthesis layers ``L0 .. L{num_layers-1}`` (the ToRGB layer goes with the last), each
sized by the resolution that holds its band (twice its cutoff), as a StyleGAN2 block by its resolution: by default
general-part freezes those above 16 px (at 256 px L5..L13 of 14, as StyleGAN2's b32..b256).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import FewshotError
from ..registry import architectures
from ._base import Architecture, SynthesisUnit, TrainingDefaults
from .stylegan2 import auto_batch

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..config import Hyper, TrainConfig

GENERATOR_CLASS = "StyleGAN3Generator"  # the network class of fewshot/nets/stylegan3.py


def magnitude_ema_beta(batch: int) -> float:
    """train.py: G's input-magnitude EMA decays with the batch, half-life 20k images."""
    return 0.5 ** (batch / (20 * 1e3))


class StyleGAN3(Architecture):
    generator_classes = (GENERATOR_CLASS,)
    ties_regularizer_terms = False  # official loss.py: (loss_Dreal + loss_Dr1), no real_logits * 0
    rotation = False  # StyleGAN3-R

    def owns(self, class_name: str, init_kwargs: dict[str, Any]) -> bool:
        return class_name in self.generator_classes and bool(init_kwargs.get("use_radial_filters")) == self.rotation

    def hyper_spec(self, cfg: TrainConfig, resolution: int, world_size: int) -> tuple[int, dict[str, Any]]:
        if cfg.cfg != "auto":
            raise FewshotError(f"cfg {cfg.cfg} is a StyleGAN2 hyper-parameter family; a {self.name} run takes the "
                               f"official {self.name} values", hint="leave cfg = auto (set batch, gamma, lr, ... "
                                                                     "one by one)")
        batch = cfg.batch or auto_batch(resolution, world_size)  # the official code asks for --batch
        return batch, dict(gamma=0.0002 * resolution**2 / batch, lr_g=0.0025, lr_d=0.002, ema_kimg=batch * 10 / 32,
                           map_layers=2, ema_rampup=0.05, channel_base=32768, mbstd_group=4)

    def training_defaults(self, cfg: TrainConfig, batch: int, fine_tuning: bool) -> TrainingDefaults:
        pl_weight = cfg.pl_weight if cfg.pl_weight is not None else 0.0
        blur = self.rotation and not fine_tuning
        return TrainingDefaults(pl_weight=0.0, style_mixing=0.0, blur_init_sigma=10.0 if blur else 0.0,
                                blur_fade_kimg=batch * 200 / 32 if blur else 0.0,
                                g_reg_interval=cfg.pl_interval if pl_weight != 0 else None)

    def _synthesis_kwargs(self, cfg: TrainConfig, hyper: Hyper) -> dict[str, Any]:
        widen = 2 if self.rotation else 1  # R doubles G's feature maps (not D's)
        kwargs = dict(channel_base=hyper.channel_base * widen, channel_max=cfg.channel_max * widen,
                      num_fp16_res=cfg.num_fp16_res, conv_clamp=cfg.conv_clamp,
                      magnitude_ema_beta=magnitude_ema_beta(hyper.batch))
        if cfg.synthesis_layers is not None:
            kwargs["num_layers"] = cfg.synthesis_layers
        if self.rotation:
            kwargs.update(conv_kernel=1, use_radial_filters=True)
        return kwargs

    def scratch_generator(self, cfg: TrainConfig, hyper: Hyper, resolution: int, c_dim: int) -> nn.Module:
        from ..nets import build_network

        return build_network(GENERATOR_CLASS, dict(
            z_dim=cfg.z_dim, c_dim=c_dim, w_dim=cfg.w_dim, img_resolution=resolution, img_channels=3,
            mapping_kwargs={"num_layers": hyper.map_layers}, **self._synthesis_kwargs(cfg, hyper)))

    def base_generator_kwargs(self, kwargs: dict[str, Any], cfg: TrainConfig, hyper: Hyper) -> dict[str, Any]:
        kwargs = super().base_generator_kwargs(kwargs, cfg, hyper)
        kwargs["magnitude_ema_beta"] = magnitude_ema_beta(hyper.batch)  # the run's batch, as official --resume
        return kwargs

    def architecture_keys(self, G: nn.Module) -> dict[str, Any]:
        kwargs = G.init_kwargs
        widen = 2 if self.rotation else 1
        return dict(arch=self.name, resolution=G.img_resolution, z_dim=G.z_dim, w_dim=G.w_dim,
                    map_layers=kwargs.get("mapping_kwargs", {}).get("num_layers", 2),
                    channel_base=kwargs.get("channel_base", 32768) // widen,
                    channel_max=kwargs.get("channel_max", 512) // widen, num_fp16_res=kwargs.get("num_fp16_res", 4),
                    conv_clamp=kwargs.get("conv_clamp", 256), synthesis_layers=G.synthesis.num_layers)

    def mapping(self, G: nn.Module, z: torch.Tensor, c: torch.Tensor | None, *, update_emas: bool,
                second: bool = False) -> torch.Tensor:
        return G.mapping(z, c, update_emas=update_emas and not second)

    def synthesis(self, G: nn.Module, ws: torch.Tensor, *, update_emas: bool) -> torch.Tensor:
        return G.synthesis(ws, update_emas=update_emas)

    def units(self, G: nn.Module) -> list[SynthesisUnit]:
        names = list(G.synthesis.layer_names)
        last, torgb = names[-2], names[-1]
        units = []
        for name in names[:-1]:
            layer = getattr(G.synthesis, name)
            modules = (f"synthesis.{name}", f"synthesis.{torgb}") if name == last else (f"synthesis.{name}",)
            # Sized as a StyleGAN2 block is, by the resolution that holds its band: twice its cutoff frequency
            # (its sampling rate runs ahead of that, for the nonlinearity's headroom).
            units.append(SynthesisUnit(modules, round(2 * float(layer.out_cutoff)), modules))
        return units

    def fixed_modules(self, G: nn.Module) -> list[str]:
        return ["synthesis.input"]

    def units_phrase(self, G: nn.Module) -> str:
        return "the generator has {n} synthesis layers (L0.." + G.synthesis.layer_names[-2].split("_")[0] + \
            ", the ToRGB layer going with the last)"


@architectures.register("stylegan3-t", help="StyleGAN3-T generator (translation equivariant), StyleGAN2 D")
class StyleGAN3T(StyleGAN3):
    rotation = False


@architectures.register("stylegan3-r", help="StyleGAN3-R generator (rotation equivariant), StyleGAN2 D")
class StyleGAN3R(StyleGAN3):
    rotation = True
