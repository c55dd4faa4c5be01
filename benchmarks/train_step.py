"""Training-step throughput: compiled ops vs the plain-PyTorch reference, side by side (CPU or CUDA).

One "step" is one batch of the official schedule: Gmain and Dmain every batch, Greg every 4th
and Dreg every 16th batch (here run every step and weighted 1/4 and 1/16, so the average step
cost is what a long run sees). Prints images/s, s/kimg and peak RSS growth for

- the small config of the issue (64 px, channel_base 8192, channel_max 256, batch 8), and
- the 64 px constructor-default config (all 512 channels, mapping 8 layers) at batch 4, the
  setting in which the official implementation took 23.7 s per step on this kind of machine, and
- the official train.py default (`--cfg auto`) at 64 px (channel_base 16384, 2 mapping layers), batch 4.

On a GPU (``--device cuda``) the configs are train.py's ``--cfg auto`` at 64 and 256 px with its
GPU settings: fp16 in the 4 highest resolutions, conv_clamp 256, TF32 off (as the official loop).

Usage: python benchmarks/train_step.py [--repeats 3] [--skip-default] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import json, os, resource, sys, time, torch
from fewshot.nets import Generator, Discriminator
from fewshot.augment import build_augment
from fewshot.train.loss import LossWeights, StyleGAN2Loss
from fewshot.train.loop import lazy_opt_kwargs
from fewshot.cuda import dispatch

cfg = json.loads(sys.argv[1])
device = torch.device(cfg["device"])
if device.type == "cpu":
    from fewshot.host_memory import keep_freed_memory
    keep_freed_memory()  # as `fewshot train` does on the CPU
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.benchmark = True
torch.manual_seed(0)
res, fp16, clamp = cfg.get("res", 64), cfg.get("fp16", 0), cfg.get("clamp")
syn = dict(channel_base=cfg["channel_base"], channel_max=cfg["channel_max"], num_fp16_res=fp16, conv_clamp=clamp)
G = Generator(512, 0, 512, res, 3, mapping_kwargs={"num_layers": cfg["map"]}, synthesis_kwargs=syn).to(device)
D = Discriminator(0, res, 3, channel_base=cfg["channel_base"], channel_max=cfg["channel_max"], num_fp16_res=fp16,
                  conv_clamp=clamp, epilogue_kwargs={"mbstd_group_size": min(cfg["batch"], 4)}).to(device)
aug = build_augment("ada", p=0.2).to(device)
loss = StyleGAN2Loss(G, D, aug, LossWeights(r1_gamma=0.05, pl_weight=2.0)).to(device)
opt_G = torch.optim.Adam(G.parameters(), **lazy_opt_kwargs(0.0025, 4))
opt_D = torch.optim.Adam(D.parameters(), **lazy_opt_kwargs(0.0025, 16))
batch = cfg["batch"]
real = torch.rand(batch, 3, res, res, device=device) * 2 - 1
G.requires_grad_(False); D.requires_grad_(False)

def phase(name, net, opt, gain):
    opt.zero_grad(set_to_none=True)
    net.requires_grad_(True)
    loss.accumulate_gradients(name, real, None, torch.randn(batch, 512, device=device), None, gain=gain)
    net.requires_grad_(False)
    opt.step()

def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()

def step():
    t = {}
    for name, net, opt, w in (("Gmain", G, opt_G, 1), ("Greg", G, opt_G, 4), ("Dmain", D, opt_D, 1), ("Dreg", D, opt_D, 16)):
        sync(); t0 = time.perf_counter(); phase(name, net, opt, w); sync(); t[name] = (time.perf_counter() - t0) / w
    return sum(t.values())

for _ in range(2 if device.type == "cuda" else 1):
    step()  # warm-up (JIT build of the compiled ops when selected, cuDNN algorithm search)
if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
times = [step() for _ in range(cfg["repeats"])]
if device.type == "cuda":
    peak = torch.cuda.max_memory_allocated() / 2**20
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
sec = min(times)  # best of the repeats: the least disturbed by other work
print(json.dumps({"sec_per_step": sec, "img_per_sec": batch / sec, "sec_per_kimg": sec * 1000 / batch,
                  "peak_mb": peak, "ops": os.environ.get("FEWSHOT_OPS")}))
"""


def run(ops: str, cfg: dict) -> dict:
    import json

    env = dict(os.environ, FEWSHOT_OPS=ops)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-default", action="store_true")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--only", default="", help="run only the configs whose label contains this text (e.g. 256px)")
    parser.add_argument("--ops", default="reference,compiled", help="op implementations to time, comma-separated")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    if args.device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}; s/step is the best of {args.repeats}; peak MB = GPU memory")
        gpu = dict(map=2, fp16=4, clamp=256)
        configs = [
            ("auto 64px cb16384 fp16x4 batch 64", dict(channel_base=16384, channel_max=512, batch=64, res=64, **gpu)),
            ("auto 256px cb16384 fp16x4 batch 16", dict(channel_base=16384, channel_max=512, batch=16, res=256, **gpu)),
        ]
    else:
        configs = [("small 64px cb8192 cm256 batch 8", dict(channel_base=8192, channel_max=256, map=2, batch=8))]
    if not args.skip_default and args.device == "cpu":
        configs.append(("default 64px cb32768 cm512 map8 batch 4", dict(channel_base=32768, channel_max=512, map=8, batch=4)))
        # train.py's own default (--cfg auto) at 64 px: channel_base 16384, 2 mapping layers.
        configs.append(("auto 64px cb16384 cm512 map2 batch 4", dict(channel_base=16384, channel_max=512, map=2, batch=4)))
    print(f"{'config':42s} {'ops':10s} {'s/step':>8s} {'img/s':>8s} {'s/kimg':>9s} {'peak MB':>8s}")
    for label, cfg in configs:
        if args.only not in label:
            continue
        cfg["repeats"] = args.repeats
        cfg["device"] = args.device
        for ops in args.ops.split(","):
            r = run(ops, cfg)
            print(f"{label:42s} {ops:10s} {r['sec_per_step']:8.3f} {r['img_per_sec']:8.2f} "
                  f"{r['sec_per_kimg']:9.1f} {r['peak_mb']:8.0f}")


if __name__ == "__main__":
    main()
