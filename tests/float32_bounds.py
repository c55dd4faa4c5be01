"""Tolerances for the numeric tests, derived from float32 arithmetic rather than from one CPU's library kernels.

oneDNN's float32 convolution is ~5x more accurate on its AVX-512 path than on its AVX2 one (MKL's GEMMs and
ATen's vector functions dispatch by ISA too), so a bound such as "within 10x of torch's own error" holds on one
machine and fails on the next. Every bound here follows from u = 2^-24 (float32's unit roundoff, round to nearest)
and the shape of the computation, whatever the order of summation, blocking or use of FMA inside the kernels.

Three kinds of bound, from the strictest guarantee to the widest reach:

* Worst case, elementwise (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Lemma 3.1 and §3.1):
  a quantity whose every term passed through at most n roundings (a product, a sum, a constant rounded to
  float32) is off by at most ``gamma(n)`` times the same map applied to absolute values, in any order, with or
  without FMA; for a dot product, ``gamma(n) * sum |a_i b_i|``. ``conv_magnitude`` and the Winograd and fused-op
  bounds evaluate such maps in float64. Tight for short sums (filters, tile transforms); for long ones the
  no-cancellation magnitude is ~sqrt(K) times the value and the bound says little.

* Long sums of terms of random sign (the tests' data are seeded Gaussians), by the standard model of rounding
  errors as independent, mean zero and at most u relative (Higham & Mary, "A new approach to probabilistic
  rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019).
  A K-term sum rounds each product t_i and each partial sum s_k; Hoeffding's inequality bounds the total by
  ``LAMBDA * u * sqrt(sum t_i^2 + sum s_k^2)`` except with probability 2 exp(-LAMBDA^2 / 2) = 3e-14 per element.
  For terms of random sign E[s_k^2] = sum_{i<=k} t_i^2 <= sum t_i^2, so ``dot_sigma`` takes
  ``u * sqrt((K + 1) * sum t_i^2)``, whatever the order (blocked and pairwise sums only shorten the chains).
  Errors that reach a result through a linear map L add in variance as L^2 (entries squared) applied to theirs.

* Through a network the same model, a layer at a time: a layer of fan-in K adds an error of standard deviation
  ~u sqrt(K + 1) times its output's scale, and passes earlier errors on at its gain, ~1 here (equalized learning
  rate, demodulation, BatchNorm); independent errors add in variance, so two float32 evaluations differ by at most
  ``2 * LAMBDA * u * sqrt(sum_l (K_l + 1))`` times the output's root mean square (``assert_network_close``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

U32 = 2.0**-24  # float32 unit roundoff
U64 = 2.0**-53  # float64's, for the same bounds on the float64 kernels
LAMBDA = 8.0  # Hoeffding: a sum of bounded independent errors exceeds LAMBDA sigma with probability 2 exp(-32)


def gamma(n: int, u: float = U32) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound after n roundings."""
    assert n * u < 1, n
    return n * u / (1 - n * u)


def dot_sigma(k: int, sum_sq_terms: torch.Tensor | float, u: float = U32) -> torch.Tensor:
    """``u * sqrt((k + 1) * sum t_i^2)``: the rounding scale of a k-term sum of random-sign terms t_i (products and
    partial sums rounded, any order), in float32 unless u says otherwise. ``LAMBDA`` times it bounds the error."""
    return u * torch.as_tensor(sum_sq_terms, dtype=torch.float64).mul(k + 1).sqrt()


def assert_within(got: torch.Tensor, want: torch.Tensor, bound: torch.Tensor | float, what: str = "") -> None:
    """Elementwise ``|got - want| <= bound``; the message gives the largest ratio to the bound."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    diff = (got.double() - want.double()).abs()
    bound = torch.as_tensor(bound, dtype=torch.float64).expand_as(diff)
    bad = diff > bound
    if bad.any():
        ratio = (diff / bound.clamp_min(1e-300)).max().item()
        raise AssertionError(f"{what}: |got - want| reaches {ratio:.3g}x its rounding bound "
                             f"(largest difference {diff.max().item():.3g}; {int(bad.sum())} of {diff.numel()} over)")


def conv_magnitude(x: torch.Tensor, w: torch.Tensor, **conv_kwargs) -> torch.Tensor:
    """``conv2d(|x|, |w|)`` in float64: each output's sum of |terms|."""
    return F.conv2d(x.double().abs(), w.double().abs(), **conv_kwargs)


