"""fewshot against NVIDIA's stylegan3 on the same machine: a StyleGAN3 training iteration (issue 22).

The official ``--cfg stylegan3-t`` / ``stylegan3-r`` semantics at equal config, from scratch (random weights):
2 mapping layers, G lr 0.0025 with no lazy phase (no path length, no style mixing: G's phase is ``Gboth``), D lr
0.002 with lazy R1 every 16 batches (Adam rescaled as official), R1 γ ``0.0002 · res² / batch``, ADA ``bgc`` from
p = 0.2 (target 0.6, every 4 batches), G's ``magnitude_ema_beta = 0.5 ** (batch / 20000)``, G_ema every batch,
StyleGAN3-R's D-input blur (σ 10 fading over ``batch · 200 / 32`` kimg), z/w 512, fp32, no clamp.

- *official*: the loop body of NVlabs/stylegan3's ``training/training_loop.py`` driving its
  ``networks_stylegan3.Generator``, ``networks_stylegan2.Discriminator``, ``AugmentPipe`` and ``StyleGAN2Loss``;
  reals drawn from uint8 images in memory. On the CPU its CUDA plugins are not used: filtered_lrelu, bias_act,
  upfirdn2d and conv2d_gradfix run their plain-PyTorch reference code, which is what the official code runs on a
  CPU. Two shims let it import on a current Python: ``pkg_resources.parse_version`` (from ``packaging``) and Adam
  ``betas`` given as floats (the official ``[0, 0.99]`` mixes an int, which torch 2.x refuses).
- *fewshot*: :func:`fewshot.train.loop.train_batch` on a Run that :func:`fewshot.train.setup.setup` builds from the
  ``scratch`` preset with ``arch = stylegan3-t`` (or ``-r``), with everything ``fewshot train`` turns on.

An iteration is amortised over the lazy schedule: ``(15 · plain + 1 · with Dreg) / 16``. Each measurement runs in a
fresh child process, the implementations alternate within each round, and each reports its best round.

    .venv/bin/python benchmarks/official_side_by_side_sg3.py [--official /tmp/upstream/sg3] [--rounds 3] [--only R]

Without a stylegan3 checkout (fetch NVlabs/stylegan3 into an ignored folder) the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_side_by_side import COMMON, child, interleaved, noise_images  # noqa: E402

DEFAULT_OFFICIAL = Path(os.environ.get("FEWSHOT_OFFICIAL_SG3", "/tmp/upstream/sg3"))

CONFIGS = {  # label -> resolution, channel_base, channel_max (of D; StyleGAN3-R doubles G's), batch
    "StyleGAN3-T 32px (cb 4096, cm 128, batch 8)": dict(res=32, channel_base=4096, channel_max=128, batch=8),
    "StyleGAN3-R 32px (cb 2048, cm 64, batch 8)": dict(res=32, channel_base=2048, channel_max=64, batch=8, r=True),
}
WEIGHTS = {"plain": 15 / 16, "all": 1 / 16}

OFFICIAL_TRAIN = COMMON + r"""
import copy, types
sys.path.insert(0, cfg["official"])
for unused in ("requests", "imageio", "click"):
    sys.modules.setdefault(unused, types.ModuleType(unused))
pkg = types.ModuleType("pkg_resources")
from packaging.version import parse as _parse
pkg.parse_version = _parse
sys.modules.setdefault("pkg_resources", pkg)
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
from training.networks_stylegan3 import Generator
from training.networks_stylegan2 import Discriminator
from training.augment import AugmentPipe
from training.loss import StyleGAN2Loss
torch.manual_seed(0)
conv2d_gradfix.enabled = grid_sample_gradfix.enabled = True
training_stats.init_multiprocessing(rank=0, sync_device=None)
r = cfg.get("r", False)
G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3, mapping_kwargs=dict(num_layers=2),
              channel_base=cfg["channel_base"] * (2 if r else 1), channel_max=cfg["channel_max"] * (2 if r else 1),
              num_fp16_res=0, conv_clamp=None, magnitude_ema_beta=0.5 ** (batch / 20e3),
              **(dict(conv_kernel=1, use_radial_filters=True) if r else {})).train().requires_grad_(False)
D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=cfg["channel_base"], channel_max=cfg["channel_max"],
                  num_fp16_res=0, conv_clamp=None, epilogue_kwargs=dict(mbstd_group_size=4)).train().requires_grad_(False)
G_ema = copy.deepcopy(G).eval()
bgc = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1,
           lumaflip=1, hue=1, saturation=1)
augment_pipe = AugmentPipe(**bgc).train().requires_grad_(False)
augment_pipe.p.copy_(torch.as_tensor(0.2))
ada_stats = training_stats.Collector(regex="Loss/signs/real")
loss = StyleGAN2Loss(device=device, G=G, D=D, augment_pipe=augment_pipe, r1_gamma=gamma,
                     blur_init_sigma=10 if r else 0, blur_fade_kimg=batch * 200 / 32)
