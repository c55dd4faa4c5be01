"""The networks of a run: built from scratch, from a base checkpoint, or as a snapshot holds them."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..archs import architecture, architecture_of
from ..checkpoint import Bundle, load_checkpoint
from ..config import Hyper, TrainConfig
from ..errors import FewshotError
from ..nets import Discriminator


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise FewshotError("device cuda requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def load_training_images(cfg: TrainConfig, resolution: int, progress: bool) -> Any:
    from .. import data

    if cfg.data in ("", None):
        raise FewshotError("no training data given", hint="fewshot train DATA_FOLDER_OR_ZIP (or 'demo')")
    domain = data.demo_domain(cfg.data)  # "demo" (discs) or "demo:<domain>": built in, no files
    if domain is not None:
        return data.demo_images(n=cfg.max_images or 64, resolution=resolution, seed=0, domain=domain)
    return data.load_images(cfg.data, resolution, crop=cfg.crop, mirror=cfg.mirror, max_images=cfg.max_images,
                            progress=progress)


def scratch_networks(cfg: TrainConfig, hyper: Hyper, resolution: int, c_dim: int = 0) -> dict[str, nn.Module]:
    """New networks of the config's family; class-conditional (G's mapping embeds c, D's projects it) when
    ``c_dim`` > 0. D is StyleGAN2's for every family."""
    arch = architecture(cfg.arch)
    G = arch.scratch_generator(cfg, hyper, resolution, c_dim)
    channel_base, channel_max = arch.discriminator_channels(cfg, hyper)
    D = Discriminator(
        c_dim=c_dim, img_resolution=resolution, img_channels=3, channel_base=channel_base,
        channel_max=channel_max, num_fp16_res=cfg.num_fp16_res, conv_clamp=cfg.conv_clamp,
        epilogue_kwargs={"mbstd_group_size": hyper.mbstd_group},
    )
    return {"G": G, "D": D, "G_ema": copy.deepcopy(G).eval()}


def base_family(cfg: TrainConfig, base: Bundle) -> TrainConfig:
    """The config with the base generator's family as ``arch``: a base decides it; an ``arch`` that names
    another family is refused in one line."""
    g_src = base.networks.get("G") or base.networks.get("G_ema")
    if g_src is None:
        raise FewshotError("the base checkpoint holds no generator")
    family = architecture_of(g_src).name
    if cfg.arch is not None and cfg.arch != family:
        raise FewshotError(f"arch {cfg.arch} does not match the base, a {family} generator",
                           hint="a base decides the network family; drop --arch (it picks one from scratch)")
    return replace(cfg, arch=family)


def base_networks(cfg: TrainConfig, base: Bundle, hyper: Hyper) -> tuple[dict[str, nn.Module], list[str]]:
    """Networks shaped like the base (the architecture follows the checkpoint), weights copied.

    Returns the nets and the list of base tensors that did not fit (empty unless the config
    asked for a different shape, e.g. --map-layers); the caller stops unless --allow-partial.
    """
    g_src = base.networks.get("G") or base.networks.get("G_ema")
    if g_src is None:
        raise FewshotError("the base checkpoint holds no generator")
    arch = architecture_of(g_src)
    G = type(g_src)(**arch.base_generator_kwargs(copy.deepcopy(g_src.init_kwargs), cfg, hyper))
    res = G.img_resolution
    if "D" in base.networks:
        d_kwargs = copy.deepcopy(base.networks["D"].init_kwargs)
        d_kwargs.setdefault("epilogue_kwargs", {})["mbstd_group_size"] = hyper.mbstd_group
        D = type(base.networks["D"])(**d_kwargs)  # a DISP base keeps its ProjectionDiscriminator
    else:
        D = Discriminator(c_dim=G.init_kwargs.get("c_dim", 0), img_resolution=res, img_channels=G.img_channels,
                          channel_base=arch.architecture_keys(G)["channel_base"],
                          epilogue_kwargs={"mbstd_group_size": hyper.mbstd_group})
    nets = {"G": G, "D": D, "G_ema": copy.deepcopy(G)}
    skipped: list[str] = []
    for name, net in nets.items():
        src = base.networks.get(name) or (base.networks.get("G_ema") if name == "G" else None) \
            or (base.networks.get("G") if name == "G_ema" else None)
        if src is None:
            if name == "D":
                skipped.append("D.* (the base has no discriminator; D starts from scratch)")
            continue
        own = net.state_dict()
        src_state = src.state_dict()
        with torch.no_grad():
            for key, value in src_state.items():
                if key in own and own[key].shape == value.shape:
                    own[key].copy_(value)
                else:
                    skipped.append(f"{name}.{key} {tuple(value.shape)}")
        skipped += [f"{name}.{k} (not in base)" for k in own if k not in src_state]
    nets["G_ema"].eval()
    return nets, skipped


def architecture_keys(G: nn.Module) -> dict[str, Any]:
    """The config's architecture keys as a built generator has them (a base's, whatever the preset said)."""
    return architecture_of(G).architecture_keys(G)


def lazy_opt_kwargs(lr: float, interval: int | None) -> dict[str, Any]:
    """A lazily regularised optimiser uses lr*c and betas**c with c = interval/(interval+1)."""
    ratio = interval / (interval + 1) if interval else 1.0
    return dict(lr=lr * ratio, betas=(0.0 ** ratio, 0.99**ratio), eps=1e-8)


def fixed_latents(cfg: TrainConfig, z_dim: int, device: torch.device) -> torch.Tensor:
    cols, rows = cfg.sample_grid
    gen = torch.Generator().manual_seed(cfg.seed + 123456)
    return torch.randn([cols * rows, z_dim], generator=gen).to(device)


def save_grid(images: torch.Tensor, path: Path, grid: tuple[int, int]) -> None:
    """Write a [N,3,H,W] float batch in [-1,1] as a grid (cols, rows), quantised as the official tools do."""
    from ..image_output import save_image_grid
    from ..synthesis import to_uint8

    cols, rows = grid
    n = min(images.shape[0], cols * rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image_grid(to_uint8(images[:n].detach().float()), path, (cols, math.ceil(n / cols)))


@torch.no_grad()
def render_fakes(G_ema: nn.Module, latents: torch.Tensor, batch: int,
                 conditions: torch.Tensor | None = None) -> torch.Tensor:
    from ..synthesis import inference_kwargs

    fast = inference_kwargs(latents.device)  # the batched CPU path of `fewshot sample`
    if conditions is None:
        return torch.cat([G_ema(z, None, noise_mode="const", **fast) for z in latents.split(batch)])
    return torch.cat([G_ema(z, c, noise_mode="const", **fast)
                      for z, c in zip(latents.split(batch), conditions.split(batch), strict=True)])


def load_base(ref: str) -> Bundle:
    path = Path(ref)
    if not path.exists():
        from ..hub import resolve_checkpoint

        # A fetch that fails names the file, where it was sought, and the remedies (a local file among them).
        path = resolve_checkpoint(ref, flag="--base PATH (or --base none to train from scratch)")
    return load_checkpoint(path)


def build_like(bundle: Bundle, name: str) -> nn.Module:
    from ..nets import build_network

    spec = bundle.specs[name]
    return build_network(spec.class_name, spec.init_kwargs)


def net_state(bundle: Bundle, name: str) -> dict[str, torch.Tensor]:
    """A snapshot keeps the adapted (e.g. AdaFM) state under state.net.<name>.* when it differs."""
    prefix = f"net.{name}."
    raw = {k[len(prefix):]: v for k, v in bundle.state_tensors.items() if k.startswith(prefix)}
    return raw if raw else bundle.networks[name].state_dict()
