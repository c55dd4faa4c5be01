"""fewshot against NVIDIA's stylegan2-ada-pytorch on the same machine: a training iteration, and sampling.

Training: one iteration of each training loop at equal config, from scratch (random weights), ADA ``bgc``
starting at p = 0.2 with target 0.6, adjusted every 4 batches, style mixing 0.9, path length 2, R1 γ of
train.py's ``--cfg auto`` (0.0002 · res² / batch), Adam as the official lazy regularisation scales it, z/w
512, 2 mapping layers, no fp16 and no clamp (the official code runs fp32 on the CPU), minibatch-stddev
groups of 4, G_ema updated every batch. ``--cpu-bf16``: both with conv_clamp 256, and fewshot's top four
resolutions in bfloat16 (``cpu_bf16``, on CPUs with AVX512-BF16 or AMX), the CPU counterpart of the official
``num_fp16_res=4`` that it runs only on a GPU.

- *official*: the loop body of ``training/training_loop.py`` driving the official ``Generator``,
  ``Discriminator``, ``AugmentPipe`` and ``StyleGAN2Loss``; its reals are drawn from uint8 images held in
  memory (its DataLoader's worker processes would compete for the same cores). On the CPU its CUDA plugins
  are not used: bias_act, upfirdn2d and conv2d_gradfix run their plain-PyTorch reference code, which is what
  the official code runs on a CPU. On CUDA its plugins build and run.
- *fewshot*: :func:`fewshot.train.loop.train_batch`, the loop's own batch, on a Run that
  :func:`fewshot.train.setup.setup` builds from the ``scratch`` preset on 64 noise images written as PNG files,
  with everything ``fewshot train`` turns on by default (compiled ops, Winograd convolutions, kept memory).

An iteration is amortised over the lazy schedule: every batch runs Gmain and Dmain, every 4th adds Greg and
every 16th adds Dreg, so each child times a batch of each kind (after an untimed warm-up batch that runs all
four phases) and reports ``(12 · plain + 3 · with Greg + 1 · with Greg and Dreg) / 16``.

Sampling: the official ``generate.py`` loop (one seed per forward, ``RandomState(seed)`` latents, ψ 0.7,
``noise_mode='const'``, images to uint8 on the host) against ``fewshot.synthesis.generate_images`` (batches
of 16); PNG writing is left out on both sides.

Each measurement runs in a fresh child process; the implementations alternate within each round (which goes
first alternates too), and each reports its best round.

``--profile`` (CPU) runs one more batch of each kind under torch's profiler in every training child and splits
each side's iteration into oneDNN's direct convolutions (forward, backward, transposed), fewshot's Winograd
convolutions (batched matmuls and tile transforms) and everything else. The direct convolutions are the same
calls with the same shapes in both codes wherever fewshot does not take Winograd, so the official iteration over
fewshot's direct-convolution time is a ceiling on the ratio that nothing else fewshot does can raise.

``--macs`` runs one more batch of each kind in every training child under a dispatcher mode that counts the
multiply-adds of every convolution pass (forward, data and weight gradients, of any order) and matrix product, by
kind, and times float32 matrix products to find the machine's multiply-add rate. From those it bounds the ratio:
the shortest iteration fewshot's own multiply-adds could take at that rate with nothing else costing any time, and
the same for the fewest multiply-adds any published fast algorithm needs for each kind of convolution (Winograd
F(6x6, 3x3), polyphase F(4x4, 2x2) for the strided and transposed ones), their transforms taken as free. The rate
is the best of torch's matrix products, fewshot's AVX-512 GEMM where it runs, and a large direct convolution.

``--ab-env KEY=VALUE`` (repeatable) adds a third child, fewshot with those environment variables set, to every
round, for a lever's A/B measured in the same rounds as the ratio (``FEWSHOT_CPU_MATMUL=mkl``: MKL's GEMMs).

    .venv/bin/python benchmarks/official_side_by_side.py [--official /tmp/upstream/sg2ada] [--rounds 3]
        [--only 32px] [--device cpu|cuda] [--skip-sampling] [--with-default] [--profile] [--macs]
        [--ab-env FEWSHOT_CPU_MATMUL=mkl]

The official checkout is fetched with the project's fetch tool (NVlabs/stylegan2-ada-pytorch) into an ignored
folder; without one the script says so and exits 0 (``make bench`` on a machine without it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OFFICIAL = Path(os.environ.get("FEWSHOT_OFFICIAL_SG2ADA", "/tmp/upstream/sg2ada"))

CONFIGS = {  # label -> resolution, channel_base, channel_max, batch
    "64px small (cb 8192, cm 256, batch 8)": dict(res=64, channel_base=8192, channel_max=256, batch=8, target=4),
    "32px (cb 2048, cm 128, batch 16)": dict(res=32, channel_base=2048, channel_max=128, batch=16, target=3),
}
# The constructor-default network (8 mapping layers, all 512 channels) at 64 px, batch 4: the setting of the
# earlier "official 23.7 s per step" figure in BENCHMARKS.md; with --with-default (slow: ~25 s per official batch).
DEFAULT_CONFIG = {"64px constructor default (cb 32768, cm 512, map 8, batch 4)":
                  dict(res=64, channel_base=32768, channel_max=512, batch=4, map=8)}
GPU_CONFIGS = {
    "256px paper256 (cb 16384, cm 512, batch 32)": dict(res=256, channel_base=16384, channel_max=512, batch=32,
                                                        map=8, gamma=1.0, fp16=4, clamp=256),
    "1024px (cb 32768, cm 512, batch 8)": dict(res=1024, channel_base=32768, channel_max=512, batch=8,
                                               map=8, gamma=10.0, fp16=4, clamp=256),
}

# The lazy schedule's three kinds of batch: (batch index, phases that run).
KINDS = {"plain": 1, "greg": 4, "all": 16}
WEIGHTS = {"plain": 12 / 16, "greg": 3 / 16, "all": 1 / 16}

COMMON = r"""
import json, os, sys, time, torch
cfg = json.loads(sys.argv[1])
device = torch.device(cfg["device"])
res, batch = cfg["res"], cfg["batch"]
gamma = cfg.get("gamma", 0.0002 * res * res / batch)
def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()
def timed(fn):
    sync(); t0 = time.perf_counter(); fn(); sync(); return time.perf_counter() - t0
