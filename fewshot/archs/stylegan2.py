"""StyleGAN2 (stylegan2-ada-pytorch): the family every run was before there were families.

Its hyper-parameters come from the config's ``cfg`` (``auto`` or one of the official cfg specs), path-length
regularisation (weight 2, lazily every ``pl_interval`` batches) and style mixing (0.9) are on, D's inputs are
not blurred. The transfer methods count synthesis blocks ``b4 .. b{resolution}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..registry import architectures
from ._base import Architecture, SynthesisUnit, TrainingDefaults

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..config import Hyper, TrainConfig


def auto_batch(resolution: int, world_size: int) -> int:
    """train.py's 'auto' total batch: capped at 64, at least one per process."""
    return max(min(world_size * min(4096 // resolution, 32), 64), world_size)


@architectures.register("stylegan2", help="StyleGAN2 generator and discriminator (stylegan2-ada-pytorch)")
class StyleGAN2(Architecture):
    generator_classes = ("Generator",)

    def hyper_spec(self, cfg: TrainConfig, resolution: int, world_size: int) -> tuple[int, dict[str, Any]]:
        from ..config import ARCH_SPECS

        if cfg.cfg == "auto":
            # train.py's 'auto': lr 0.002 from 1024 px, and the mbstd group follows the auto batch even when
            # --batch overrides it.
            batch = cfg.batch or auto_batch(resolution, world_size)
            lr = 0.002 if resolution >= 1024 else 0.0025
            return batch, dict(
                gamma=0.0002 * resolution**2 / batch, lr_g=lr, lr_d=lr, ema_kimg=batch * 10 / 32, map_layers=2,
                ema_rampup=0.05, channel_base=16384 if resolution < 512 else 32768,
                mbstd_group=min(auto_batch(resolution, world_size) // world_size, 4),
            )
        spec = dict(ARCH_SPECS[cfg.cfg])
        batch = cfg.batch or spec.pop("batch")
        spec["lr_g"] = spec["lr_d"] = spec.pop("lr")
        return batch, spec

    def training_defaults(self, cfg: TrainConfig, batch: int, fine_tuning: bool) -> TrainingDefaults:
        # stylegan2-ada-pytorch keeps G's lazy phase (and its optimiser rescaling) even at pl_weight 0.
        return TrainingDefaults(pl_weight=2.0, style_mixing=0.9, blur_init_sigma=0.0, blur_fade_kimg=0.0,
                                g_reg_interval=cfg.pl_interval)

    def scratch_generator(self, cfg: TrainConfig, hyper: Hyper, resolution: int, c_dim: int) -> nn.Module:
        from ..nets import Generator

        return Generator(
            z_dim=cfg.z_dim, c_dim=c_dim, w_dim=cfg.w_dim, img_resolution=resolution, img_channels=3,
            mapping_kwargs={"num_layers": hyper.map_layers},
            synthesis_kwargs={
                "channel_base": hyper.channel_base, "channel_max": cfg.channel_max,
                "num_fp16_res": cfg.num_fp16_res, "conv_clamp": cfg.conv_clamp,
            },
        )

    def architecture_keys(self, G: nn.Module) -> dict[str, Any]:
        kwargs = G.init_kwargs
        synthesis, mapping = kwargs.get("synthesis_kwargs", {}), kwargs.get("mapping_kwargs", {})
        return dict(arch=self.name, resolution=G.img_resolution, z_dim=G.z_dim, w_dim=G.w_dim,
                    map_layers=mapping.get("num_layers", 8), channel_base=synthesis.get("channel_base", 32768),
                    channel_max=synthesis.get("channel_max", 512), num_fp16_res=synthesis.get("num_fp16_res", 0),
                    conv_clamp=synthesis.get("conv_clamp"))

    def mapping(self, G: nn.Module, z: torch.Tensor, c: torch.Tensor | None, *, update_emas: bool,
                second: bool = False) -> torch.Tensor:
        # stylegan2-ada-pytorch updates w_avg in every training pass but the style-mixing one.
        return G.mapping(z, c, skip_w_avg_update=True) if second else G.mapping(z, c)

    def synthesis(self, G: nn.Module, ws: torch.Tensor, *, update_emas: bool) -> torch.Tensor:
        return G.synthesis(ws)

    def units(self, G: nn.Module) -> list[SynthesisUnit]:
        return [SynthesisUnit((f"synthesis.b{r}",), r,
                              tuple(f"synthesis.b{r}.{c}" for c in ("conv0", "conv1", "torgb")
                                    if hasattr(getattr(G.synthesis, f"b{r}"), c)))
                for r in G.synthesis.block_resolutions]

    def units_phrase(self, G: nn.Module) -> str:
        return f"the generator has {{n}} synthesis blocks (b4..b{G.img_resolution})"