# ---- the fused ops -----------------------------------------------------------------------------------------------

# Largest slope of any activation of bias_act (selu: 1.0507 * 1.6733 below zero); the others are at most 1.1 (swish).
ACT_MAX_SLOPE = 1.76
# An activation's own error, in ulps of its result: libm's and SLEEF's float functions are within 1-3.5 ulp, and
# sigmoid, softplus and swish compose two of them with a rounded sum or product.
ACT_ULPS = 4


def bias_act_bound(x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, u: float = U32,
                   **kwargs) -> torch.Tensor:
    """Elementwise bound on the difference of two evaluations of ``clamp(act(x + b) * gain)`` in the precision of
    unit roundoff u. Each rounds x + b (u |z|, passed on at the activation's slope), evaluates the activation
    (``ACT_ULPS`` ulps, 2 u |act(z)| each) and rounds the gain and the product by it (u each); the clamp is exact
    and 1-Lipschitz. A floor of the smallest normal float32 covers results that underflow."""
    from fewshot.cuda.bias_act_ref import bias_act_ref, resolve_args

    gain = resolve_args(act, kwargs.get("alpha"), kwargs.get("gain"), None)[2]
    z = bias_act_ref(x.double(), None if b is None else b.double(), dim=dim).abs()
    a = bias_act_ref(x.double(), None if b is None else b.double(), dim=dim, act=act, alpha=kwargs.get("alpha"),
                     gain=1).abs()
    one_side = abs(gain) * (ACT_MAX_SLOPE * u * z + (2 * ACT_ULPS + 2) * u * a)
    return 2 * one_side + 2.0**-126


def fir_bound(x: torch.Tensor, f: torch.Tensor | None, u: float = U32, **kwargs) -> torch.Tensor:
    """Elementwise bound on the difference of two evaluations of ``upfirdn2d(x, f, **kwargs)`` in the precision of
    unit roundoff u: worst case, each output sums at most fh * fw products (a separable pass fh + fw, fewer), with
    the gain applied to the filter or to the result (two roundings more): ``2 gamma(taps + 2)`` times the same
    resampling of |x| by |f| (zero insertion and padding are exact)."""
    from fewshot.cuda.upfirdn2d_ref import upfirdn2d_ref

    taps = 1 if f is None else (f.numel() ** 2 if f.ndim == 1 else f.numel())
    magnitude = upfirdn2d_ref(x.double().abs(), None if f is None else f.double().abs(), **kwargs).abs()
    return 2 * gamma(taps + 2, u) * magnitude


# ---- Winograd F(4x4, 3x3) ---------------------------------------------------------------------------------------


@contextmanager
def _winograd_entries(entry: Callable[[float], float]):
    """winograd_ref's maps with every matrix entry replaced by entry(value): abs for magnitudes, square for
    variances."""
    from fewshot.cuda import winograd_ref as ref

    saved = ref._BT, ref._G, ref._AT
    ref._BT, ref._G, ref._AT = ([[entry(c) for c in row] for row in m] for m in saved)
    try:
        yield ref
    finally:
        ref._BT, ref._G, ref._AT = saved


def _roundings_per_stage(rows: list[list[float]], transposed: bool = False) -> int:
    """Roundings a term meets in one separable stage ``sum_k L[r][k] t_k``: a product and the additions of the
    longest row, plus one for a constant not exact in float32 (1/6, 1/12, 1/24)."""
    if transposed:
        rows = [list(col) for col in zip(*rows, strict=True)]
    longest = max(sum(1 for c in row if c != 0) for row in rows)
    inexact = any(float(torch.tensor(c, dtype=torch.float32)) != c for row in rows for c in row)
    return longest + int(inexact)