# oneDNN's direct convolutions: forward, backward (data and weight), and the transposed forward, which runs
# inside aten::_convolution itself. Both codes call these with the same shapes wherever fewshot does not take
# its Winograd path, so their time is a floor under fewshot's iteration that neither code's own work can lower.
CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution",
            "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward", "aten::slow_conv_transpose2d")
# fewshot's Winograd convolutions: the GEMMs (torch's, or its AVX-512 kernel's) and the tile transforms
WINOGRAD_OPS = ("aten::bmm", "_BatchedMatmulAVX512", "_LinearMap")
def op_seconds(fn):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    return [sum(e.self_cpu_time_total for e in events if e.key in ops) / 1e6 for ops in (CONV_OPS, WINOGRAD_OPS)]
from torch.utils._python_dispatch import TorchDispatchMode
def conv_kind(w, stride, transposed):
    k = tuple(w.shape[2:])
    if k == (1, 1):
        return "conv 1x1"
    if k == (3, 3) and transposed and tuple(stride) == (2, 2):
        return "transposed 3x3 s2"
    if k == (3, 3) and tuple(stride) == (2, 2):
        return "conv 3x3 s2"
    if k == (3, 3) and tuple(stride) == (1, 1):
        return "conv 3x3 s1"
    return "conv other"
