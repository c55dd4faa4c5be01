"""StyleGAN3 generator (fewshot.nets.stylegan3): official layout, filter design, numerics, transforms.

The layout facts below were read off NVIDIA's training/networks_stylegan3.py (a 1024 px stylegan3-t
and stylegan3-r generator as train.py configures them); the networks are built here in code.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from float32_bounds import LAMBDA, assert_network_close, fan_ins, network_scale

TINY_T = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3, mapping_kwargs={"num_layers": 2},
              channel_base=128, channel_max=16)
TINY_R = dict(TINY_T, channel_base=256, channel_max=32, conv_kernel=1, use_radial_filters=True)

# train.py's configs at 1024 px (z_dim = w_dim = 512, 2 mapping layers): R doubles channel_base and channel_max.
CONFIG_T_1024 = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                     mapping_kwargs={"num_layers": 2}, channel_base=32768, channel_max=512)
CONFIG_R_1024 = dict(CONFIG_T_1024, channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True)

# Facts of the official networks (keys, parameters, layer names: f"L{idx}_{out_size}_{out_channels}").
OFFICIAL_T_1024_LAYERS = ["L0_36_512", "L1_36_512", "L2_52_512", "L3_52_512", "L4_84_512", "L5_148_512", "L6_148_512",
                          "L7_276_323", "L8_276_203", "L9_532_128", "L10_1044_81", "L11_1044_51", "L12_1044_32",
                          "L13_1024_32", "L14_1024_3"]
OFFICIAL_R_1024_LAYERS = ["L0_36_1024", "L1_36_1024", "L2_52_1024", "L3_52_1024", "L4_84_1024", "L5_148_1024",
                          "L6_148_1024", "L7_276_645", "L8_276_406", "L9_532_256", "L10_1044_161", "L11_1044_102",
                          "L12_1044_64", "L13_1024_64", "L14_1024_3"]
OFFICIAL_FIRST_KEYS = ["synthesis.input.weight", "synthesis.input.transform", "synthesis.input.freqs",
                       "synthesis.input.phases", "synthesis.input.affine.weight", "synthesis.input.affine.bias"]
OFFICIAL_LAYER_KEYS = ["weight", "bias", "magnitude_ema", "up_filter", "down_filter", "affine.weight", "affine.bias"]
OFFICIAL_MAPPING_KEYS = ["mapping.w_avg", "mapping.fc0.weight", "mapping.fc0.bias", "mapping.fc1.weight",
                         "mapping.fc1.bias"]
OFFICIAL_UP_TAPS_T_1024 = [12, 12, 24, 12, 24, 24, 12, 24, 12, 24, 24, 12, 12, 12]  # L0..L13 (ToRGB has none)
OFFICIAL_PADDING_T_1024 = {"L0_36_512": [9, 8, 9, 8], "L2_52_512": [-6, -9, -6, -9], "L13_1024_32": [-11, -12, -11, -12],
                           "L14_1024_3": [0, 0, 0, 0]}


def make_tiny(kwargs: dict = TINY_T, seed: int = 0, perturb: float = 0.1):
    """A seeded tiny generator whose weights, biases and EMAs are moved off their initial values (filters,
    frequencies and the transform stay as designed), so every term of the forward pass matters; each
    ``magnitude_ema`` then holds the mean square of what its layer sees, as after training (with 1.0 an
    untrained network's signal fades layer by layer to a nearly flat picture)."""
    from fewshot.nets.stylegan3 import StyleGAN3Generator

    torch.manual_seed(seed)
    G = StyleGAN3Generator(**kwargs).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in G.state_dict().items():
            if name.endswith(("filter", "transform", "freqs", "phases")):
                continue
            t.add_(torch.randn(t.shape, generator=gen) * perturb)
        layers = G.synthesis.layers()
        for layer in layers:
            layer.magnitude_ema_beta = 0.0  # the next update_emas pass sets each EMA to the batch's value
        G.synthesis(G.mapping(torch.randn([8, G.z_dim], generator=gen), None), update_emas=True)
        for layer in layers:
            layer.magnitude_ema_beta = 0.999
    return G


def sg3_fan_ins(G) -> list[int]:
    """The sums a StyleGAN3 generator's values pass: every weight's, each demodulation's (as long as its conv's),
    and each filter pass of filtered_lrelu (a 1-D filter twice, separably; a radial 2-D one once)."""
    ks = fan_ins(G)
    for layer in G.synthesis.layers():
        ks.append(layer.weight[0].numel())
        for f in (layer.up_filter, layer.down_filter):
            if f is not None:
                ks += [f.numel()] if f.ndim == 2 else [f.numel()] * 2
    return ks


@pytest.mark.parametrize("config, layers, params", [
    (CONFIG_T_1024, OFFICIAL_T_1024_LAYERS, 22_313_167),
    (CONFIG_R_1024, OFFICIAL_R_1024_LAYERS, 15_093_151),
])
def test_official_1024_layout(config, layers, params):
    from fewshot.nets.stylegan3 import StyleGAN3Generator

    G = StyleGAN3Generator(**config)
    sd = G.state_dict()
    assert G.synthesis.layer_names == layers
    assert G.num_ws == 16 and G.synthesis.num_ws == 16 and G.mapping.num_ws == 16
    assert sum(p.numel() for p in G.parameters()) == params
    expected = list(OFFICIAL_FIRST_KEYS)
    for name in layers:
        is_torgb = name.startswith("L14")
        expected += [f"synthesis.{name}.{k}" for k in OFFICIAL_LAYER_KEYS if not (is_torgb and "filter" in k)]
    assert list(sd) == expected + OFFICIAL_MAPPING_KEYS  # 114 keys, in the official order
    radial = "use_radial_filters" in config
    width = 1024 if radial else 512
    assert sd["synthesis.input.weight"].shape == (width, width)
    assert sd["synthesis.input.freqs"].shape == (width, 2) and sd["synthesis.input.phases"].shape == (width,)
    assert sd["synthesis.input.affine.weight"].shape == (4, 512)
    assert sd["synthesis.input.transform"].equal(torch.eye(3))
    kernel = 1 if radial else 3
    assert sd[f"synthesis.{layers[0]}.weight"].shape == (width, width, kernel, kernel)
    assert sd[f"synthesis.{layers[-1]}.weight"].shape == (3, 64 if radial else 32, 1, 1)  # ToRGB: 1x1
    assert [sd[f"synthesis.{n}.up_filter"].shape[0] for n in layers[:-1]] == OFFICIAL_UP_TAPS_T_1024
    # R's downsampling filters are 2-D (radial) except in the critically sampled last layers L12, L13.
    down_dims = [sd[f"synthesis.{n}.down_filter"].ndim for n in layers[:-1]]
    assert down_dims == ([2] * 12 + [1, 1] if radial else [1] * 14)
    if not radial:
        assert {n: getattr(G.synthesis, n).padding for n in OFFICIAL_PADDING_T_1024} == OFFICIAL_PADDING_T_1024


def test_registered_and_rebuilt_from_init_kwargs():
    from fewshot.nets import build_network
    from fewshot.registry import networks

    assert "StyleGAN3Generator" in networks
    G = make_tiny(TINY_R)
    assert G.init_kwargs == dict(TINY_R)  # flat, as the official _init_kwargs: synthesis kwargs at the top level
    rebuilt = build_network("StyleGAN3Generator", G.init_kwargs)
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [(k, v.shape) for k, v in G.state_dict().items()]


@pytest.mark.parametrize("radial", [False, True])
def test_filter_design_matches_scipy(radial):
    """The Kaiser design of scipy.signal.firwin (and the jinc of scipy.special.j1) in numpy: agreement to float64
    rounding of the window (np.kaiser and scipy's kaiser evaluate I0 by different series)."""
    scipy_signal = pytest.importorskip("scipy.signal")
    scipy_special = pytest.importorskip("scipy.special")
    from fewshot.nets.stylegan3_filters import jinc_lowpass, kaiser_lowpass

    for numtaps, cutoff, width, fs in [(12, 2.0, 4.5, 32), (24, 5.04, 3.2, 64), (12, 16.0, 5.8, 64)]:
        if not radial:
            want = scipy_signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
            np.testing.assert_allclose(kaiser_lowpass(numtaps, cutoff, width, fs), want, rtol=0, atol=1e-12)
            continue
        x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
        r = np.hypot(*np.meshgrid(x, x))
        f = scipy_special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
        beta = scipy_signal.kaiser_beta(scipy_signal.kaiser_atten(numtaps, width / (fs / 2)))
        f *= np.outer(np.kaiser(numtaps, beta), np.kaiser(numtaps, beta))
        np.testing.assert_allclose(jinc_lowpass(numtaps, cutoff, width, fs), f / f.sum(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kwargs", [TINY_T, TINY_R], ids=["T", "R"])
def test_fused_and_shared_weight_modconv_agree(kwargs):
    """CPU inference runs the shared-weight conv (fused_modconv=False); it is the official grouped conv's function."""
    G = make_tiny(kwargs)
    z = torch.from_numpy(np.random.RandomState(0).randn(3, G.z_dim)).float()
    with torch.no_grad():
        fused = G(z, None)
        shared = G(z, None, fused_modconv=False)
    assert fused.shape == (3, 3, 32, 32)
    assert fused.abs().max() > 0.05  # a real image, not zeros
    assert_network_close(shared, fused, sg3_fan_ins(G), what="shared-weight vs grouped modconv")


def test_truncation_and_w_avg_update():
    G = make_tiny()
    z = torch.randn(4, G.z_dim)
    ws = G.mapping(z, None)
    assert ws.shape == (4, G.num_ws, G.w_dim) and G.num_ws == G.synthesis.num_layers + 2
    half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=3)
    torch.testing.assert_close(half[:, :3], G.mapping.w_avg.lerp(ws[:, :3], 0.5))
    torch.testing.assert_close(half[:, 3:], ws[:, 3:])
    before = G.mapping.w_avg.clone()
    G.mapping(z, None)  # no update unless asked, in any mode (the official flag, not training mode)
    assert G.mapping.w_avg.equal(before)
    G.mapping(z, None, update_emas=True)
    torch.testing.assert_close(G.mapping.w_avg, ws[:, 0].mean(0).lerp(before, G.mapping.w_avg_beta))


def test_magnitude_ema_tracks_input_rms_when_asked():
    G = make_tiny()
    layer = G.synthesis.layers()[0]
    x = torch.randn(2, layer.in_channels, int(layer.in_size[1]), int(layer.in_size[0])) * 3
    w = torch.randn(2, G.w_dim)
    before = layer.magnitude_ema.clone()
    layer(x, w)
    assert layer.magnitude_ema.equal(before)
    layer(x, w, update_emas=True)
    torch.testing.assert_close(layer.magnitude_ema, x.square().mean().lerp(before, layer.magnitude_ema_beta))


def test_input_transform_is_the_inverse_of_gen_images_matrix():
    from fewshot.nets.stylegan3 import input_transform

    m = input_transform((0.25, -0.5), 30.0)
    angle = math.radians(30.0)
    forward = torch.tensor([[math.cos(angle), math.sin(angle), 0.25], [-math.sin(angle), math.cos(angle), -0.5],
                            [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(m.double() @ forward, torch.eye(3, dtype=torch.float64), atol=1e-7, rtol=0)
    assert input_transform().equal(torch.eye(3))


def test_integer_translation_shifts_the_fourier_features():
    """With w's own transform the identity, a user translation by whole samples of the input grid moves the Fourier
    features by exactly those samples, to +x for a positive x (the phases move; the frequencies do not)."""
    from fewshot.nets.stylegan3 import input_transform

    G = make_tiny()
    inp = G.synthesis.input
    w = torch.randn(2, G.w_dim)
    pixels = 4
    with torch.no_grad():
        inp.affine.weight.zero_()
        inp.affine.bias.copy_(torch.tensor([1.0, 0, 0, 0]))  # t = (cos, sin, tx, ty) = (1, 0, 0, 0)
        base = inp(w)
        inp.transform.copy_(input_transform((pixels / inp.sampling_rate, 0.0), 0.0))
        moved = inp(w)
    # sin of arguments |2 pi (<p, f> + phase)| < 2 pi (2 + 1): float32 rounding of ~1e-6, through the channel mix.
    torch.testing.assert_close(moved[..., pixels:], base[..., :-pixels], atol=2e-5, rtol=0)
    assert (moved - base).abs().max() > 0.1


# --------------------------------------------------------------------------------------------
# Safe import of official StyleGAN3 pickles (G, D, G_ema; the discriminator is StyleGAN2's)


def test_official_stylegan3_pickle_imports_safely(tmp_path):
    import pickletools

    from conftest import make_tiny_D
    from official_format import make_official_pickle

    from fewshot.checkpoint import convert_pickle, load_checkpoint, read_header
    from fewshot.loading import load_generator
    from fewshot.official_pickle import import_official_pickle

    G, G_ema, D = make_tiny(TINY_T, seed=1), make_tiny(TINY_T, seed=2), make_tiny_D(3).eval()
    src = make_official_pickle(tmp_path / "sg3.pkl", G=G, D=D, G_ema=G_ema, augment_p=0.25)
    names = {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(src.read_bytes()) if op.name == "GLOBAL"}
    # StyleGAN3's layers keep sizes as numpy arrays: the file names numpy's array reconstructor, as real ones do.
    assert {"numpy.core.multiarray._reconstruct", "numpy.ndarray"} <= names
    records = import_official_pickle(src).networks
    assert records["G_ema"].class_name == "Generator"  # the name the official pickle records ...
    assert records["G_ema"].fewshot_class == "StyleGAN3Generator"  # ... told apart by its Fourier input
    assert records["D"].fewshot_class == "Discriminator"

    bundle = load_checkpoint(src)
    assert {k: type(v).__name__ for k, v in bundle.networks.items()} == {
        "G": "StyleGAN3Generator", "D": "Discriminator", "G_ema": "StyleGAN3Generator"}
    assert bundle.provenance["source_format"] == "stylegan3 pickle"
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        assert torch.equal(bundle.networks["G_ema"](z), G_ema(z))
        assert torch.equal(bundle.networks["G"](z), G(z))
    for name, tensor in G_ema.state_dict().items():  # buffers too: magnitude_ema, filters, freqs, phases, w_avg
        assert torch.equal(bundle.networks["G_ema"].state_dict()[name], tensor), name

    dst = convert_pickle(src, tmp_path / "sg3.safetensors")
    header = read_header(dst)
    assert header.specs["G_ema"].class_name == "StyleGAN3Generator"
    assert header.specs["G_ema"].init_kwargs == TINY_T
    rebuilt = load_generator(dst)
    with torch.no_grad():
        assert torch.equal(rebuilt(z), G_ema(z))


def test_payload_inside_a_stylegan3_record_is_refused(tmp_path):
    from official_format import make_malicious_pickle

    from fewshot.checkpoint import load_checkpoint
    from fewshot.errors import FewshotError

    marker = tmp_path / "pwned"
    src = make_malicious_pickle(tmp_path / "evil.pkl", marker, G=make_tiny(TINY_R))
    with pytest.raises(FewshotError, match="posix.system|os.system|nt.system"):
        load_checkpoint(src)
    assert not marker.exists()


class _ForgedArray:
    """Pickles as numpy's array reconstructor with a state whose byte count does not fit its shape."""

    def __reduce__(self):
        reconstruct = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, the global a real file names
        return (reconstruct, (np.ndarray, (0,), b"b"), (1, (1000,), np.dtype("int64"), False, b"\0" * 16))


def test_a_numpy_array_state_from_the_file_is_checked(tmp_path):
    from fewshot.errors import FewshotError
    from fewshot.official_pickle import safe_load

    with pytest.raises(FewshotError, match=r"shape \(1000,\) but 16 bytes"):
        safe_load(pickle.dumps({"size": _ForgedArray()}, protocol=3))
    good = safe_load(pickle.dumps({"size": np.broadcast_to(np.asarray(36), [2])}, protocol=3))
    assert good["size"].array.tolist() == [36, 36]


# --------------------------------------------------------------------------------------------
# Parity with NVIDIA's gen_images.py (fixture recorded side by side by scripts/sg3_parity_fixtures.py)

PARITY_FIXTURE = Path(__file__).parent / "fixtures" / "stylegan3_parity.npz"
DESIGNED_BUFFERS = ("up_filter", "down_filter", "transform")


def parity_generator(fixture, name: str, tmp_path: Path):
    """The fixture's network, written as an official-format pickle and read back with fewshot's safe importer
    (the path a user's published .pkl takes); the filters and the transform are designed by fewshot's code."""
    from official_format import make_official_pickle

    from fewshot.loading import load_generator
    from fewshot.nets.stylegan3 import StyleGAN3Generator

    G = StyleGAN3Generator(**json.loads(str(fixture["nets"]))[name])
    flat = torch.from_numpy(fixture[f"{name}/weights"].astype(np.float32))
    stored, offset = {}, 0
    for key, shape in json.loads(str(fixture[f"{name}/layout"])):
        count = math.prod(shape)
        stored[key] = flat[offset : offset + count].reshape(shape)
        offset += count
    assert offset == flat.numel()
    assert set(stored) == {k for k in G.state_dict() if not k.endswith(DESIGNED_BUFFERS)}
    missing, unexpected = G.load_state_dict(stored, strict=False)
    assert not unexpected and all(k.endswith(DESIGNED_BUFFERS) for k in missing)
    return load_generator(make_official_pickle(tmp_path / f"{name}.pkl", G_ema=G.eval(), snapshot=False))


@pytest.mark.parametrize("name", ["T", "R"])
def test_same_seed_same_image_as_official_gen_images(name, tmp_path):
    """gen_images.py --seeds S --trunc PSI --translate TX,TY --rotate DEG, side by side: the fixture holds the
    official float output in float16, so each value is within half a float16 ulp of it (2^-11 relative; below
    6e-5, 2^-25 absolute) plus the rounding of two float32 evaluations of the network (float32_bounds'
    network bound; the side-by-side run measured at most 2.2e-6). The acceptance, 1/255 of the [-1, 1] range, is
    2/255 in value; and the uint8 image is the official one to within the one level a float16 rounding can cross."""
    from fewshot.equivariance import transformed_input
    from fewshot.synthesis import generate_images, seeds_to_ws, synthesize

    fixture = np.load(PARITY_FIXTURE)
    G = parity_generator(fixture, name, tmp_path)
    official = torch.from_numpy(fixture[f"{name}/official"].astype(np.float32))
    settings = json.loads(str(fixture["settings"]))
    assert len(settings) == official.shape[0] == 4
    for (seed, translate, rotate, psi), want in zip(settings, official, strict=True):
        with transformed_input(G, tuple(translate), rotate):
            got = synthesize(G, seeds_to_ws(G, [seed], psi=psi))[0]
            image = generate_images(G, [seed], psi=psi)[0]
        float32 = 2 * LAMBDA * network_scale(sg3_fan_ins(G)) * want.square().mean().sqrt()
        tolerance = want.abs() * 2.0**-11 + 2.0**-25 + float32
        assert ((got - want).abs() <= tolerance).all(), (seed, (got - want).abs().max(), float32)
        assert (got - want).abs().max() < 2 / 255
        official_uint8 = (want * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        assert (image.int() - official_uint8.int()).abs().max() <= 1
    assert G.synthesis.input.transform.equal(torch.eye(3))  # restored after each setting
    # The settings differ visibly: the transforms and psi are exercised, not four copies of one picture.
    assert min((official[i] - official[j]).abs().max() for i in range(4) for j in range(i)) > 0.02
    figures = json.loads(str(fixture["figures"]))[name]
    assert max(figures["max_abs_diff"]) < 1e-5 and max(figures["max_uint8_levels"]) == 0


# --------------------------------------------------------------------------------------------
# Sampling, walks and mixing on a StyleGAN3 bundle; the commands' --translate / --rotate


@pytest.fixture(scope="module")
def sg3_bundle(tmp_path_factory):
    from fewshot.checkpoint import save_bundle

    G = make_tiny(TINY_T, seed=5)
    path = save_bundle(tmp_path_factory.mktemp("sg3") / "sg3.safetensors", {"G_ema": G})
    return path, G


def _cli(args: list[str]):
    """The CLI in-process; a FewshotError surfaces as result.exception."""
    from typer.testing import CliRunner

    from fewshot.cli import app, register_commands

    register_commands()
    return CliRunner().invoke(app, [*args, "--device", "cpu"])


def _png(path: Path) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)


def _levels(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest difference of two uint8 images, in levels. The modulated conv pre-normalises the styles by their
    RMS over the whole batch (as the official code does): the same image in another batch differs by rounding."""
    return int((a.int() - b.int()).abs().max())


def _images(G, seeds, translate=None, rotate=None, psi=1.0) -> torch.Tensor:
    from fewshot.equivariance import transformed_input
    from fewshot.synthesis import generate_images

    with transformed_input(G, translate, rotate):
        return generate_images(G, seeds, psi=psi)


def test_cli_sample_translate_rotate_sets_the_input_transform(sg3_bundle, tmp_path):
    path, G = sg3_bundle
    plain, moved = tmp_path / "plain", tmp_path / "moved"
    assert _cli(["sample", str(path), "--seeds", "0-2", "--outdir", str(plain)]).exit_code == 0
    done = _cli(["sample", str(path), "--seeds", "0-2", "--translate", "0.25,-0.1", "--rotate", "30",
                 "--outdir", str(moved), "--grid", "1x3"])
    assert done.exit_code == 0, done.output
    want_plain, want_moved = _images(G, [0, 1, 2]), _images(G, [0, 1, 2], (0.25, -0.1), 30.0)
    for i in range(3):
        assert torch.equal(_png(plain / f"seed{i:04d}.png"), want_plain[i])
        assert torch.equal(_png(moved / f"seed{i:04d}.png"), want_moved[i])
    assert (want_plain.int() - want_moved.int()).abs().max() > 10  # the transform moved the picture
    assert (moved / "grid.png").is_file()


def test_cli_interpolate_equivariance_video(sg3_bundle, tmp_path):
    """One seed: the picture turns at a fixed latent, --steps + 1 frames from 0 to DEG. Several seeds: the pan
    runs along the walk, frame k moved by k/(frames-1) of TX,TY."""
    from fewshot.synthesis import seeds_to_ws, synthesize, to_uint8

    path, G = sg3_bundle
    spin = tmp_path / "spin"
    done = _cli(["interpolate", str(path), "--seeds", "3", "--rotate", "90", "--steps", "4", "--out", f"{spin}/"])
    assert done.exit_code == 0, done.output
    frames = sorted(spin.glob("frame*.png"))
    assert len(frames) == 5
    for k in (0, 2, 4):  # a frame renders in a batch of frames: rounding may cross one uint8 level
        assert _levels(_png(frames[k]), _images(G, [3], None, 90.0 * k / 4)[0]) <= 1
    assert _levels(_png(frames[0]), _png(frames[4])) > 10

    pan = tmp_path / "pan"
    done = _cli(["interpolate", str(path), "--seeds", "1,2", "--translate", "0.5,0", "--steps", "2", "--out", f"{pan}/"])
    assert done.exit_code == 0, done.output
    frames = sorted(pan.glob("frame*.png"))
    ws = seeds_to_ws(G, [1, 2])
    from fewshot.equivariance import transformed_input

    with transformed_input(G, (0.25, 0.0)):
        middle = to_uint8(synthesize(G, ws.mean(0, keepdim=True)))[0]  # lerp in w, halfway
    assert len(frames) == 3
    assert _levels(_png(frames[1]), middle) <= 1
    assert _levels(_png(frames[2]), _images(G, [2], (0.5, 0.0))[0]) <= 1


def test_cli_mix_and_walk_use_every_w_of_stylegan3(sg3_bundle, tmp_path):
    """num_ws = num_layers + 2: the input reads ws[0], layer i reads ws[i + 1], ToRGB the last."""
    from fewshot.synthesis import seeds_to_ws, style_mix_cells, synthesize, to_uint8

    path, G = sg3_bundle
    assert G.num_ws == 16
    cells = style_mix_cells(G, [1], [2], styles=[0, 15])
    ws = seeds_to_ws(G, [1, 2])
    mixed = ws[0].clone()
    mixed[[0, 15]] = ws[1][[0, 15]]
    assert torch.equal(cells[-1], to_uint8(synthesize(G, mixed[None]))[0])
    assert not torch.equal(cells[-1], cells[2])  # the row seed's own image
    done = _cli(["mix", str(path), "--rows", "1", "--cols", "2", "--styles", "0-15", "--out", str(tmp_path / "m.png")])
    assert done.exit_code == 0, done.output


def test_translate_on_stylegan2_is_one_clear_error(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import make_tiny_G

    from fewshot.checkpoint import save_bundle
    from fewshot.errors import FewshotError

    sg2 = save_bundle(tmp_path / "sg2.safetensors", {"G_ema": make_tiny_G()})
    env = {**os.environ, "FEWSHOT_HOME": str(tmp_path / "home"), "FEWSHOT_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "fewshot", "sample", str(sg2), "--seeds", "0", "--translate", "0.1,0",
                           "--outdir", str(tmp_path / "out"), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: --translate/--rotate need a StyleGAN3 generator"), done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()
    result = _cli(["interpolate", str(sg2), "--seeds", "0,1", "--rotate", "45", "--out", str(tmp_path / "w.gif")])
    assert result.exit_code != 0 and isinstance(result.exception, FewshotError)
    assert "StyleGAN3" in str(result.exception) and not (tmp_path / "w.gif").exists()


def test_sefa_directions_read_every_stylegan3_affine():
    from fewshot.editing import sefa_directions, style_affines

    G = make_tiny()
    affines = style_affines(G)
    assert len(affines) == G.num_ws and affines[0] == [G.synthesis.input.affine]
    assert [a[0] for a in affines[1:]] == [layer.affine for layer in G.synthesis.layers()]
    directions = sefa_directions(G, layers=range(1, 6), k=3)
    vectors = directions.vectors.double()
    torch.testing.assert_close(vectors @ vectors.T, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
    assert (directions.eigenvalues[:-1] >= directions.eigenvalues[1:]).all()


def test_info_describes_a_stylegan3_pickle(tmp_path):
    from conftest import make_tiny_D
    from official_format import make_official_pickle
    from typer.testing import CliRunner

    from fewshot.cli import app, register_commands

    G = make_tiny(TINY_R)
    src = make_official_pickle(tmp_path / "r.pkl", G=G, D=make_tiny_D(0), G_ema=G, augment_p=0.1)
    register_commands()
    done = CliRunner().invoke(app, ["info", str(src)])
    assert done.exit_code == 0, done.output
    assert "stylegan3 pickle" in done.output and "StyleGAN3Generator" in done.output
    assert "config=R" in done.output and "conv_kernel=1" in done.output and "channel_base=256" in done.output


def test_rosinality_export_refuses_stylegan3_in_one_line(sg3_bundle, tmp_path):
    from fewshot.checkpoint import export_rosinality
    from fewshot.errors import FewshotError

    with pytest.raises(FewshotError, match="rosinality's format holds StyleGAN2 networks"):
        export_rosinality(sg3_bundle[0], tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_stylegan2_generator_of_the_stylegan3_repository_imports(tmp_path):
    """NVlabs/stylegan3's networks_stylegan2.Generator (the NGC stylegan2-*.pkl files) records its synthesis kwargs
    flat, with fused_modconv_default among them: they are nested as fewshot's (and stylegan2-ada's) Generator takes
    them, and the convolution-path switch is dropped."""
    from conftest import make_tiny_D, make_tiny_G
    from official_format import dump_official, to_persistent

    from fewshot.checkpoint import load_checkpoint

    G = make_tiny_G(7).eval()
    flat = {k: v for k, v in G.init_kwargs.items() if k != "synthesis_kwargs"}
    flat.update(G.init_kwargs["synthesis_kwargs"], fused_modconv_default="inference_only")
    data = {"G_ema": to_persistent(G, init_kwargs=flat), "D": to_persistent(make_tiny_D(0), init_kwargs={
        "c_dim": 0, "img_resolution": 32, "img_channels": 3, "channel_base": 512, "channel_max": 64})}
    bundle = load_checkpoint(dump_official(tmp_path / "sg2-of-sg3.pkl", data))
    imported = bundle.generator
    assert type(imported).__name__ == "Generator" and imported.init_kwargs == G.init_kwargs
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        assert torch.equal(imported(z, None, noise_mode="const"), G(z, None, noise_mode="const"))