phases = []
G_opt = torch.optim.Adam(G.parameters(), lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
phases.append(types.SimpleNamespace(name="Gboth", module=G, opt=G_opt, interval=1))
ratio = 16 / 17
D_opt = torch.optim.Adam(D.parameters(), lr=0.002 * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)
phases += [types.SimpleNamespace(name="Dmain", module=D, opt=D_opt, interval=1),
           types.SimpleNamespace(name="Dreg", module=D, opt=D_opt, interval=16)]
reals = torch.randint(0, 256, [64, 3, res, res], dtype=torch.uint8)
ema_kimg, ema_rampup = batch * 10 / 32, 0.05
state = dict(cur_nimg=0, batch_idx=0)

def iteration():
    idx = torch.randint(0, len(reals), [batch])
    real_img = reals[idx].to(torch.float32) / 127.5 - 1
    real_c = torch.zeros([batch, 0])
    all_gen_z = torch.randn([len(phases) * batch, G.z_dim]).split(batch)
    all_gen_c = torch.zeros([len(phases) * batch, 0]).split(batch)
    for phase, gen_z, gen_c in zip(phases, all_gen_z, all_gen_c):
        if state["batch_idx"] % phase.interval != 0:
            continue
        phase.opt.zero_grad(set_to_none=True)
        phase.module.requires_grad_(True)
        loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c,
                                  gain=phase.interval, cur_nimg=state["cur_nimg"])
        phase.module.requires_grad_(False)
        params = [p for p in phase.module.parameters() if p.grad is not None]
        if params:
            flat = torch.cat([p.grad.flatten() for p in params])
            torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
            for p, g in zip(params, flat.split([p.numel() for p in params])):
                p.grad = g.reshape(p.shape)
        phase.opt.step()
    with torch.no_grad():
        ema_nimg = min(ema_kimg * 1000, state["cur_nimg"] * ema_rampup)
        ema_beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(G_ema.parameters(), G.parameters()):
            p_ema.copy_(p.lerp(p_ema, ema_beta))
        for b_ema, b in zip(G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)
    state["cur_nimg"] += batch
    state["batch_idx"] += 1
    if state["batch_idx"] % 4 == 0:
        ada_stats.update()
        adjust = (1 if ada_stats["Loss/signs/real"] - 0.6 > 0 else -1) * (batch * 4) / (500 * 1000)
        augment_pipe.p.copy_((augment_pipe.p + adjust).max(torch.zeros([])))

def at(index):
    state["batch_idx"] = index
    return timed(iteration)
at(0)
times = {"plain": min(at(1), at(2)), "all": at(16)}
print(json.dumps(times))
"""

FEWSHOT_TRAIN = COMMON + r"""
from contextlib import ExitStack
from fewshot.config import resolve_config
from fewshot.train.loop import _process_torch_settings, train_batch
from fewshot.train.run import TickStats
from fewshot.train.setup import Request, setup
overrides = dict(data=cfg["data"], outdir=cfg["outdir"], resolution=res, arch="stylegan3-r" if cfg.get("r") else
                 "stylegan3-t", z_dim=512, w_dim=512, map_layers=2, channel_base=cfg["channel_base"],
                 channel_max=cfg["channel_max"], num_fp16_res=0, conv_clamp=None, batch=batch, mbstd_group=4,
                 gamma=gamma, aug_p=0.2, kimg=10000, tick_kimg=10000, snap=0, device=cfg["device"], seed=0,
                 metrics=[])
with ExitStack() as held:
    held.enter_context(_process_torch_settings())
    run = setup(resolve_config("scratch", overrides), Request(progress=False, plan=False), lambda m: None, held)
    stats = TickStats()
    def at(index):
        run.progress.batch_idx = index
        return timed(lambda: train_batch(run, stats))
    at(0)  # warm-up: every phase once
    times = {"plain": min(at(1), at(2)), "all": at(16)}
print(json.dumps(times))
"""


def amortised(times: dict[str, float]) -> float:
    return sum(WEIGHTS[kind] * times[kind] for kind in WEIGHTS)


def train_rows(label: str, cfg: dict, rounds: int, tmp: Path) -> None:
    cfg = dict(cfg, data=str(noise_images(tmp / f"data{cfg['res']}", cfg["res"])), outdir=str(tmp / "runs"))
    results = interleaved(rounds, {"official": lambda: child(OFFICIAL_TRAIN, cfg),
                                   "fewshot": lambda: child(FEWSHOT_TRAIN, cfg)})
    best = {name: min(amortised(t) for t in runs) for name, runs in results.items()}
    for name, runs in results.items():
        rounds_s = ", ".join(f"{amortised(t):.3f}" for t in runs)
        kinds = " / ".join(f"{min(t[k] for t in runs):.3f}" for k in WEIGHTS)
        print(f"| {label} | {name} | **{best[name]:.3f}** | {rounds_s} | {kinds} |", flush=True)
    print(f"| {label} | ratio official / fewshot | **{best['official'] / best['fewshot']:.2f}x** | | |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, default=DEFAULT_OFFICIAL, help="a NVlabs/stylegan3 checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="run only the configs whose label contains this text")
    args = parser.parse_args()
    if not (args.official / "training" / "networks_stylegan3.py").is_file():
        print(f"official_side_by_side_sg3: no stylegan3 checkout at {args.official} (fetch NVlabs/stylegan3 there, "
              "or pass --official DIR); skipped")
        return
    import torch

    commit = subprocess.run(["git", "-C", str(args.official), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'native')}, "
          f"official commit {commit}")
    with tempfile.TemporaryDirectory() as tmp:
        print("\n| config | code | s/iteration (best) | rounds | plain / +Dreg batch (best) |")
        print("|---|---|---:|---|---|")
        for label, cfg in CONFIGS.items():
            if args.only in label:
                train_rows(label, dict(cfg, device="cpu", official=str(args.official)), args.rounds, Path(tmp))


if __name__ == "__main__":
    main()