class MacCount(TorchDispatchMode):
    # Counts the multiply-adds of every convolution (forward, data and weight gradient, any order) and matrix
    # product the dispatcher sees, by kind. Ops below the dispatcher (oneDNN's kernels) are not seen twice.
    def __init__(self):
        super().__init__()
        self.macs = {}
    def add(self, kind, macs):
        self.macs[kind] = self.macs.get(kind, 0) + int(macs)
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name == "convolution":
            x, w, stride, transposed, groups = args[0], args[1], args[3], args[6], args[8]
            per = (x if transposed else out).numel() // (x if transposed else out).shape[1]  # pixels x batch
            channels = w.shape[0] * w.shape[1]  # (C/groups) x O or C x (O/groups): the weight's two channel axes
            self.add(conv_kind(w, stride, transposed), per * channels * w.shape[2] * w.shape[3])
        elif name == "convolution_backward":
            grad, x, w, stride, transposed = args[0], args[1], args[2], args[4], args[7]
            mask = args[10]
            per = (x if transposed else grad).numel() // (x if transposed else grad).shape[1]
            macs = per * w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3]
            self.add(conv_kind(w, stride, transposed), macs * (int(mask[0]) + int(mask[1])))
        elif name in ("mm", "addmm", "bmm", "baddbmm"):
            a, b = args[-2:] if name in ("mm", "bmm") else args[1:3]
            self.add("bmm" if name in ("bmm", "baddbmm") else "mm", a.numel() * b.shape[-1])
        return out
def macs_of(fn):
    # fewshot's AVX-512 GEMM is called below the dispatcher, out of the counter's sight: count with torch's bmm
    # (the same products, so the same multiply-adds).
    saved = os.environ.get("FEWSHOT_CPU_MATMUL")
    os.environ["FEWSHOT_CPU_MATMUL"] = "mkl"
    try:
        with MacCount() as counter:
            fn()
    finally:
        if saved is None:
            del os.environ["FEWSHOT_CPU_MATMUL"]
        else:
            os.environ["FEWSHOT_CPU_MATMUL"] = saved
    return counter.macs
def report(times, at):
    if cfg.get("macs"):
        kinds = (("plain", 1), ("greg", 4), ("all", 16))
        times["macs"] = {kind: macs_of(lambda: at(index)) for kind, index in kinds}
    if cfg.get("profile"):
        kinds = (("plain", 1), ("greg", 4), ("all", 16))
        shares = {kind: op_seconds(lambda: at(index)) for kind, index in kinds}
        times["conv"] = {kind: shares[kind][0] for kind, _ in kinds}
        times["winograd"] = {kind: shares[kind][1] for kind, _ in kinds}
    print(json.dumps(times))
"""

OFFICIAL_TRAIN = COMMON + r"""
import copy, types
sys.path.insert(0, cfg["official"])
for unused in ("requests", "imageio"):  # imported at the top of dnnlib; the loop needs neither
    sys.modules.setdefault(unused, types.ModuleType(unused))
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
from training.networks import Generator, Discriminator
from training.augment import AugmentPipe
from training.loss import StyleGAN2Loss
torch.manual_seed(0)
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # as training_loop.py
conv2d_gradfix.enabled = grid_sample_gradfix.enabled = True
training_stats.init_multiprocessing(rank=0, sync_device=None)
syn = dict(channel_base=cfg["channel_base"], channel_max=cfg["channel_max"], num_fp16_res=cfg.get("fp16", 0),
           conv_clamp=cfg.get("clamp"))
G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
              mapping_kwargs=dict(num_layers=cfg.get("map", 2)), synthesis_kwargs=syn).train().requires_grad_(False).to(device)
D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, epilogue_kwargs=dict(mbstd_group_size=4),
                  **syn).train().requires_grad_(False).to(device)
G_ema = copy.deepcopy(G).eval()
bgc = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1,
           lumaflip=1, hue=1, saturation=1)
augment_pipe = AugmentPipe(**bgc).train().requires_grad_(False).to(device)
augment_pipe.p.copy_(torch.as_tensor(0.2))
ada_stats = training_stats.Collector(regex="Loss/signs/real")
loss = StyleGAN2Loss(device=device, G_mapping=G.mapping, G_synthesis=G.synthesis, D=D, augment_pipe=augment_pipe,
                     style_mixing_prob=0.9, r1_gamma=gamma, pl_weight=2)
