"""StyleGAN2 networks against the official layout and the published per-layer definitions.

The expectations here are written from docs/reference.md §1 (official names, shapes, formulas), not by
calling fewshot's own helpers: naive zero-insertion convolutions, per-sample modulation loops and a
direct minibatch-stddev loop. A whole-network reference (``naive_generator`` / ``naive_discriminator``)
built from those pieces reads weights by their official state_dict names, so agreement means an
official checkpoint gives the same images and logits here.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_D_KWARGS, TINY_G_KWARGS, make_tiny_D, make_tiny_G
from float32_bounds import assert_network_close, fan_ins

from fewshot.nets import Discriminator, Generator

SQRT2 = math.sqrt(2)
PAPER256_G = dict(
    z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3, mapping_kwargs={"num_layers": 8},
    synthesis_kwargs={"channel_base": 16384, "channel_max": 512, "num_fp16_res": 4, "conv_clamp": 256},
)
PAPER256_D = dict(c_dim=0, img_resolution=256, img_channels=3, channel_base=16384, channel_max=512, num_fp16_res=4,
                  conv_clamp=256, epilogue_kwargs={"mbstd_group_size": 8})


def assert_close(actual, expected, ks, what=""):
    """Agreement of two float32 evaluations to rounding through steps of fan-in ks: float32_bounds' tolerance,
    derived from u = 2^-24, never from one CPU's kernels (oneDNN's AVX-512 and AVX2 convolutions differ 5x)."""
    assert_network_close(actual, expected, ks, what=what)


def stylegan_fan_ins(net):
    """The sums a StyleGAN2 network's values pass: every weight's, each modulated convolution's demodulation (a sum
    of squares as long as its convolution's) and a 4x4 filter pass wherever a resampling filter is held."""
    from fewshot.nets.generator import SynthesisLayer

    ks = fan_ins(net)
    for m in net.modules():
        if isinstance(m, SynthesisLayer):
            ks.append(m.weight[0].numel())
        if "resample_filter" in dict(m.named_buffers(recurse=False)):
            ks.append(m.resample_filter.numel())
    return ks


# ----------------------------------------------------------------------------------------------
# Expected key tables, from the official module layout: in each module its own parameters come
# first, then its buffers, then its children, each in registration order.

