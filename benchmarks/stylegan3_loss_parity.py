"""Side-by-side parity of fewshot's StyleGAN3 training semantics with NVlabs/stylegan3's own loss.

Needs that repository fetched outside this one (never committed)::

    FEWSHOT_OPS=reference OMP_NUM_THREADS=1 python benchmarks/stylegan3_loss_parity.py /tmp/upstream/sg3

(``FEWSHOT_OPS=reference``: fewshot's plain-PyTorch upfirdn2d, which sums the blur as the official reference
does; the compiled CPU op differs from it by float rounding, ~1e-7.)

Two copies of one tiny StyleGAN3 (fewshot's network, 16 px, 4 layers) and StyleGAN2 D train side by side for a few
batches of the official StyleGAN3 loop: the phases it builds for ``--cfg stylegan3-r`` from scratch (Gboth with
the G optimiser unscaled, Dmain, Dreg every 2 batches with lazy scaling), Adam with the official arguments,
``nan_to_num`` of the gradients, then G_ema. One copy is driven by the official ``training.loss.StyleGAN2Loss``
(``blur_init_sigma=10``, ``blur_fade_kimg`` short enough to cross the fade, R1 gamma 0.5, no path length, no
style mixing), the other by fewshot's ``StyleGAN2Loss`` with the ``stylegan3-r`` family's defaults. Both see the
same reals and latents. Printed: the largest difference of every tensor (parameters and buffers: w_avg and the
magnitude EMAs) after each batch, and the blur sigma each side used.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 4
BATCHES = 6
R1_INTERVAL = 2


class OfficialD(torch.nn.Module):
    """fewshot's D under the official loss, which passes ``update_emas`` (its own D ignores it too)."""

    def __init__(self, D: torch.nn.Module) -> None:
        super().__init__()
        self.D = D

    def forward(self, img: torch.Tensor, c: torch.Tensor | None, update_emas: bool = False) -> torch.Tensor:
        return self.D(img, c)


def networks() -> tuple[torch.nn.Module, torch.nn.Module]:
    from fewshot.archs.stylegan3 import magnitude_ema_beta
    from fewshot.nets import Discriminator, build_network

    torch.manual_seed(0)
    G = build_network("StyleGAN3Generator", dict(
        z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
        channel_base=128, channel_max=32, num_fp16_res=0, conv_clamp=None, num_layers=4, conv_kernel=1,
        use_radial_filters=True, magnitude_ema_beta=magnitude_ema_beta(BATCH)))
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=16, num_fp16_res=0,
                      conv_clamp=None, epilogue_kwargs={"mbstd_group_size": 2})
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


def optimisers(G: torch.nn.Module, D: torch.nn.Module, lr_g: float, lr_d: float) -> dict[str, torch.optim.Adam]:
    ratio = R1_INTERVAL / (R1_INTERVAL + 1)  # train.py: G without lazy regularisation, D's rescaled
    return {"G": torch.optim.Adam(G.parameters(), lr=lr_g, betas=(0.0, 0.99), eps=1e-8),
            "D": torch.optim.Adam(D.parameters(), lr=lr_d * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)}


def step(loss, G, D, opts, phase: str, module: str, real, z, cur_nimg: int, official: bool) -> None:
    net = G if module == "G" else D
    opts[module].zero_grad(set_to_none=True)
    net.requires_grad_(True)
    gain = R1_INTERVAL if phase == "Dreg" else 1
    if official:
        loss.accumulate_gradients(phase="Gboth" if phase == "Gmain" else phase, real_img=real, real_c=None,
                                  gen_z=z, gen_c=None, gain=gain, cur_nimg=cur_nimg)
    else:
        loss.cur_nimg = cur_nimg
        loss.accumulate_gradients(phase, real, None, z, None, gain=gain)
    net.requires_grad_(False)
    for p in net.parameters():
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
    opts[module].step()


def ema(G_ema: torch.nn.Module, G: torch.nn.Module, cur_nimg: int, ema_kimg: float) -> None:
    with torch.no_grad():
        beta = 0.5 ** (BATCH / max(min(ema_kimg * 1000, cur_nimg * 0.05), 1e-8))
        for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
            b_ema.copy_(b)