phases = []
for name, module, interval in (("G", G, 4), ("D", D, 16)):
    ratio = interval / (interval + 1)
    opt = torch.optim.Adam(module.parameters(), lr=0.0025 * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)
    phases += [types.SimpleNamespace(name=name + "main", module=module, opt=opt, interval=1),
               types.SimpleNamespace(name=name + "reg", module=module, opt=opt, interval=interval)]
reals = torch.randint(0, 256, [64, 3, res, res], dtype=torch.uint8)
ema_kimg, ema_rampup = batch * 10 / 32, 0.05
state = dict(cur_nimg=0, batch_idx=0)

def iteration():
    # The body of training_loop.py's `while True`, one GPU, batch_gpu = batch.
    idx = torch.randint(0, len(reals), [batch])
    real_img = (reals[idx].to(device).to(torch.float32) / 127.5 - 1).split(batch)
    real_c = torch.zeros([batch, 0], device=device).split(batch)
    all_gen_z = torch.randn([len(phases) * batch, G.z_dim], device=device).split(batch)
    all_gen_c = torch.zeros([len(phases) * batch, 0], device=device).split(batch)
    for phase, gen_z, gen_c in zip(phases, all_gen_z, all_gen_c):
        if state["batch_idx"] % phase.interval != 0:
            continue
        phase.opt.zero_grad(set_to_none=True)
        phase.module.requires_grad_(True)
        loss.accumulate_gradients(phase=phase.name, real_img=real_img[0], real_c=real_c[0], gen_z=gen_z,
                                  gen_c=gen_c, sync=True, gain=phase.interval)
        phase.module.requires_grad_(False)
        for param in phase.module.parameters():
            if param.grad is not None:
                torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
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
    if state["batch_idx"] % 4 == 0:  # ada_interval
        ada_stats.update()
        adjust = (ada_stats["Loss/signs/real"] - 0.6) > 0
        adjust = (1 if adjust else -1) * (batch * 4) / (500 * 1000)
        augment_pipe.p.copy_((augment_pipe.p + adjust).max(torch.zeros([], device=device)))

def at(index):
    state["batch_idx"] = index
    return timed(iteration)

at(0)  # warm-up: every phase once
report({"plain": min(at(1), at(2)), "greg": at(4), "all": at(16)}, at)
"""

FEWSHOT_TRAIN = COMMON + r"""
from contextlib import ExitStack
from fewshot.config import resolve_config
from fewshot.train.loop import _process_torch_settings, train_batch
from fewshot.train.run import TickStats
from fewshot.train.setup import Request, setup
overrides = dict(data=cfg["data"], outdir=cfg["outdir"], resolution=res, z_dim=512, w_dim=512,
                 map_layers=cfg.get("map", 2), channel_base=cfg["channel_base"], channel_max=cfg["channel_max"],
                 num_fp16_res=cfg.get("fewshot_fp16", cfg.get("fp16", 0)), conv_clamp=cfg.get("clamp"), batch=batch,
                 mbstd_group=4, gamma=gamma, aug_p=0.2, kimg=10000, tick_kimg=10000, snap=0, device=cfg["device"],
                 seed=0, metrics=[], cpu_bf16=cfg.get("cpu_bf16", False))
with ExitStack() as held:
    held.enter_context(_process_torch_settings())
    run = setup(resolve_config("scratch", overrides), Request(progress=False, plan=False), lambda m: None, held)
    stats = TickStats()
    def at(index):
        run.progress.batch_idx = index
        return timed(lambda: train_batch(run, stats))
    at(0)  # warm-up: every phase once
    report({"plain": min(at(1), at(2)), "greg": at(4), "all": at(16)}, at)
"""

OFFICIAL_SAMPLE = COMMON + r"""
import types
import numpy as np
sys.path.insert(0, cfg["official"])
for unused in ("requests", "imageio"):
    sys.modules.setdefault(unused, types.ModuleType(unused))
from training.networks import Generator
torch.manual_seed(0)
syn = dict(channel_base=cfg["channel_base"], channel_max=cfg["channel_max"], num_fp16_res=cfg.get("fp16", 0),
           conv_clamp=cfg.get("clamp"))