def winograd_roundings(kind: str) -> int:
    """Roundings a term meets in a float32 tile transform of winograd.cpp, two separable stages each: ``input``
    (B^T d B), ``weight`` (G g G^T), ``output`` (A^T m A) and the adjoints ``input_t`` (plus up to 3 additions
    where 2x2 overlapping tiles meet), ``weight_t``, ``output_t``."""
    from fewshot.cuda import winograd_ref as ref

    return {
        "input": 2 * _roundings_per_stage(ref._BT), "weight": 2 * _roundings_per_stage(ref._G),
        "output": 2 * _roundings_per_stage(ref._AT), "input_t": 2 * _roundings_per_stage(ref._BT, True) + 3,
        "weight_t": 2 * _roundings_per_stage(ref._G, True), "output_t": 2 * _roundings_per_stage(ref._AT, True),
    }[kind]


def winograd_transform_bound(kind: str, t: torch.Tensor, shape: tuple[int, int, int, int] | None = None,
                             u: float = U32, extra_roundings: int = 0) -> torch.Tensor:
    """Worst-case error bound of the tile transform ``kind`` applied to t in the precision of unit roundoff u:
    ``gamma(roundings + extra_roundings, u)`` times the transform with absolute entries applied to |t| (an extra
    rounding covers t's own conversion to that precision). ``input``: x [N, C, H, W]; ``weight``: w [O, C, 3, 3];
    ``output``: m [36, O, tiles]; adjoints ``input_t``: v [36, C, tiles], ``output_t``: y [N, O, H, W],
    ``weight_t``: u [36, O, C]. ``shape`` is the [N, C, H, W] image shape where the map needs it."""
    n, c, h, width = shape if shape is not None else (t.shape if t.ndim == 4 else (0, 0, 0, 0))
    vjp = torch.autograd.functional.vjp
    t = t.double().abs()
    with _winograd_entries(abs) as ref:
        th, tw = ref.tile_counts(h, width)
        tiles = n * th * tw
        maps = {
            "input": lambda: ref.input_transform_ref(t),
            "weight": lambda: ref.weight_transform(t),
            "output": lambda: ref.output_transform_ref(t, n, h, width),
            "input_t": lambda: vjp(ref.input_transform_ref, torch.zeros(n, c, h, width, dtype=torch.float64), t)[1],
            "output_t": lambda: vjp(lambda m: ref.output_transform_ref(m, n, h, width),
                                    torch.zeros(ref.TAPS, t.shape[1], tiles, dtype=torch.float64), t)[1],
            "weight_t": lambda: vjp(ref.weight_transform, torch.zeros(t.shape[1], t.shape[2], 3, 3,
                                                                      dtype=torch.float64), t)[1],
        }
        magnitude = maps[kind]()
    return gamma(winograd_roundings(kind) + extra_roundings, u) * magnitude


def winograd_conv_bound(x: torch.Tensor, w: torch.Tensor, u: float = U32) -> torch.Tensor:
    """Elementwise error bound of a float32 Winograd convolution ``A^T [sum_c U_c V_c] A`` of seeded Gaussian x, w.

    The transforms are short: V = B^T d B and U = G g G^T are within ``e_V = gamma(8) |B^T||d||B|`` and
    ``e_U = gamma(8) |G||g||G^T|`` (worst case, per element). Their errors reach M = sum_c U_c V_c as
    ``U_c e_V + e_U V_c`` over C independent channels, and the C-term sum adds its own (``dot_sigma``): in variance
    ``(C + 1) u^2 sum_c U_c^2 V_c^2 + sum_c (U_c^2 e_V^2 + e_U^2 V_c^2)``. The output transform passes that on as
    ``(A^T)^2 [var M] A^2`` (entries squared) and adds at most ``gamma(10) |A^T||M||A|`` itself. The bound is
    ``LAMBDA`` standard deviations plus that last worst-case term (u: the unit roundoff of the computation)."""
    from fewshot.cuda import winograd_ref as ref

    n, c, h, width = x.shape
    xd, wd = x.double(), w.double()
    tv, tu = ref.input_transform_ref(xd), ref.weight_transform(wd)  # V and U in float64
    with _winograd_entries(abs) as absolute:
        e_v = gamma(winograd_roundings("input"), u) * absolute.input_transform_ref(xd.abs())
        e_u = gamma(winograd_roundings("weight"), u) * absolute.weight_transform(wd.abs())
        output_own = gamma(winograd_roundings("output"), u) * absolute.output_transform_ref(
            torch.bmm(tu, tv).abs(), n, h, width)
    var_m = (c + 1) * u**2 * torch.bmm(tu.square(), tv.square()) + torch.bmm(tu.square(), e_v.square()) \
        + torch.bmm(e_u.square(), tv.square())
    with _winograd_entries(lambda e: e * e) as squared:
        var_y = squared.output_transform_ref(var_m, n, h, width)
    return LAMBDA * var_y.sqrt() + output_own


