"""filtered_lrelu: the compiled CPU kernel vs the plain-PyTorch reference, forward+backward, at StyleGAN3's layers.

The layers are those of StyleGAN3-T and -R at 256 px (channel_base 16384 for T, doubled for R; sizes 36..276
with the 10-pixel margins, up 2 or 4, down 2, 12/24-tap filters, R's radial 2-D down filters), as
tests/test_filtered_lrelu.py's ``stylegan3_layers`` computes them from the official SynthesisLayer's rules.
Each case times one forward and backward (gradients for x and the bias) of a batch, the median of the
repeats after a warm-up, and prints the ratio; the totals sum the layers shown.
Run: .venv/bin/python benchmarks/filtered_lrelu.py [--batch 4] [--repeats 3] [--threads 1] [--layers T0,R8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402
from test_filtered_lrelu import layer_kwargs, stylegan3_layers  # noqa: E402

from fewshot.cuda import build  # noqa: E402
from fewshot.cuda.filtered_lrelu_compiled import filtered_lrelu_compiled  # noqa: E402
from fewshot.cuda.filtered_lrelu_ref import filtered_lrelu_ref  # noqa: E402

# One of each kind of layer: every distinct size, factor and filter of the two configs.
DEFAULT_LAYERS = "T0,T3,T6,T7,T8,T10,T12,T13,R0,R3,R8,R11,R12,R13"


def median_seconds(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up: the allocator's first touch, the kernels' buffers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_step(op: Callable, x: torch.Tensor, b: torch.Tensor, gy: torch.Tensor, kwargs: dict) -> Callable[[], None]:
    def step() -> None:
        xi, bi = x.detach().requires_grad_(), b.detach().requires_grad_()
        y = op(xi, b=bi, **kwargs)
        torch.autograd.grad(y, (xi, bi), gy)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: stable on a shared CPU)")
    parser.add_argument("--layers", default=DEFAULT_LAYERS, help="comma list of config+index, e.g. T0,R8")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    state = build.get_state("cpu")
    if state.module is None:
        raise SystemExit(f"compiled cpu ops unavailable: {state.reason}")
    tables = {config: stylegan3_layers(256, config) for config in "TR"}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch {args.batch}, "
          f"forward+backward (x and bias), median of {args.repeats}")
    header = f"{'layer':<6} {'channels':>8} {'in->out':>9} {'up/down':>7} {'taps':>7} {'ref ms':>9} {'comp ms':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    total_ref = total_comp = 0.0
    gen = torch.Generator().manual_seed(0)
    for name in args.layers.split(","):
        layer = tables[name[0]][int(name[1:])]
        kwargs = layer_kwargs(layer)
        shape = (args.batch, layer.channels, layer.in_size, layer.in_size)
        x = torch.randn(shape, generator=gen) * 60
        b = torch.randn(layer.channels, generator=gen)
        gy = torch.randn(args.batch, layer.channels, layer.out_size, layer.out_size, generator=gen)
        ref = median_seconds(make_step(filtered_lrelu_ref, x, b, gy, kwargs), args.repeats)

        def compiled(x, **kw):
            return filtered_lrelu_compiled(state.module, x, **kw)

        comp = median_seconds(make_step(compiled, x, b, gy, kwargs), args.repeats)
        total_ref, total_comp = total_ref + ref, total_comp + comp
        taps = f"{layer.up_taps}/{layer.down_taps}{'r' if layer.radial else ''}"
        print(f"{name:<6} {layer.channels:>8} {f'{layer.in_size}->{layer.out_size}':>9} "
              f"{f'{layer.up}/{layer.down}':>7} {taps:>7} {ref * 1e3:>9.1f} {comp * 1e3:>9.1f} {ref / comp:>5.2f}x",
              flush=True)
    print(f"{'total':<42} {total_ref * 1e3:>9.1f} {total_comp * 1e3:>9.1f} {total_ref / total_comp:>5.2f}x")
    print("taps: up/down filter taps; r: radially symmetric 2-D down filter (StyleGAN3-R)")


if __name__ == "__main__":
    main()