G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
              mapping_kwargs=dict(num_layers=cfg.get("map", 2)), synthesis_kwargs=syn).eval().requires_grad_(False).to(device)
label = torch.zeros([1, 0], device=device)
def loop(seeds):
    # generate.py: one seed per forward, then to uint8 on the host
    for seed in seeds:
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(device)
        img = G(z, label, truncation_psi=0.7, noise_mode="const")
        (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].cpu().numpy()
with torch.no_grad():
    loop(range(2))  # warm-up
    n = cfg["images"]
    print(json.dumps({"sec": timed(lambda: loop(range(n))), "images": n}))
"""

FEWSHOT_SAMPLE = COMMON + r"""
from fewshot.loading import prepare_device
from fewshot.nets import Generator
from fewshot.synthesis import generate_images
prepare_device(device)
torch.manual_seed(0)
syn = dict(channel_base=cfg["channel_base"], channel_max=cfg["channel_max"], num_fp16_res=cfg.get("fp16", 0),
           conv_clamp=cfg.get("clamp"))
G = Generator(512, 0, 512, res, 3, mapping_kwargs={"num_layers": cfg.get("map", 2)},
              synthesis_kwargs=syn).eval().requires_grad_(False).to(device)
generate_images(G, list(range(16)), psi=0.7, batch_size=16)  # warm-up
n = cfg["images"]
print(json.dumps({"sec": timed(lambda: generate_images(G, list(range(n)), psi=0.7, batch_size=16)), "images": n}))
"""

# The machine's multiply-add rate: float32 matrix products at 2048^3 and at the Winograd GEMM shapes of the two
# configs, with fewshot's malloc settings as in training, best of 5.
PEAK = COMMON + r"""
from fewshot.host_memory import keep_freed_memory
keep_freed_memory()
torch.manual_seed(0)
rates = {}
for a_shape, b_shape in (([2048, 2048], [2048, 2048]), ([36, 256, 256], [36, 256, 512]),
                         ([36, 128, 128], [36, 128, 2048]), ([36, 128, 128], [36, 128, 1024])):
    a, b = torch.randn(a_shape, device=device), torch.randn(b_shape, device=device)
    out = torch.matmul(a, b)
    best = min(timed(lambda: torch.matmul(a, b, out=out)) for _ in range(5))
    rates["x".join(map(str, a_shape)) + " @ " + "x".join(map(str, b_shape))] = a.numel() * b.shape[-1] / best
from fewshot.cuda.build import compiled_module
ops = compiled_module("cpu") if device.type == "cpu" else None
if ops is not None and ops.bmm_avx512_supported():  # fewshot's own AVX-512 GEMM (fewshot.cuda.cpu_matmul)
    for a_shape, b_shape in (([1, 2048, 2048], [1, 2048, 2048]), ([36, 256, 256], [36, 256, 512]),
                             ([36, 128, 128], [36, 128, 2048])):
        a, b = torch.randn(a_shape), torch.randn(b_shape)
        ops.bmm_avx512(a, b)
        best = min(timed(lambda: ops.bmm_avx512(a, b)) for _ in range(5))
        rates["bmm_avx512 " + "x".join(map(str, a_shape)) + " @ " + "x".join(map(str, b_shape))] = (
            a.numel() * b.shape[-1] / best)
x, w = torch.randn([8, 256, 32, 32], device=device), torch.randn([256, 256, 3, 3], device=device)
torch.nn.functional.conv2d(x, w, padding=1)  # a large direct convolution: oneDNN's rate, which the official code has
best = min(timed(lambda: torch.nn.functional.conv2d(x, w, padding=1)) for _ in range(5))
rates["direct conv 3x3 [8, 256, 32, 32] -> 256"] = x.numel() * 256 * 9 / best
if cfg.get("cpu_bf16"):  # the rate of cpu_bf16's direct convolutions' operands
    a, b = torch.randn([2048, 2048]).bfloat16(), torch.randn([2048, 2048]).bfloat16()
    rates["bf16"] = a.numel() * b.shape[-1] / min(timed(lambda: torch.matmul(a, b)) for _ in range(5))