def winograd_input_gradient_bound(g: torch.Tensor, w: torch.Tensor, u: float = U32) -> torch.Tensor:
    """Worst-case error bound of the input gradient of a Winograd convolution, ``B [sum_o U_o^T (A g A^T)] B^T``
    summed over overlapping tiles (winograd.cpp's adjoint transforms around a bmm over the O output channels):
    ``gamma(roundings + O)`` times that map on absolute values, the adjoint of the convolution of |x| by |w| with
    absolute transform entries, evaluated at |g|."""
    n, o, h, width = g.shape
    c = w.shape[1]
    roundings = winograd_roundings("output_t") + winograd_roundings("weight") + winograd_roundings("input_t") + o
    with _winograd_entries(abs) as ref:
        w_abs = w.double().abs()
        magnitude = torch.autograd.functional.vjp(lambda t: ref.conv3x3_winograd_ref(t, w_abs),
                                                  torch.zeros(n, c, h, width, dtype=torch.float64), g.double().abs())[1]
    return gamma(roundings, u) * magnitude


# ---- whole networks ----------------------------------------------------------------------------------------------


def fan_ins(*modules: nn.Module) -> list[int]:
    """Terms per dot product of every weight in ``modules`` (Conv2d: C/groups * kh * kw; Linear: in features),
    buffers included (frozen layers keep their weights as buffers); resampling filters are not weights."""
    return [t[0].numel() for m in modules for name, t in [*m.named_parameters(), *m.named_buffers()]
            if name.split(".")[-1] == "weight" and t.ndim >= 2]


def fan_outs(*modules: nn.Module) -> list[int]:
    """Terms per dot product of the backward (input gradient) through every weight: out channels * kh * kw."""
    return [t.shape[0] * t[0, 0].numel() for m in modules for name, t in [*m.named_parameters(), *m.named_buffers()]
            if name.split(".")[-1] == "weight" and t.ndim >= 2]


def network_scale(ks: Iterable[int], u: float = U32) -> float:
    """``u * sqrt(sum_l (K_l + 1))``: the relative rounding scale (one standard deviation) of a pass through layers
    of fan-in K_l, in float32 unless u says otherwise."""
    return u * math.sqrt(sum(k + 1 for k in ks))


def assert_network_close(got: torch.Tensor, want: torch.Tensor, ks: Iterable[int], sides: int = 2,
                         scale: float | None = None, u: float = U32, what: str = "") -> None:
    """``max |got - want| <= sides * LAMBDA * u * sqrt(sum_l (K_l + 1)) * rms(want)``: two (``sides``) float32
    evaluations of one network through layers of fan-in K_l agree to rounding (``sides=1``: one against float64).
    ``scale`` replaces rms(want) where the result is a sum of larger terms that cancel (the terms' scale); u = U64
    gives the same bound for float64 evaluations."""
    ks = list(ks)
    assert ks, "a network bound needs the layers' fan-ins"
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if scale is None:
        scale = want.double().square().mean().sqrt().item()
    bound = sides * LAMBDA * network_scale(ks, u) * scale
    diff = (got.double() - want.double()).abs().max().item()
    assert diff <= bound, (f"{what}: max |got - want| = {diff:.3g} is {diff / bound:.3g}x the rounding bound of "
                           f"{len(ks)} layers ({bound:.3g} = {sides} x {LAMBDA:g} x u x sqrt(sum (K + 1)) x rms {scale:.3g})")