def expected_generator_table(z_dim, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512,
                             mapping_layers=8):
    """[(key, shape, is_buffer)] in state_dict order for a skip generator without labels."""
    def ch(r):
        return min(channel_base // r, channel_max)

    table = []
    res = 4
    while res <= img_resolution:
        p = f"synthesis.b{res}."
        if res == 4:
            table.append((p + "const", [ch(4), 4, 4], False))
        table.append((p + "resample_filter", [4, 4], True))
        for conv in (["conv1"] if res == 4 else ["conv0", "conv1"]):
            cin = ch(res // 2) if conv == "conv0" else ch(res)
            q = f"{p}{conv}."
            table += [
                (q + "weight", [ch(res), cin, 3, 3], False), (q + "noise_strength", [], False),
                (q + "bias", [ch(res)], False), (q + "resample_filter", [4, 4], True),
                (q + "noise_const", [res, res], True), (q + "affine.weight", [cin, w_dim], False),
                (q + "affine.bias", [cin], False),
            ]
        q = p + "torgb."
        table += [
            (q + "weight", [img_channels, ch(res), 1, 1], False), (q + "bias", [img_channels], False),
            (q + "affine.weight", [ch(res), w_dim], False), (q + "affine.bias", [ch(res)], False),
        ]
        res *= 2
    table.append(("mapping.w_avg", [w_dim], True))
    for i in range(mapping_layers):
        table += [(f"mapping.fc{i}.weight", [w_dim, z_dim if i == 0 else w_dim], False),
                  (f"mapping.fc{i}.bias", [w_dim], False)]
    return table


def expected_discriminator_table(img_resolution, img_channels, channel_base=32768, channel_max=512, mbstd_channels=1,
                                 freeze_layers=0):
    """[(key, shape, is_buffer)] for a resnet discriminator without labels; frozen layers hold buffers."""
    def ch(r):
        return min(channel_base // r, channel_max)

    table = []
    layer_idx = 0

    def conv(prefix, shape, bias=True):
        nonlocal layer_idx
        frozen = layer_idx < freeze_layers
        layer_idx += 1
        params = [(prefix + "weight", shape, frozen)] + ([(prefix + "bias", [shape[0]], frozen)] if bias else [])
        filt = [(prefix + "resample_filter", [4, 4], True)]
        return filt + params if frozen else params + filt

    res = img_resolution
    while res >= 8:
        p = f"b{res}."
        table.append((p + "resample_filter", [4, 4], True))
        if res == img_resolution:
            table += conv(p + "fromrgb.", [ch(res), img_channels, 1, 1])
        table += conv(p + "conv0.", [ch(res), ch(res), 3, 3])
        table += conv(p + "conv1.", [ch(res // 2), ch(res), 3, 3])
        table += conv(p + "skip.", [ch(res // 2), ch(res), 1, 1], bias=False)
        res //= 2
    c4 = ch(4)
    table += [
        ("b4.conv.weight", [c4, c4 + mbstd_channels, 3, 3], False), ("b4.conv.bias", [c4], False),
        ("b4.conv.resample_filter", [4, 4], True), ("b4.fc.weight", [c4, c4 * 16], False),
        ("b4.fc.bias", [c4], False), ("b4.out.weight", [1, c4], False), ("b4.out.bias", [1], False),
    ]
    return table


def actual_table(net):
    buffers = {name for name, _ in net.named_buffers()}
    return [(k, list(v.shape), k in buffers) for k, v in net.state_dict().items()]


def test_64px_default_generator_table():
    G = Generator(512, 0, 512, 64, 3)
    table = actual_table(G)
    assert table == expected_generator_table(512, 512, 64, 3)
    assert len(table) == 106
    assert sum(p.numel() for p in G.parameters()) == 27_032_600
    assert G.num_ws == 10


def test_64px_default_discriminator_table():
    D = Discriminator(0, 64, 3)
    table = actual_table(D)
    assert table == expected_discriminator_table(64, 3)
    assert len(table) == 46
    assert sum(p.numel() for p in D.parameters()) == 26_488_833
    assert list(D.state_dict()["b4.conv.weight"].shape) == [512, 513, 3, 3]


def test_paper256_tables():
    G = Generator(**PAPER256_G)
    table = actual_table(G)
    assert table == expected_generator_table(512, 512, 256, 3, channel_base=16384)
    assert len(table) == 144
    assert sum(p.numel() for p in G.parameters()) == pytest.approx(24.8e6, rel=0.005)
    assert G.num_ws == 14
    D = Discriminator(**PAPER256_D)
    assert actual_table(D) == expected_discriminator_table(256, 3, channel_base=16384)


def test_frozen_discriminator_layers_are_buffers_with_the_same_names():
    # freeze 5 layers: fromrgb, conv0, conv1, skip of b32 and conv0 of b16 (layers counted from the image)
    D = make_tiny_D(perturb=False, block_kwargs={"freeze_layers": 5})
    assert actual_table(D) == expected_discriminator_table(32, 3, channel_base=512, channel_max=64, freeze_layers=5)
    params = {name for name, _ in D.named_parameters()}
    assert "b32.skip.weight" not in params and "b16.conv0.weight" not in params and "b16.conv0.bias" not in params
    assert "b16.conv1.weight" in params
    assert set(D.state_dict()) == set(make_tiny_D(perturb=False).state_dict())


@pytest.mark.parametrize("arch", ["orig", "resnet"])
def test_generator_architectures_layout(arch):
    G = make_tiny_G(synthesis_kwargs={"channel_base": 512, "channel_max": 64, "architecture": arch})
    keys = set(G.state_dict())
    torgb = {k.split(".")[1] for k in keys if ".torgb." in k}
    assert torgb == {"b32"}  # only the last block has ToRGB outside 'skip'
    skips = {k for k in keys if ".skip." in k}
    assert skips == ({f"synthesis.b{r}.skip.{n}" for r in (8, 16, 32) for n in ("weight", "resample_filter")}
                     if arch == "resnet" else set())
    assert G.num_ws == 8  # num_ws still counts the last ToRGB
    with torch.no_grad():
        assert G(torch.randn(2, 32), None, noise_mode="const").shape == (2, 3, 32, 32)


@pytest.mark.parametrize("arch", ["orig", "skip"])
def test_discriminator_architectures_layout(arch):
    D = make_tiny_D(architecture=arch)
    keys = set(D.state_dict())
    fromrgb = {k.split(".")[0] for k in keys if ".fromrgb." in k}
    assert fromrgb == ({"b32", "b16", "b8", "b4"} if arch == "skip" else {"b32"})
    assert not any(".skip." in k for k in keys)
    with torch.no_grad():
        assert D(torch.randn(4, 3, 32, 32), None).shape == (4, 1)


def test_conditional_networks_layout():
    G = make_tiny_G(c_dim=5)
    D = make_tiny_D(c_dim=5, mapping_kwargs={"num_layers": 2})
    assert list(G.state_dict()["mapping.embed.weight"].shape) == [32, 5]
    assert list(G.state_dict()["mapping.fc0.weight"].shape) == [32, 64]  # z and embedded c are concatenated
    assert list(D.state_dict()["mapping.embed.weight"].shape) == [64, 5]  # cmap_dim = channels at 4x4
    assert list(D.state_dict()["b4.out.weight"].shape) == [64, 64]
    assert "mapping.w_avg" not in D.state_dict()


# ----------------------------------------------------------------------------------------------
# Independent per-layer definitions.

def fir_filter():
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(k, k)
    return f / f.sum()


def depthwise(x, f, pad):
    """True convolution of every channel with the 2-D filter f after zero padding (x0, x1, y0, y1)."""
    c = x.shape[1]
    x = F.pad(x, list(pad))
    return F.conv2d(x, f.flip([0, 1])[None, None].repeat(c, 1, 1, 1), groups=c)


def zero_insert(x, trailing):
    n, c, h, w = x.shape
    size_h, size_w = (2 * h, 2 * w) if trailing else (2 * h - 1, 2 * w - 1)
    z = x.new_zeros(n, c, size_h, size_w)
    z[:, :, ::2, ::2] = x
    return z


def lrelu(x, gain=1.0, clamp=None):
    y = F.leaky_relu(x, 0.2) * SQRT2 * gain
    return y.clamp(-clamp * gain, clamp * gain) if clamp is not None else y


def dense(x, weight, bias, lr_mul=1.0):
    y = x @ (weight * (lr_mul / math.sqrt(weight.shape[1]))).t()
    return y + bias * lr_mul if bias is not None else y


def upsampling_conv(x, weight):
    """G conv0: transposed conv, stride 2, weight not flipped (= zero-insert + true convolution),
    then the FIR filter with padding 1 and gain 4."""
    k = weight.shape[-1]
    y = F.conv2d(F.pad(zero_insert(x, trailing=False), [k - 1] * 4), weight.flip([2, 3]))
    return depthwise(y, fir_filter() * 4, (1, 1, 1, 1))


def modulated(x, weight, styles, demodulate=True, up=False):
    """Per-sample: w' = w * style (per input channel), demodulated by rsqrt(sum w'^2 + 1e-8) per output channel."""
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3]) + 1e-8).rsqrt().reshape(-1, 1, 1, 1)
        xn = x[n:n + 1]
        outs.append(upsampling_conv(xn, w) if up else F.conv2d(xn, w, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


def synthesis_layer_ref(sd, prefix, x, w, up=False, clamp=None, noise="const", gain=1.0):
    styles = dense(w, sd[prefix + "affine.weight"], sd[prefix + "affine.bias"])
    y = modulated(x, sd[prefix + "weight"], styles, up=up)
    if noise == "const":  # after the conv, before the bias
        y = y + sd[prefix + "noise_const"] * sd[prefix + "noise_strength"]
    y = y + sd[prefix + "bias"].reshape(1, -1, 1, 1)
    return lrelu(y, gain, clamp)


def torgb_ref(sd, prefix, x, w, clamp=None):
    weight = sd[prefix + "weight"]
    styles = dense(w, sd[prefix + "affine.weight"], sd[prefix + "affine.bias"]) / math.sqrt(weight.shape[1])
    y = modulated(x, weight, styles, demodulate=False) + sd[prefix + "bias"].reshape(1, -1, 1, 1)
    return y.clamp(-clamp, clamp) if clamp is not None else y


def upsample_image(img):
    """Image skip path: zero-insert, pad (2, 1), FIR with gain 4."""
    return depthwise(zero_insert(img, trailing=True), fir_filter() * 4, (2, 1, 2, 1))


def naive_generator(G, z, psi=1.0, cutoff=None, noise="const"):
    """The whole skip generator from the definitions, reading weights by official names."""
    sd = {k: v.detach() for k, v in G.state_dict().items()}
    kw = G.init_kwargs
    mapping_layers = kw["mapping_kwargs"].get("num_layers", 8)
    clamp = kw["synthesis_kwargs"].get("conv_clamp")
    x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    for i in range(mapping_layers):
        x = lrelu(dense(x, sd[f"mapping.fc{i}.weight"], sd[f"mapping.fc{i}.bias"], lr_mul=0.01))
    ws = x.unsqueeze(1).repeat(1, G.num_ws, 1)
    w_avg = sd["mapping.w_avg"]
    cut = G.num_ws if cutoff is None else cutoff
    ws[:, :cut] = w_avg + psi * (ws[:, :cut] - w_avg)

    h = sd["synthesis.b4.const"].unsqueeze(0).repeat(z.shape[0], 1, 1, 1)
    h = synthesis_layer_ref(sd, "synthesis.b4.conv1.", h, ws[:, 0], clamp=clamp, noise=noise)
    img = torgb_ref(sd, "synthesis.b4.torgb.", h, ws[:, 1], clamp=clamp)
    res, idx = 8, 1
    while res <= G.img_resolution:
        p = f"synthesis.b{res}."
        h = synthesis_layer_ref(sd, p + "conv0.", h, ws[:, idx], up=True, clamp=clamp, noise=noise)
        h = synthesis_layer_ref(sd, p + "conv1.", h, ws[:, idx + 1], clamp=clamp, noise=noise)
        img = upsample_image(img) + torgb_ref(sd, p + "torgb.", h, ws[:, idx + 2], clamp=clamp)
        res, idx = res * 2, idx + 2
    return img


def conv_ref(x, weight, bias, gain=1.0, act=True, clamp=None):
    y = F.conv2d(x, weight / math.sqrt(weight[0].numel()), padding=weight.shape[-1] // 2)
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return lrelu(y, gain, clamp) if act else y * gain


def down_conv_ref(x, weight, bias, gain=1.0, clamp=None):
    """D conv1: FIR with padding 2 on every side, then 3x3 conv with stride 2."""
    y = F.conv2d(depthwise(x, fir_filter(), (2, 2, 2, 2)), weight / math.sqrt(weight[0].numel()), stride=2)
    return lrelu(y + bias.reshape(1, -1, 1, 1), gain, clamp)


def down_skip_ref(x, weight, gain):
    """D 1x1 skip: FIR with padding 1, keep every 2nd pixel, 1x1 conv, no bias, linear."""
    y = depthwise(x, fir_filter(), (1, 1, 1, 1))[:, :, ::2, ::2]
    return F.conv2d(y, weight / math.sqrt(weight[0].numel())) * gain


def mbstd_ref(x, group_size, num_channels=1):
    """Direct loop: sample j shares a group with j + N/G, j + 2N/G, ..."""
    n_total, c, h, w = x.shape
    g = min(group_size, n_total)
    n_groups = n_total // g
    out = x.new_zeros(n_total, num_channels, h, w)
    for k in range(n_groups):
        members = list(range(k, n_total, n_groups))
        grp = x[members].reshape(g, num_channels, c // num_channels, h, w)
        std = (grp.var(dim=0, unbiased=False) + 1e-8).sqrt()
        out[members] = std.mean(dim=[1, 2, 3]).reshape(1, num_channels, 1, 1)
    return torch.cat([x, out], dim=1)


def naive_discriminator(D, img, group_size=4):
    sd = {k: v.detach() for k, v in D.state_dict().items()}
    clamp = D.init_kwargs.get("conv_clamp")
    half = math.sqrt(0.5)
    res = D.img_resolution
    x = conv_ref(img, sd[f"b{res}.fromrgb.weight"], sd[f"b{res}.fromrgb.bias"], clamp=clamp)
    while res >= 8:
        p = f"b{res}."
        y = down_skip_ref(x, sd[p + "skip.weight"], half)
        x = conv_ref(x, sd[p + "conv0.weight"], sd[p + "conv0.bias"], clamp=clamp)
        x = down_conv_ref(x, sd[p + "conv1.weight"], sd[p + "conv1.bias"], gain=half, clamp=clamp)
        x = y + x
        res //= 2
    x = mbstd_ref(x, group_size)
    x = conv_ref(x, sd["b4.conv.weight"], sd["b4.conv.bias"], clamp=clamp)
    x = lrelu(dense(x.flatten(1), sd["b4.fc.weight"], sd["b4.fc.bias"]))
    return dense(x, sd["b4.out.weight"], sd["b4.out.bias"])


# ----------------------------------------------------------------------------------------------

def test_fully_connected_equalized_lr_and_affine_bias_init():
    torch.manual_seed(0)
    from fewshot.nets.layers import FullyConnectedLayer

    layer = FullyConnectedLayer(256, 300, activation="lrelu", lr_multiplier=0.01)
    # stored weight is randn / lr_mul: its std is ~100
    assert layer.weight.std().item() == pytest.approx(100, rel=0.05)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(5, 256)
    expected = lrelu(x @ (layer.weight * 0.01 / 16).t() + layer.bias * 0.01)
    assert_close(layer(x), expected, [256])

    G = make_tiny_G(perturb=False)
    for name, value in G.state_dict().items():
        if name.endswith("affine.bias"):
            assert torch.all(value == 1), name
        if name.endswith(".bias") and "affine" not in name:
            assert torch.all(value == 0), name


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("layer_name", ["b8.conv1", "b8.conv0"])
def test_synthesis_layer_matches_formula(fused, layer_name):
    G = make_tiny_G(synthesis_kwargs={"channel_base": 512, "channel_max": 64, "conv_clamp": 0.5})
    layer = G.synthesis.get_submodule(layer_name)
    sd = {k: v.detach() for k, v in layer.state_dict().items()}
    up = layer_name.endswith("conv0")
    x = torch.randn(3, layer.weight.shape[1], 4 if up else 8, 4 if up else 8)
    w = torch.randn(3, 32)
    expected = synthesis_layer_ref(sd, "", x, w, up=up, clamp=0.5, gain=0.7)
    with torch.no_grad():
        out = layer(x, w, noise_mode="const", fused_modconv=fused, gain=0.7)
    assert (expected.abs() >= 0.5 * 0.7 - 1e-6).any(), "the clamp should bite in this test"
    assert_close(out, expected, stylegan_fan_ins(layer))


def test_fused_and_non_fused_modconv_agree():
    G = make_tiny_G()
    layer = G.synthesis.b16.conv0
    x, w = torch.randn(4, layer.weight.shape[1], 8, 8), torch.randn(4, 32)
    with torch.no_grad():
        a = layer(x, w, noise_mode="const", fused_modconv=True)
        b = layer(x, w, noise_mode="const", fused_modconv=False)
    assert_close(a, b, stylegan_fan_ins(layer))


@pytest.mark.parametrize("fused", [True, False])
def test_torgb_matches_formula(fused):
    G = make_tiny_G(synthesis_kwargs={"channel_base": 512, "channel_max": 64, "conv_clamp": 0.3})
    layer = G.synthesis.b16.torgb
    sd = {k: v.detach() for k, v in layer.state_dict().items()}
    x, w = torch.randn(2, 32, 16, 16), torch.randn(2, 32)
    with torch.no_grad():
        out = layer(x, w, fused_modconv=fused)
    assert_close(out, torgb_ref(sd, "", x, w, clamp=0.3), fan_ins(layer))


def test_image_skip_path_upsamples_with_the_fir_filter():
    G = make_tiny_G()
    block = G.synthesis.b16
    x, ws, img = torch.randn(2, 64, 8, 8), torch.randn(2, 3, 32), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        _, without = block(x, None, ws, noise_mode="const")
        _, with_img = block(x, img, ws, noise_mode="const")
    assert_close(with_img - without, upsample_image(img), [16, 1])  # the 4x4 filter, and the sum with ToRGB's image


def test_discriminator_downsampling_conv_and_skip():
    D = make_tiny_D(conv_clamp=0.4)
    block = D.b32
    sd = {k: v.detach() for k, v in block.state_dict().items()}
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        conv1 = block.conv1(x, gain=0.5)
        skip = block.skip(x, gain=math.sqrt(0.5))
    assert_close(conv1, down_conv_ref(x, sd["conv1.weight"], sd["conv1.bias"], 0.5, clamp=0.4), stylegan_fan_ins(block.conv1))
    assert_close(skip, down_skip_ref(x, sd["skip.weight"], math.sqrt(0.5)), stylegan_fan_ins(block.skip))


@pytest.mark.parametrize("batch,group,channels", [(8, 4, 1), (8, 2, 2), (3, 4, 1), (6, 3, 4)])
def test_minibatch_stddev_groups_are_strided(batch, group, channels):
    from fewshot.nets.discriminator import MinibatchStdLayer

    x = torch.randn(batch, 8, 4, 4) * torch.arange(1, batch + 1).reshape(-1, 1, 1, 1)  # samples differ in scale
    # Sums over the group (at most 4) and over each channel group's c * h * w (8 * 16 at most).
    assert_close(MinibatchStdLayer(group, channels)(x), mbstd_ref(x, group, channels), [4, 4, 8 * 16])


def test_num_ws_and_which_w_each_layer_uses():
    for res in (4, 8, 32, 256):
        G = Generator(8, 0, 8, res, 3, synthesis_kwargs={"channel_base": 4096, "channel_max": 8})
        assert G.num_ws == 2 * int(math.log2(res)) - 2
    G = make_tiny_G()
    seen = {}
    hooks = [
        module.affine.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, args[0]))
        for name, module in G.synthesis.named_modules() if hasattr(module, "affine")
    ]
    ws = torch.randn(2, G.num_ws, 32)
    with torch.no_grad():
        G.synthesis(ws, noise_mode="const")
    for hook in hooks:
        hook.remove()
    expected = {"b4.conv1": 0, "b4.torgb": 1}
    for i, res in enumerate((8, 16, 32)):
        expected.update({f"b{res}.conv0": 1 + 2 * i, f"b{res}.conv1": 2 + 2 * i, f"b{res}.torgb": 3 + 2 * i})
    assert set(seen) == set(expected)
    for name, idx in expected.items():
        assert torch.equal(seen[name], ws[:, idx]), name


def test_truncation_psi_and_cutoff():
    G = make_tiny_G().eval()
    z = torch.randn(3, 32)
    with torch.no_grad():
        w_plain = G.mapping(z, None)
        w_trunc = G.mapping(z, None, truncation_psi=0.7)
        w_cut = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=3)
    w_avg = G.mapping.w_avg
    # A difference, a product and a sum, each rounded (lerp may fuse them).
    assert_close(w_trunc, w_avg + 0.7 * (w_plain - w_avg), [1, 1, 1])
    assert_close(w_cut[:, :3], w_avg + 0.5 * (w_plain[:, :3] - w_avg), [1, 1, 1])
    assert_close(w_cut[:, 3:], w_plain[:, 3:], [1, 1, 1])


def test_w_avg_updates_only_in_training_mode():
    G = make_tiny_G()
    z = torch.randn(6, 32)
    before = G.mapping.w_avg.clone()
    with torch.no_grad():
        G.eval()
        w = G.mapping(z, None)[:, 0]
        assert torch.equal(G.mapping.w_avg, before)
        G.train()
        G.mapping(z, None, skip_w_avg_update=True)
        assert torch.equal(G.mapping.w_avg, before)
        G.mapping(z, None)
    assert_close(G.mapping.w_avg, before + (w.mean(0) - before) * (1 - 0.995), [6, 1, 1, 1])  # the batch mean, a lerp


def test_noise_modes():
    G = make_tiny_G().eval()
    ws = torch.randn(2, G.num_ws, 32)
    with torch.no_grad():
        const_a = G.synthesis(ws, noise_mode="const")
        const_b = G.synthesis(ws, noise_mode="const")
        rand_a = G.synthesis(ws, noise_mode="random")
        rand_b = G.synthesis(ws, noise_mode="random")
        none = G.synthesis(ws, noise_mode="none")
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
        const_zero = G.synthesis(ws, noise_mode="const")
    assert torch.equal(const_a, const_b)
    assert not torch.allclose(rand_a, rand_b)
    assert not torch.allclose(none, const_a)
    assert_close(none, const_zero, stylegan_fan_ins(G.synthesis))
    with pytest.raises(ValueError):
        G.synthesis(ws, noise_mode="loud")


def test_train_and_eval_paths_agree():
    G = make_tiny_G()
    ws = torch.randn(3, G.num_ws, 32)
    with torch.no_grad():
        G.train()  # non-fused modconv
        train_img = G.synthesis(ws, noise_mode="const")
        G.eval()  # fused grouped conv
        eval_img = G.synthesis(ws, noise_mode="const")
    assert_close(train_img, eval_img, stylegan_fan_ins(G.synthesis))


@pytest.mark.parametrize("overrides", [
    {},
    {"synthesis_kwargs": {"channel_base": 512, "channel_max": 64, "conv_clamp": 0.8, "num_fp16_res": 2}},
    {"mapping_kwargs": {"num_layers": 8}, "w_dim": 16, "z_dim": 24},
])
def test_whole_generator_matches_the_definitions(overrides):
    G = make_tiny_G(**overrides).eval()
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        out = G(z, None, truncation_psi=0.7, noise_mode="const")
        out_cut = G(z, None, truncation_psi=0.5, truncation_cutoff=2, noise_mode="const")
        ref = naive_generator(G, z, psi=0.7)
        ref_cut = naive_generator(G, z, psi=0.5, cutoff=2)
    assert out.shape == (2, 3, 32, 32)
    assert_close(out, ref, stylegan_fan_ins(G))
    assert_close(out_cut, ref_cut, stylegan_fan_ins(G))


@pytest.mark.parametrize("overrides", [{}, {"conv_clamp": 0.5, "num_fp16_res": 2}])
def test_whole_discriminator_matches_the_definitions(overrides):
    D = make_tiny_D(**overrides).eval()
    img = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        logits = D(img, None)
        ref = naive_discriminator(D, img)
    assert logits.shape == (8, 1)
    assert_close(logits, ref, stylegan_fan_ins(D))


@pytest.mark.parametrize("config", ["64px-default", "paper256"])
def test_full_size_networks_match_the_definitions(config):
    torch.manual_seed(0)
    if config == "paper256":
        G, D = Generator(**PAPER256_G), Discriminator(**PAPER256_D)
        group = 8
    else:
        G, D = Generator(512, 0, 512, 64, 3), Discriminator(0, 64, 3)
        group = 4
    from conftest import perturb_

    perturb_(G.eval(), 1, scale=0.05)
    perturb_(D.eval(), 2, scale=0.05)
    z = torch.randn(2, 512)
    with torch.no_grad():
        img = G(z, None, truncation_psi=0.7, noise_mode="const")
        assert_close(img, naive_generator(G, z, psi=0.7), stylegan_fan_ins(G))
        logits = D(img.repeat(4, 1, 1, 1), None)
        assert_close(logits, naive_discriminator(D, img.repeat(4, 1, 1, 1), group), stylegan_fan_ins(D))


def test_tiny_configs_are_what_conftest_says():
    assert make_tiny_G().init_kwargs == TINY_G_KWARGS
    assert make_tiny_D().init_kwargs["channel_base"] == TINY_D_KWARGS["channel_base"]