print(json.dumps(rates))
"""

# With --macs: the fewest multiply-adds per kind of work that a published fast algorithm needs, as a fraction of
# what each code does (the direct algorithm's count for convolutions, F(4x4, 3x3)'s for fewshot's batched
# matmuls), all taken at their most favourable, transforms and tile padding free:
BEST_KNOWN = {
    "conv 3x3 s1": (64 / 36) / 9,  # Winograd F(6x6, 3x3): 64 products per 36 outputs
    "conv 3x3 s2": (81 / 16) / 9,  # polyphase F(4x4, 2x2) Winograd: 25 + 20 + 20 + 16 products per 16 outputs
    "transposed 3x3 s2": (81 / 16) / 9,  # the same, adjoint
    "bmm": (64 / 36) / (36 / 16),  # fewshot's F(4x4, 3x3) GEMMs as F(6x6, 3x3)
    "conv 1x1": 1.0, "conv other": 1.0, "mm": 1.0,
}
MAC_KINDS = ("conv 3x3 s1", "conv 3x3 s2", "transposed 3x3 s2", "conv 1x1", "conv other", "bmm", "mm")


def mac_rows(label: str, cfg: dict, results: dict[str, list], best: dict[str, float]) -> None:
    """With --macs: each side's multiply-adds per iteration by kind, and what the machine's multiply-add rate allows:
    the shortest iteration fewshot's own multiplies, and then the best-known algorithms', could take if they all ran
    at the best matrix-product rate measured here and nothing else took any time."""
    rates = child(PEAK, cfg)
    bf16 = rates.pop("bf16", None)
    peak = max(rates.values())
    # With cpu_bf16, every direct convolution is given bfloat16's rate (only the top blocks' are bfloat16: generous).
    conv_peak = max(peak, bf16 or 0)
    macs = {}
    for name, runs in results.items():
        counted = runs[0]["macs"]
        macs[name] = {k: sum(WEIGHTS[b] * counted[b].get(k, 0) for b in WEIGHTS) for k in MAC_KINDS}
    print("\n| config | code | " + " | ".join(MAC_KINDS) + " | total GMAC | s/iteration | GMAC/s |")
    print("|---|---|" + "---:|" * (len(MAC_KINDS) + 3))
    for name, m in macs.items():
        total = sum(m.values())
        print(f"| {label} | {name} | " + " | ".join(f"{m[k] / 1e9:.2f}" for k in MAC_KINDS)
              + f" | {total / 1e9:.2f} | {best[name]:.3f} | {total / best[name] / 1e9:.1f} |")
    print("\nmatrix-product rates here: " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in rates.items()) + " GMAC/s"
          + (f"; bfloat16 2048^3 {bf16 / 1e9:.1f} GMAC/s" if bf16 else ""))
    target = cfg.get("target")
    if target is None:
        return
    fewshot = macs["fewshot"]

    def floor(factors: dict[str, float]) -> float:
        return sum(factors.get(k, 1.0) * v / (peak if k in ("bmm", "mm") else conv_peak) for k, v in fewshot.items())

    floor_own, floor_best = floor({}), floor(BEST_KNOWN)
    rate = f"{peak / 1e9:.1f}" + (f" / {conv_peak / 1e9:.1f} (bf16 convs)" if bf16 else "")
    print(f"\n| {label} | official s/iteration | target ({target}x) | fewshot's multiplies at {rate} GMAC/s "
          "| ratio at most | best-known algorithms at that rate | ratio at most |\n|---|---:|---:|---:|---:|---:|---:|")
    print(f"| {label} | {best['official']:.3f} | {best['official'] / target:.3f} | {floor_own:.3f} | "
          f"**{best['official'] / floor_own:.2f}x** | {floor_best:.3f} | **{best['official'] / floor_best:.2f}x** |\n",
          flush=True)


def child(code: str, cfg: dict, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True,
                         env=dict(os.environ, **(env or {})), cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"a benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def amortised(times: dict[str, float]) -> float:
    return sum(WEIGHTS[kind] * times[kind] for kind in WEIGHTS)


def conv_floor(label: str, results: dict[str, list], best: dict[str, float]) -> None:
    """With --profile: each side's time in oneDNN's direct convolutions, and the ratio fewshot could reach over the
    official iteration if all its other work took no time at all (the official total over fewshot's conv time)."""
    conv = {name: min(amortised(t["conv"]) for t in runs) for name, runs in results.items()}
    wino = {name: min(amortised(t["winograd"]) for t in runs) for name, runs in results.items()}
    for name in results:
        print(f"| {label} | {name} | {conv[name]:.3f} ({conv[name] / best[name]:.0%}) | {wino[name]:.3f} | "
              f"{best[name] - conv[name] - wino[name]:.3f} |")
    print(f"| {label} | ceiling: official / fewshot's direct convolutions | **{best['official'] / conv['fewshot']:.2f}x** "
          "| | |", flush=True)


def noise_images(folder: Path, res: int, count: int = 64) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (res, res, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def interleaved(rounds: int, runs: dict[str, callable]) -> dict[str, list]:
    """Each round runs every implementation once; the first of a round alternates."""
    results: dict[str, list] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(runs[name]())
    return results


def train_rows(label: str, cfg: dict, rounds: int, tmp: Path) -> None:
    cfg = dict(cfg, data=str(noise_images(tmp / f"data{cfg['res']}", cfg["res"])), outdir=str(tmp / "runs"))
    runs = {"official": lambda: child(OFFICIAL_TRAIN, cfg), "fewshot": lambda: child(FEWSHOT_TRAIN, cfg)}
    if cfg.get("cpu_bf16"):  # the lever A/B: the same fewshot run in float32
        runs["fewshot float32"] = lambda: child(FEWSHOT_TRAIN, dict(cfg, cpu_bf16=False))
    ab_env = cfg.get("ab_env")
    if ab_env:  # an environment lever's A/B: the same fewshot run with these variables set
        runs[f"fewshot {ab_label(ab_env)}"] = lambda: child(FEWSHOT_TRAIN, cfg, env=ab_env)
    results = interleaved(rounds, runs)
    best = {name: min(amortised(t) for t in runs) for name, runs in results.items()}
    for name, runs in results.items():
        rounds_s = ", ".join(f"{amortised(t):.3f}" for t in runs)
        kinds = " / ".join(f"{min(t[k] for t in runs):.3f}" for k in KINDS)
        print(f"| {label} | {name} | **{best[name]:.3f}** | {rounds_s} | {kinds} |", flush=True)
    print(f"| {label} | ratio official / fewshot | **{best['official'] / best['fewshot']:.2f}x** | | |", flush=True)
    if cfg.get("cpu_bf16"):
        print(f"| {label} | ratio official / fewshot float32 | **{best['official'] / best['fewshot float32']:.2f}x** "
              f"| | |\n| {label} | bfloat16 speed-up (fewshot float32 / fewshot) | "
              f"**{best['fewshot float32'] / best['fewshot']:.2f}x** | | |", flush=True)
    if ab_env:
        other = f"fewshot {ab_label(ab_env)}"
        print(f"| {label} | ratio official / {other} | **{best['official'] / best[other]:.2f}x** | | |\n"
              f"| {label} | fewshot / {other} (above 1: the variables slow it) | "
              f"**{best[other] / best['fewshot']:.2f}x** | | |", flush=True)
    if cfg.get("macs"):
        mac_rows(label, cfg, results, best)
    if cfg.get("profile"):
        print("\n| config | code | direct convolutions s/iteration (share) | batched matmuls + Winograd transforms | "
              "everything else |\n|---|---|---:|---:|---:|")
        conv_floor(label, results, best)
        print()


def ab_label(env: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in env.items())


def sample_rows(label: str, cfg: dict, rounds: int) -> None:
    runs = {"official": lambda: child(OFFICIAL_SAMPLE, cfg), "fewshot": lambda: child(FEWSHOT_SAMPLE, cfg)}
    ab_env = cfg.get("ab_env")
    if ab_env:
        runs[f"fewshot {ab_label(ab_env)}"] = lambda: child(FEWSHOT_SAMPLE, cfg, env=ab_env)
    results = interleaved(rounds, runs)
    best = {name: min(r["sec"] / r["images"] for r in runs) for name, runs in results.items()}
    for name in results:
        print(f"| {label} | {name} | {1 / best[name]:.1f} img/s | {best[name] * 1000:.1f} ms/img |", flush=True)
    print(f"| {label} | ratio fewshot / official | **{best['official'] / best['fewshot']:.2f}x** | |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, default=DEFAULT_OFFICIAL, help="a stylegan2-ada-pytorch checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="run only the configs whose label contains this text")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--skip-sampling", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--with-default", action="store_true", help="also the 64 px constructor-default network")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="CPU training: fewshot's top 4 resolutions in bfloat16 (its cpu_bf16, where the official "
                             "code runs float16 on a GPU), both codes with conv_clamp 256 (the official code stays "
                             "float32 on the CPU)")
    parser.add_argument("--profile", action="store_true",
                        help="CPU: also profile each side's oneDNN direct convolutions (one more batch of each kind)")
    parser.add_argument("--macs", action="store_true",
                        help="also count each side's multiply-adds by kind (one more batch of each kind) and bound the "
                             "ratio by this machine's matrix-product rate")
    parser.add_argument("--ab-env", action="append", default=[], metavar="KEY=VALUE",
                        help="also run fewshot with this environment variable set (repeatable), interleaved, for a "
                             "lever's A/B in the same rounds (e.g. FEWSHOT_CPU_MATMUL=mkl)")
    args = parser.parse_args()
    ab_env = {}
    for item in args.ab_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"official_side_by_side: --ab-env takes KEY=VALUE, got {item!r}")
        ab_env[key] = value
    if not (args.official / "training" / "networks.py").is_file():
        print(f"official_side_by_side: no stylegan2-ada-pytorch checkout at {args.official} (fetch "
              "NVlabs/stylegan2-ada-pytorch there, or pass --official DIR); skipped")
        return
    import torch

    commit = subprocess.run(["git", "-C", str(args.official), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "native")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, ONEDNN_MAX_CPU_ISA={isa}, official commit {commit}")
    configs = GPU_CONFIGS if args.device == "cuda" else dict(CONFIGS, **(DEFAULT_CONFIG if args.with_default else {}))
    if args.profile and args.device != "cpu":
        raise SystemExit("official_side_by_side: --profile sums CPU operator times; it is for --device cpu")
    base = {"device": args.device, "official": str(args.official), "images": 64 if args.device == "cpu" else 256,
            "profile": args.profile, "macs": args.macs, "ab_env": ab_env}
    if args.cpu_bf16:
        from fewshot.nets.precision import native_bf16

        native, why = native_bf16()
        if args.device != "cpu" or not native:
            raise SystemExit(f"official_side_by_side: --cpu-bf16 is for a CPU with native bfloat16; {why or 'cuda'}")
        base.update(clamp=256, fewshot_fp16=4, cpu_bf16=True)
        configs = {f"{label}, clamp 256, fewshot bf16 x4": cfg for label, cfg in configs.items()}
        args.skip_sampling = True  # sampling stays float32 in fewshot (cpu_bf16 is a training setting)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_training:
            print("\n| config | code | s/iteration (best) | rounds | plain / +Greg / +Greg+Dreg batch (best) |")
            print("|---|---|---:|---|---|")
            for label, cfg in configs.items():
                if args.only in label:
                    train_rows(label, dict(base, **cfg), args.rounds, Path(tmp))
        if not args.skip_sampling:
            print("\n| sampling, ψ 0.7 | code | throughput | per image |")
            print("|---|---|---:|---:|")
            for label, cfg in configs.items():
                if args.only in label:
                    sample_rows(label, dict(base, **cfg), args.rounds)


if __name__ == "__main__":
    main()