def largest_difference(a: torch.nn.Module, b: torch.nn.Module) -> tuple[float, str]:
    worst = (0.0, f"all {len(a.state_dict())} tensors")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        diff = float((x.float() - y.float()).abs().max()) if x.numel() else 0.0
        if diff > worst[0]:
            worst = (diff, name)
    return worst


def main(upstream: str) -> None:
    sys.path.insert(0, upstream)
    import types

    for unused in ("requests",):  # dnnlib's downloader, never called here
        sys.modules.setdefault(unused, types.ModuleType(unused))
    if "pkg_resources" not in sys.modules:  # conv2d_gradfix reads torch's version with it (gone from setuptools)
        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    from training.loss import StyleGAN2Loss as OfficialLoss  # NVlabs/stylegan3

    from fewshot.augment import make_augment
    from fewshot.config import derive_hyper, resolve_config
    from fewshot.train.loss import LossWeights, StyleGAN2Loss, blur_sigma

    torch.set_num_threads(1)
    cfg = resolve_config(None, {"data": "demo", "arch": "stylegan3-r", "batch": BATCH, "gamma": 0.5,
                                "blur_fade_kimg": 0.016})
    hyper = derive_hyper(cfg, 16, fine_tuning=False)
    G, D = networks()
    sides = {}
    for side in ("official", "fewshot"):
        G_side, D_side = copy.deepcopy(G), copy.deepcopy(D)
        if side == "official":
            loss = OfficialLoss(torch.device("cpu"), G_side, OfficialD(D_side), r1_gamma=hyper.gamma,
                                style_mixing_prob=hyper.style_mixing, pl_weight=hyper.pl_weight,
                                blur_init_sigma=hyper.blur_init_sigma, blur_fade_kimg=hyper.blur_fade_kimg)
        else:
            weights = LossWeights(r1_gamma=hyper.gamma, pl_weight=hyper.pl_weight, style_mixing=hyper.style_mixing,
                                  blur_init_sigma=hyper.blur_init_sigma, blur_fade_kimg=hyper.blur_fade_kimg)
            from fewshot.archs import architecture

            loss = StyleGAN2Loss(G_side, D_side, make_augment("none", None), weights, arch=architecture(cfg.arch))
        sides[side] = (loss, G_side, D_side, copy.deepcopy(G_side).eval(), optimisers(G_side, D_side, hyper.lr_g,
                                                                                     hyper.lr_d))
    print(f"stylegan3-r from scratch: gamma {hyper.gamma}, lr G {hyper.lr_g} D {hyper.lr_d}, blur sigma "
          f"{hyper.blur_init_sigma} fading over {hyper.blur_fade_kimg} kimg, ema {hyper.ema_kimg} kimg")
    data = torch.Generator().manual_seed(1)
    for batch_idx in range(BATCHES):
        cur_nimg = batch_idx * BATCH
        real = torch.rand([BATCH, 3, 16, 16], generator=data) * 2 - 1
        zs = torch.randn([3, BATCH, 16], generator=data)
        for side, (loss, G_side, D_side, G_ema, opts) in sides.items():
            for (phase, module, interval), z in zip((("Gmain", "G", 1), ("Dmain", "D", 1),
                                                     ("Dreg", "D", R1_INTERVAL)), zs, strict=True):
                if batch_idx % interval == 0:
                    step(loss, G_side, D_side, opts, phase, module, real, z, cur_nimg, side == "official")
            ema(G_ema, G_side, cur_nimg + BATCH, hyper.ema_kimg)
        (_, g_a, d_a, e_a, _), (_, g_b, d_b, e_b, _) = sides["official"], sides["fewshot"]
        sigma = blur_sigma(sides["fewshot"][0].weights, cur_nimg)
        parts = [f"{name} {diff:.2e} ({key})" for name, (diff, key) in
                 (("G", largest_difference(g_a, g_b)), ("D", largest_difference(d_a, d_b)),
                  ("G_ema", largest_difference(e_a, e_b)))]
        print(f"batch {batch_idx} (blur sigma {sigma:g}): largest difference " + ", ".join(parts))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/upstream/sg3")
