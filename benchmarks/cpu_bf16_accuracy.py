"""How far bfloat16 moves fewshot's numbers from float32, beside float16 (the official code's GPU precision).

1. One 3x3 convolution ([4, 256, 32, 32] x [256, 256, 3, 3], weights at He scale) against float64: float32,
   oneDNN's bfloat16 direct convolution, inputs rounded to float16 / bfloat16, and Winograd with bfloat16
   GEMMs (F(4x4, 3x3) as fewshot's, and F(2x2, 3x3)). This is why ``cpu_bf16`` keeps its Winograd in float32.
2. The 64 px small networks of issue 26 (cb 8192, cm 256, num_fp16_res 4, conv_clamp 256), random weights:
   G's image, D's logits and D's gradient with respect to its input (R1's), with ``cpu_bf16`` (the direct
   convolutions of the reduced-precision blocks on bfloat16 operands) and with those blocks wholly in float16 as
   the official code runs them on a GPU (emulated on the CPU, with the official pre-normalisation), each against
   float32.

Relative errors are ``||y - y_ref|| / ||y_ref||``. Run: ``.venv/bin/python benchmarks/cpu_bf16_accuracy.py``.
float16 on the CPU is slow (reference kernels); the whole script takes about a minute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fewshot.cuda.winograd_ref import input_transform_ref, output_transform_ref, weight_transform
from fewshot.nets import Discriminator, Generator, discriminator, generator
from fewshot.nets.precision import set_cpu_half


def rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.detach().double() - ref.detach().double()).norm() / ref.detach().double().norm())


def winograd_f2(x: torch.Tensor, w: torch.Tensor, gemm_dtype: torch.dtype) -> torch.Tensor:
    """F(2x2, 3x3) (Lavin & Gray; points 0, 1, -1, inf) in float64 with the 16 GEMMs in ``gemm_dtype``."""
    bt = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64)
    g = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
    at = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)
    n, c, h, width = x.shape
    tiles = F.pad(x, (1, 1, 1, 1)).unfold(2, 4, 2).unfold(3, 4, 2)  # [n, c, th, tw, 4, 4]
    th, tw = tiles.shape[2:4]
    v = (bt @ tiles @ bt.T).permute(4, 5, 1, 0, 2, 3).reshape(16, c, -1)
    u = (g @ w @ g.T).permute(2, 3, 0, 1).reshape(16, -1, c)
    m = torch.bmm(u.to(gemm_dtype), v.to(gemm_dtype)).double().reshape(4, 4, -1, n, th, tw).permute(3, 2, 4, 5, 0, 1)
    return (at @ m @ at.T).permute(0, 1, 2, 4, 3, 5).reshape(n, -1, 2 * th, 2 * tw)


def one_convolution() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 256, 32, 32, generator=gen, dtype=torch.float64)
    w = torch.randn(256, 256, 3, 3, generator=gen, dtype=torch.float64) / 48
    ref = F.conv2d(x, w, padding=1)
    n, _, h, width = x.shape
    u, v = weight_transform(w), input_transform_ref(x)
    rows = {
        "float32 direct": F.conv2d(x.float(), w.float(), padding=1),
        "bfloat16 direct (oneDNN, float32 accumulation)": F.conv2d(x.bfloat16(), w.bfloat16(), padding=1),
        "inputs rounded to float16, exact convolution": F.conv2d(x.half().double(), w.half().double(), padding=1),
        "inputs rounded to bfloat16, exact convolution": F.conv2d(x.bfloat16().double(), w.bfloat16().double(),
                                                                  padding=1),
        "Winograd F(4x4, 3x3), bfloat16 GEMMs": output_transform_ref(
            torch.bmm(u.bfloat16(), v.bfloat16()).double(), n, h, width),
        "Winograd F(2x2, 3x3), bfloat16 GEMMs": winograd_f2(x, w, torch.bfloat16),
    }
    print("| one 3x3 convolution, 256 -> 256 channels, 32x32 | relative error against float64 |\n|---|---:|")
    for name, y in rows.items():
        print(f"| {name} | {rel(y, ref):.2e} |")


def networks() -> None:
    torch.manual_seed(0)
    syn = dict(channel_base=8192, channel_max=256, num_fp16_res=4, conv_clamp=256)
    G = Generator(512, 0, 512, 64, 3, mapping_kwargs={"num_layers": 2}, synthesis_kwargs=syn)
    D = Discriminator(c_dim=0, img_resolution=64, img_channels=3, **syn)
    z = torch.randn(8, 512)
    img = G(z, None).detach().requires_grad_(True)

    def outputs() -> tuple[torch.Tensor, ...]:
        image, logits = G(z, None), D(img, None)
        (grad,) = torch.autograd.grad(logits.sum(), img)
        return image, logits, grad

    ref = outputs()
    set_cpu_half(G, torch.bfloat16)
    set_cpu_half(D, torch.bfloat16)
    bf16 = outputs()
    set_cpu_half(G, None)
    set_cpu_half(D, None)
    # The official float16 blocks, as fewshot runs them on CUDA (activations, convolutions and element-wise ops in
    # float16, the official pre-normalisation), here on the CPU: the blocks' dtype rule without its device test.
    def everywhere(use_fp16: bool, force_fp32: bool, device: torch.device) -> torch.dtype:
        return torch.float16 if use_fp16 and not force_fp32 else torch.float32

    for module in (generator, discriminator):
        module.block_dtype = everywhere
    fp16 = outputs()
    print("\n| 64 px small, num_fp16_res 4 | G image | D logits | D input gradient (R1) |\n|---|---:|---:|---:|")
    for name, got in (("bfloat16 direct convolutions (cpu_bf16)", bf16), ("float16 blocks (official, GPU)", fp16)):
        errors = [rel(y, r) for y, r in zip(got, ref, strict=True)]
        print(f"| {name} | " + " | ".join(f"{e:.2%}" for e in errors) + " |")


if __name__ == "__main__":
    torch.set_num_threads(2)
    one_convolution()
    networks()
