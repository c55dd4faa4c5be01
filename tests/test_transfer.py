"""Transfer methods on tiny nets: freezing, AdaFM, export folding, re-initialisation, resume, description."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from float32_bounds import assert_network_close, fan_ins

from fewshot.checkpoint import load_bundle, save_bundle
from fewshot.errors import FewshotError
from fewshot.nets import Discriminator, Generator
from fewshot.registry import transfers
from fewshot.transfer import (
    build_transfer,
    default_general,
    load_transfer_bundle,
    official_freezed_count,
    parse_general,
    transfer_from_record,
)
from fewshot.transfer.freezed import FreezeD

Z_DIM = 32


def make_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(Z_DIM, 0, 32, 32, 3, mapping_kwargs={"num_layers": 2},
                     synthesis_kwargs={"channel_base": 512, "channel_max": 64})


def make_discriminator(seed: int = 0, architecture: str = "resnet", **kwargs) -> Discriminator:
    torch.manual_seed(seed)
    return Discriminator(0, 32, 3, architecture=architecture, channel_base=512, channel_max=64, **kwargs)


# (name, options, frozen G blocks, frozen D blocks, modulated G layers) - the expectations are spelled
# out here independently of the implementation's own planning code.
CASES = {
    "finetune": ("finetune", {}, [], [], []),
    "freezed": ("freezed", {"freeze_d": 2}, [], ["b32", "b16"], []),
    "general-part": ("general-part", {"general": (2, 1)}, ["synthesis.b32", "synthesis.b16"], ["b32"], []),
    "general-part-reinit": ("general-part", {"general": "2,1", "specific": "reinit", "seed": 7},
                            ["synthesis.b32", "synthesis.b16"], ["b32"], []),
    "adafm": ("adafm", {"general": (2, 1)}, ["synthesis.b32", "synthesis.b16"], ["b32"],
              [f"synthesis.b{r}.{layer}" for r in (16, 32) for layer in ("conv0", "conv1", "torgb")]),
}


def under(key: str, prefixes: list[str]) -> bool:
    return any(key.startswith(p + ".") for p in prefixes)


def expected_trainable(plain: torch.nn.Module, frozen: list[str], modulated: list[str]) -> set[str]:
    names = {k for k, _ in plain.named_parameters() if not under(k, frozen)}
    for layer in modulated:
        names |= {f"{layer}.adafm_gamma", f"{layer}.adafm_beta"}
    return names


def gan_steps(G: Generator, D: Discriminator, transfer, steps: int = 3, lr: float = 0.01) -> None:
    """A minimal non-saturating GAN loop; the nets are toggled wholesale as the official phase loop does."""
    opt_G = torch.optim.Adam(transfer.trainable_parameters(G), lr=lr, betas=(0.0, 0.99))
    opt_D = torch.optim.Adam(transfer.trainable_parameters(D), lr=lr, betas=(0.0, 0.99))
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        z = torch.randn([4, Z_DIM], generator=gen)
        real = torch.rand([4, 3, 32, 32], generator=gen) * 2 - 1
        G.requires_grad_(False)
        D.requires_grad_(True)
        fake = G(z)
        loss_D = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        G.requires_grad_(True)
        D.requires_grad_(False)
        loss_G = F.softplus(-D(G(z))).mean()
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()
    D.requires_grad_(True)


@pytest.mark.parametrize("case", list(CASES))
def test_frozen_tensors_are_bit_identical_after_adam_steps(case: str) -> None:
    name, options, frozen_g, frozen_d, modulated = CASES[case]
    G, D = make_generator(), make_discriminator()
    t = build_transfer(name, **options)
    t.apply(G, D)
    before_G = {k: v.clone() for k, v in G.state_dict().items()}
    before_D = {k: v.clone() for k, v in D.state_dict().items()}

    gan_steps(G, D, t)

    after_G, after_D = G.state_dict(), D.state_dict()
    for key in before_G:
        if under(key, frozen_g) and "adafm_" not in key:
            assert torch.equal(before_G[key], after_G[key]), key
    for key in before_D:
        if under(key, frozen_d):
            assert torch.equal(before_D[key], after_D[key]), key
    # ... and what should train did move.
    assert not torch.equal(before_G["mapping.fc0.weight"], after_G["mapping.fc0.weight"])
    assert not torch.equal(before_D["b4.fc.weight"], after_D["b4.fc.weight"])
    for layer in modulated:
        assert not torch.equal(before_G[f"{layer}.adafm_gamma"], after_G[f"{layer}.adafm_gamma"]), layer
    if not frozen_d:
        assert not torch.equal(before_D["b32.conv0.weight"], after_D["b32.conv0.weight"])


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_reach_exactly_the_trainable_parameters(case: str) -> None:
    name, options, frozen_g, frozen_d, modulated = CASES[case]
    G, D = make_generator(), make_discriminator()
    want_G = expected_trainable(make_generator(), frozen_g, modulated)
    want_D = expected_trainable(make_discriminator(), frozen_d, [])
    t = build_transfer(name, **options)
    t.apply(G, D)
    assert {n for n, p in G.named_parameters() if any(p is q for q in t.trainable_parameters(G))} == want_G
    assert t.trainable_names(D) == want_D

    z = torch.randn([4, Z_DIM])
    F.softplus(-D(G(z))).mean().backward()
    assert {n for n, p in G.named_parameters() if p.grad is not None} == want_G
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    loss_D = F.softplus(D(G(z).detach())).mean() + F.softplus(-D(torch.rand([4, 3, 32, 32]) * 2 - 1)).mean()
    loss_D.backward()
    assert {n for n, p in D.named_parameters() if p.grad is not None} == want_D
    assert all(p.grad is None for p in G.parameters())


@pytest.mark.parametrize("training", [False, True], ids=["fused", "non-fused"])
def test_adafm_at_identity_reproduces_the_base_images_exactly(training: bool) -> None:
    base = make_generator().train(training)
    adapted = copy.deepcopy(base)
    build_transfer("adafm", general=(3, 1)).apply(adapted, None)
    z = torch.randn([3, Z_DIM])
    base.mapping.w_avg_beta = adapted.mapping.w_avg_beta = None  # no w_avg update: compare pure forwards
    with torch.no_grad():
        assert torch.equal(adapted(z, noise_mode="const"), base(z, noise_mode="const"))


def test_export_folds_adafm_into_a_plain_generator(tmp_path) -> None:
    G = make_generator().eval()
    t = build_transfer("adafm", general=(2, 1))
    t.apply(G, None)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("adafm_gamma"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("adafm_beta"):
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    z = torch.randn([3, Z_DIM])
    with torch.no_grad():
        unfolded = G(z, noise_mode="const")
        base_like = make_generator().eval()(z, noise_mode="const")
    assert (unfolded - base_like).abs().max() > 1e-2  # the perturbation matters

    plain = t.export_generator(G)
    assert type(plain) is Generator
    assert list(plain.state_dict()) == list(make_generator().state_dict())
    with torch.no_grad():
        # Float32 rounding through the layers (float32_bounds); the folded weights round once more each.
        assert_network_close(plain(z, noise_mode="const"), unfolded, fan_ins(plain) + [1] * len(fan_ins(plain)))
    # The export goes through the ordinary bundle path (what `fewshot sample` uses).
    path = save_bundle(tmp_path / "export.safetensors", {"G_ema": plain})
    reloaded = load_bundle(path).generator
    with torch.no_grad():
        assert_network_close(reloaded(z, noise_mode="const"), unfolded, fan_ins(plain) + [1] * len(fan_ins(plain)))
    # Without AdaFM the export is the generator itself (its state_dict is already standard).
    G2 = make_generator()
    t2 = build_transfer("general-part", general=(2, 1))
    t2.apply(G2, None)
    assert t2.export_generator(G2) is G2
    assert list(G2.state_dict()) != [] and set(G2.state_dict()) == set(make_generator().state_dict())


def test_reinit_changes_only_the_specific_part_and_is_seeded() -> None:
    base = make_generator(seed=0)
    G, G_ema = copy.deepcopy(base), copy.deepcopy(base)
    t = build_transfer("general-part", general=(2, 1), specific="reinit", seed=123)
    rng_before = torch.random.get_rng_state()
    t.apply(G, None)
    t.apply_ema(G_ema)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the trainer's RNG is untouched

    fresh = make_generator(seed=123).state_dict()
    base_state, new_state = base.state_dict(), G.state_dict()
    general = ["synthesis.b32", "synthesis.b16"]
    for key, value in new_state.items():
        if under(key, general):
            assert torch.equal(value, base_state[key]), key
        else:
            assert torch.equal(value, fresh[key]), key  # exactly a newly constructed net's values
    for key in ("mapping.fc0.weight", "synthesis.b4.const", "synthesis.b8.conv1.weight"):
        assert not torch.equal(new_state[key], base_state[key]), key
    for key, value in G_ema.state_dict().items():
        assert torch.equal(value, new_state[key]), key


def test_resume_apply_then_load(tmp_path) -> None:
    t = build_transfer("adafm", general=(2, 1), specific="reinit", seed=5, adafm_start_kimg=0)
    G, D = make_generator(), make_discriminator()
    t.apply(G, D)
    G_ema = copy.deepcopy(G)
    t.apply_ema(G_ema)  # idempotent on a copy of an adapted net
    gan_steps(G, D, t, steps=2)
    path = save_bundle(tmp_path / "snap.safetensors", {"G": G, "G_ema": G_ema, "D": D},
                       training={"transfer": t.options})

    # Fresh nets + apply + plain load_state_dict: keys match, outputs equal.
    t_resumed = transfer_from_record(t.options)
    G2, D2 = make_generator(seed=99), make_discriminator(seed=99)
    t_resumed.apply(G2, D2)
    G2.load_state_dict(G.state_dict())
    D2.load_state_dict(D.state_dict())
    z = torch.randn([4, Z_DIM])
    img = torch.rand([4, 3, 32, 32]) * 2 - 1
    G.eval(), G2.eval()
    with torch.no_grad():
        assert torch.equal(G2(z, noise_mode="const"), G(z, noise_mode="const"))
        assert torch.equal(D2(img), D(img))

    # The bundle path: plain load_bundle refuses the AdaFM keys with one clear error ...
    with pytest.raises(FewshotError):
        load_bundle(path)
    # ... the transfer-aware loader rebuilds everything.
    bundle = load_transfer_bundle(path, transfer_from_record(bundle_training(path)["transfer"]))
    with torch.no_grad():
        assert torch.equal(bundle.networks["G"].eval()(z, noise_mode="const"), G(z, noise_mode="const"))
        assert torch.equal(bundle.networks["D"](img), D(img))
    assert len(t_resumed.trainable_parameters(bundle.networks["G"])) == len(t.trainable_parameters(G))


def bundle_training(path) -> dict:
    from fewshot.checkpoint import read_header

    return read_header(path).training


def test_adafm_start_gate_holds_gamma_beta_until_kimg() -> None:
    G, D = make_generator(), make_discriminator()
    t = build_transfer("adafm", general=(2, 1), adafm_start_kimg=1.0)
    t.apply(G, D)
    z = torch.randn([2, Z_DIM])

    def grads() -> tuple[bool, bool]:
        G.zero_grad(set_to_none=True)
        F.softplus(-D(G(z))).mean().backward()
        named = dict(G.named_parameters())
        return named["synthesis.b32.conv1.adafm_gamma"].grad is not None, named["mapping.fc0.weight"].grad is not None

    assert grads() == (False, True)
    assert t.on_kimg(0.5) is False
    assert grads() == (False, True)
    assert t.on_kimg(1.0) is True
    assert grads() == (True, True)


def test_freezed_matches_the_official_layer_convention() -> None:
    for architecture in ("resnet", "skip", "orig"):
        for n_blocks in range(4):
            D_ref = make_discriminator(architecture=architecture)
            official = FreezeD.official_layers(D_ref, n_blocks)
            assert official == official_freezed_count(n_blocks, architecture)
            # A D built with the official freeze_layers stores exactly the same tensors as buffers.
            D_official = make_discriminator(architecture=architecture, block_kwargs={"freeze_layers": official})
            D_ours = make_discriminator(architecture=architecture)
            build_transfer("freezed", freeze_d=n_blocks).apply(None, D_ours)
            assert {n for n, _ in D_ours.named_parameters()} == {n for n, _ in D_official.named_parameters()}
    assert [official_freezed_count(n) for n in range(1, 5)] == [4, 7, 10, 13]
    text = build_transfer("freezed", freeze_d=2).describe(make_generator(), make_discriminator())
    assert "--freezed=7" in text


def test_describe_lists_every_block_with_its_status() -> None:
    G, D = make_generator(), make_discriminator()
    t = build_transfer("adafm", general=(2, 1), specific="reinit")
    before = t.describe(G, D)
    t.apply(G, D)
    after = t.describe(G, D)
    assert before == after
    lines = after.splitlines()

    def row(net: str, block: str) -> str:
        return next(line for line in lines if line.split()[:2] == [net, block])

    for block in ("mapping", "synthesis.b4", "synthesis.b8", "synthesis.b16", "synthesis.b32"):
        assert row("G", block)
    for block in ("b32", "b16", "b8", "b4"):
        assert row("D", block)
    assert "frozen + AdaFM" in row("G", "synthesis.b32")
    assert "re-initialised" in row("G", "synthesis.b4")
    assert row("D", "b32").split()[2] == "frozen" and row("D", "b32").split()[-1] == "0"
    # b32: conv0 16x32, conv1 16x16, torgb 3x16 -> 2 * (512 + 256 + 48) gamma/beta values.
    assert row("G", "synthesis.b32").split()[-1] == f"{2 * (512 + 256 + 48):,}"
    trainable_G = sum(p.numel() for p in t.trainable_parameters(G))
    assert f"{trainable_G:,} trainable" in after


def test_bad_options_are_one_clear_error() -> None:
    with pytest.raises(FewshotError, match="unknown transfer method"):
        build_transfer("freeze-everything")
    with pytest.raises(FewshotError, match="unknown transfer option"):
        build_transfer("adafm", gamma=2)
    with pytest.raises(FewshotError, match="no effect"):
        build_transfer("adafm", freeze_d=2)
    with pytest.raises(FewshotError, match="no effect"):
        build_transfer("finetune", specific="reinit")
    with pytest.raises(FewshotError, match="specific"):
        build_transfer("general-part", specific="scratch")
    with pytest.raises(FewshotError, match="general"):
        build_transfer("general-part", general="lots")
    with pytest.raises(FewshotError, match="freeze_d"):
        build_transfer("freezed", freeze_d=-1)
    with pytest.raises(FewshotError, match="at least one"):
        build_transfer("adafm", general=(0, 2))
    with pytest.raises(FewshotError, match="4 synthesis blocks"):
        build_transfer("general-part", general=(5, 1)).apply(make_generator(), None)
    with pytest.raises(FewshotError, match="3 blocks"):
        build_transfer("freezed", freeze_d=4).apply(None, make_discriminator())
    G = make_generator()
    build_transfer("adafm", general=(1, 1)).apply(G, None)
    with pytest.raises(FewshotError, match="different transfer"):
        build_transfer("adafm", general=(2, 1)).apply(G, None)
    # Neutral values of options a method does not use are accepted (a config passes them all).
    t = build_transfer("finetune", freeze_d=0, general=None, specific="finetune", adafm_start_kimg=0, r1_fake=True)
    assert t.r1_fake is True


def test_names_parsing_and_defaults() -> None:
    assert set(transfers.names()) == {"finetune", "freezed", "general-part", "adafm"}
    assert build_transfer("general_part").name == "general-part"
    assert parse_general("G4D2") == (4, 2) and parse_general("4, 2") == (4, 2) and parse_general([3, 1]) == (3, 1)
    assert [default_general(r) for r in (32, 64, 128, 256, 1024)] == [(1, 1), (2, 2), (3, 2), (4, 2), (6, 2)]
    t = build_transfer("adafm")
    t.apply(make_generator(), make_discriminator())
    assert (t.general_g, t.general_d) == (1, 1)
    for name in transfers.names():
        assert transfer_from_record(build_transfer(name).options).options == build_transfer(name).options


def test_help_texts_import_without_torch() -> None:
    # Every method module, its options and their help texts load without torch (the CLI reads them when built).
    code = (
        "import sys, dataclasses; from fewshot.registry import transfers, option_info; "
        "from fewshot.transfer import default_general; "
        "HELP = {f.name: option_info(f).help for e in transfers.entries() for f in dataclasses.fields(e.options)}; "
        "assert 'torch' not in sys.modules, 'torch imported'; assert '3N+1' in HELP['freeze_d']"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_builds_each_method_from_its_options_with_one_grammar_for_general() -> None:
    assert [transfers.canonical(a) for a in ("transfergan", "freeze-d", "gmdn", "generalpart")] == \
        ["finetune", "freezed", "general-part", "general-part"]
    for name in ("general-part", "adafm"):
        entry = transfers.get(name)
        spellings = ("G2D1", "g2d1", "2,1", " 2 , 1 ", [2, 1], (2, 1))
        assert {entry.make_options({"general": s}).general for s in spellings} == {(2, 1)}
        assert entry.make_options({"general": "none"}).general is None
        assert entry.make_options({}).general is None  # the resolution's default, filled when applied
        with pytest.raises(FewshotError, match="general"):
            entry.make_options({"general": "G2"})
    with pytest.raises(FewshotError, match="at least one"):
        transfers.get("adafm").make_options({"general": "G0D2"})
    assert transfers.get("general-part").make_options({"general": "G0D2"}).general == (0, 2)
    with pytest.raises(FewshotError, match="reinit"):
        transfers.get("general-part").make_options({"specific": "scratch"})

    options = transfers.get("adafm").make_options({"general": "G2D1", "specific": "reinit"})
    t = transfers.build("adafm", options, r1_fake=True, seed=4)
    assert t.settings == options and t.name == "adafm" and t.r1_fake and t.seed == 4
    assert t.options == build_transfer("adafm", general=(2, 1), specific="reinit", r1_fake=True, seed=4).options
    assert transfers.build("freezed", None).freeze_d == transfers.get("freezed").options().freeze_d
    with pytest.raises(FewshotError, match="takes AdaFMOptions"):
        transfers.build("adafm", transfers.get("freezed").make_options({"freeze_d": 1}))


def test_adafm_torgb_false_keeps_torgb_plainly_frozen() -> None:
    G, D = make_generator(), make_discriminator()
    t = transfers.build("adafm", transfers.get("adafm").make_options({"general": "2,1", "adafm_torgb": "false"}))
    t.apply(G, D)
    convs = [f"synthesis.b{r}.{layer}" for r in (16, 32) for layer in ("conv0", "conv1")]
    assert t.trainable_names(G) == expected_trainable(make_generator(), ["synthesis.b32", "synthesis.b16"], convs)
    assert type(G.synthesis.b32.torgb).__name__ == "ToRGBLayer"
    assert "ToRGB not modulated" in t.header() and "frozen + AdaFM (conv0,conv1)" in t.describe(G, D)
    assert t.options["adafm_torgb"] is False
    assert transfer_from_record(t.options).options == t.options


def test_adafm_layers_replace_the_plain_ones_holding_the_same_tensors() -> None:
    import pickle

    from fewshot.nets.generator import SynthesisLayer
    from fewshot.transfer import AdaFMSynthesisLayer

    G = make_generator().eval()
    plain_layer = G.synthesis.b32.conv1
    weight_storage = plain_layer.weight.data_ptr()
    frozen_only = make_generator()
    build_transfer("general-part", general=(1, 1)).apply(frozen_only, None)
    rng_before = torch.random.get_rng_state()
    build_transfer("adafm", general=(1, 1)).apply(G, None)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # building the layers draws no random numbers
    layer = G.synthesis.b32.conv1
    assert layer is not plain_layer and type(plain_layer) is SynthesisLayer  # a new instance; no class swap
    assert type(layer) is AdaFMSynthesisLayer and isinstance(layer, SynthesisLayer)
    assert layer.weight.data_ptr() == weight_storage and "weight" in layer._buffers  # the base weight, frozen
    # AdaFM adds gamma and beta to each modulated layer; every other key is the frozen net's, in its order.
    adafm_keys = [k for k in G.state_dict() if "adafm_" in k]
    assert [k for k in G.state_dict() if "adafm_" not in k] == list(frozen_only.state_dict())
    assert adafm_keys == [f"synthesis.b32.{m}.adafm_{p}" for m in ("conv0", "conv1", "torgb") for p in ("gamma", "beta")]
    z = torch.randn([2, Z_DIM])
    with torch.no_grad():
        G.synthesis.b32.conv1.adafm_beta.add_(0.01)
        want = G(z, noise_mode="const")
        for other in (copy.deepcopy(G), pickle.loads(pickle.dumps(G))):
            assert type(other.synthesis.b32.conv1) is AdaFMSynthesisLayer
            assert torch.equal(other(z, noise_mode="const"), want)
