"""CDC and EWC: the distance-consistency term against a direct computation, the EWC penalty and Fisher estimate
by hand, the hooks (anchors, patch-level D), and one tick of each preset that resumes exactly."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_D, make_tiny_G
from float32_bounds import gamma

from fewshot.checkpoint import load_bundle
from fewshot.config import resolve_config
from fewshot.errors import FewshotError
from fewshot.regularizers._base import TrainingContext
from fewshot.regularizers._cdc_term import CDC, distance_consistency, synthesis_layers
from fewshot.regularizers._ewc import EWC, estimate_fisher, ewc_penalty
from fewshot.train.loop import train

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"


def official_distance(source: list[torch.Tensor], adapted: list[torch.Tensor], row_layers: list[int]) -> torch.Tensor:
    """The official code's loops: per row i, cosine similarity to every j != i at layer row_layers[i], softmax,
    then nn.KLDivLoss()(log p_adapted, p_source) (mean over the N(N-1) entries)."""
    n = source[0].shape[0]
    sim = torch.nn.CosineSimilarity()

    def distances(feats: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros(n, n - 1, dtype=feats[0].dtype)
        for i in range(n):
            col = 0
            for j in range(n):
                if i != j:
                    layer = feats[row_layers[i]]
                    out[i, col] = sim(layer[i].reshape(1, -1), layer[j].reshape(1, -1))[0]
                    col += 1
        return torch.softmax(out, dim=1)

    return torch.nn.KLDivLoss(reduction="mean")(torch.log(distances(adapted)), distances(source))


def toy_features(seed: int, n: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 4, 4, generator=gen, dtype=torch.float64),
            torch.randn(n, 6, 2, 2, generator=gen, dtype=torch.float64)]


def test_distance_consistency_equals_the_official_loops_on_toy_features():
    source, adapted = toy_features(0), toy_features(1)
    rows = [1, 0, 1, 1, 0]
    ours = distance_consistency(source, adapted, torch.tensor(rows))
    expected = official_distance(source, adapted, rows)
    assert ours > 0
    assert math.isclose(float(ours), float(expected), rel_tol=1e-12)
    # "all": the mean over layers of the term with every row at that layer.
    both = distance_consistency(source, adapted, None)
    per_layer = [official_distance(source, adapted, [k] * 5) for k in (0, 1)]
    assert math.isclose(float(both), float(sum(per_layer) / 2), rel_tol=1e-12)
    # Equal similarity structure (a positive rescaling of every feature vector) costs nothing.
    assert float(distance_consistency(source, [3 * f for f in source], torch.tensor(rows))) < 1e-15


def _context(G, D, source_G=None, source_D=None, seed=0, num_images=10) -> TrainingContext:
    nets = {"G": source_G if source_G is not None else copy.deepcopy(G),
            "D": source_D if source_D is not None else copy.deepcopy(D)}
    return TrainingContext(G=G, D=D, g_parameters=list(G.parameters()), source=lambda: nets,
                           device=torch.device("cpu"), seed=seed, num_images=num_images)


def test_cdc_is_zero_when_the_adapted_G_is_the_source_and_pulls_G_back_otherwise():
    G, D = make_tiny_G(0), make_tiny_D(0)
    for layers in ("sampled", "all"):
        cdc = CDC(weight=1000.0, layers=layers)
        cdc.bind(_context(G, D))
        fake = torch.zeros(2, 3, 32, 32)
        assert float(cdc.generator_loss(fake).detach()) == 0.0
    with torch.no_grad():  # adapt: G's last block drifts from the source
        G.synthesis.b32.conv0.weight.add_(torch.randn_like(G.synthesis.b32.conv0.weight))
        G.synthesis.b16.conv1.weight.mul_(-1)
    G.requires_grad_(True)
    cdc = CDC(weight=1000.0, layers="all", feature_batch=6)
    cdc.bind(_context(G, D, source_G=make_tiny_G(0)))
    term = cdc.generator_loss(torch.zeros(2, 3, 32, 32))
    assert term > 0
    term.backward()
    assert G.synthesis.b32.conv0.weight.grad.abs().sum() > 0
    assert len(synthesis_layers(G)) == 1 + 2 * 3  # 4x4 conv1, then conv0 and conv1 at 8, 16, 32 px


def test_cdc_hooks_anchor_batches_and_patch_level_logits():
    G, D = make_tiny_G(0), make_tiny_D(0)
    cdc = CDC(weight=1.0, anchor_interval=4, anchor_std=0.1, patch_resolution=32)
    cdc.bind(_context(G, D, num_images=3))
    assert cdc.anchors.shape == (3, G.z_dim)
    z = torch.randn(5, G.z_dim)
    near = cdc.phase_latents("Dmain", 8, z)  # batch 8: an anchor batch
    assert not torch.equal(near, z)
    nearest = torch.cdist(near, cdc.anchors).min(dim=1).values
    assert (nearest < 0.1 * math.sqrt(G.z_dim) * 2).all()  # within a few std of an anchor
    images = torch.randn(5, 3, 32, 32)
    assert cdc.discriminate(D, images, None) is None  # anchors: the image-level D
    assert cdc.phase_latents("Greg", 8, z) is z  # path length keeps its own latents
    assert cdc.phase_latents("Gmain", 9, z) is z  # other batches: the loop's latents ...
    patches = cdc.discriminate(D, images, None)  # ... and D's 16 px map (half of 32 px) through the head
    assert patches.shape == (5, 16 * 16)
    cdc.phase_latents("Dreg", 9, z)
    assert cdc.discriminate(D, images, None).shape == (5, 1)  # R1 on the mean patch logit
    assert [p.shape for p in cdc.discriminator_parameters()] == [(1, D.b32.conv1.out_channels, 3, 3), (1,)]
    # The state a snapshot keeps gives the same anchors and head back.
    other = CDC(weight=1.0, anchor_interval=4, patch_resolution=32)
    other.bind(_context(G, D, num_images=3, seed=5))
    other.load_training_state(cdc.training_state())
    assert torch.equal(other.anchors, cdc.anchors) and torch.equal(other.head.weight, cdc.head.weight)


def test_ewc_penalty_equals_a_hand_computation():
    theta = [torch.tensor([1.0, 2.0]), torch.tensor([[0.5]])]
    source = [torch.tensor([0.0, 0.0]), torch.tensor([[1.5]])]
    fisher = [torch.tensor([3.0, 4.0]), torch.tensor([[10.0]])]
    assert float(ewc_penalty(theta, source, fisher)) == 3 * 1 + 4 * 4 + 10 * 1  # 29

    G, D = make_tiny_G(0), make_tiny_D(0)
    ewc = EWC(weight=2.0, fisher_samples=2, fisher_batch=1)
    ewc.bind(_context(G, D))
    assert float(ewc.generator_loss(torch.zeros(1))) == 0.0  # at the source
    name = "synthesis.b16.conv1.weight"
    index = [n for n, _ in G.named_parameters()].index(name)
    delta = torch.randn_like(G.get_parameter(name))
    with torch.no_grad():
        G.get_parameter(name).add_(delta)
    expected = 2.0 * float((ewc._fisher[index].double() * delta.double().square()).sum())
    assert math.isclose(float(ewc.generator_loss(torch.zeros(1))), expected, rel_tol=gamma(delta.numel() + 4))


def test_fisher_estimate_on_a_tiny_G_is_the_mean_squared_gradient_of_the_loss():
    G, D = make_tiny_G(0).eval(), make_tiny_D(0)
    G.requires_grad_(False)
    D.requires_grad_(False)
    params = [G.synthesis.b8.conv1.weight, G.mapping.fc0.bias, G.synthesis.b32.torgb.bias]
    before = torch.get_rng_state()
    fisher = estimate_fisher(G, D, params, samples=3, batch=1, seed=7)
    assert torch.equal(torch.get_rng_state(), before)  # its own stream: the run's draws are untouched
    assert not any(p.requires_grad for p in params)

    torch.manual_seed(7)
    expected = [torch.zeros_like(p) for p in params]
    for p in params:
        p.requires_grad_(True)
    for _ in range(3):  # by hand: -log sigmoid(D(G(z))) of one image at a time, squared gradients averaged
        z = torch.randn(1, G.z_dim)
        loss = F.softplus(-D(G.synthesis(G.mapping(z, None, skip_w_avg_update=True)))).mean()
        for total, grad in zip(expected, torch.autograd.grad(loss, params), strict=True):
            total.add_(grad.square(), alpha=1 / 3)
    for p in params:
        p.requires_grad_(False)
    for ours, theirs in zip(fisher, expected, strict=True):
        assert (ours >= 0).all() and ours.abs().sum() > 0
        assert torch.equal(ours, theirs)  # the same operations in the same order
    again = estimate_fisher(G, D, params, samples=3, batch=1, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(fisher, again, strict=True))


def test_ewc_refuses_a_fisher_batch_that_does_not_split_into_minibatch_std_groups():
    G, D = make_tiny_G(0), make_tiny_D(0)  # mbstd group 4
    with pytest.raises(FewshotError, match="minibatch-stddev"):
        EWC(weight=1.0, fisher_samples=6, fisher_batch=6).bind(_context(G, D))


# ---- one tick of each preset, resumed exactly ---------------------------------------------------------------

@pytest.fixture(scope="module")
def parity_fixtures(tmp_path_factory):
    import tick_parity

    return tick_parity._fixtures(tmp_path_factory.mktemp("fixtures"))


FAST = {"cdc": {"regularizers.cdc.anchor_interval": 3},  # batches 0 and 3 from the anchors, 1 and 2 patch-level
        "ewc": {"regularizers.ewc.fisher_samples": 8}}


def _tiny(preset: str, tmp_path: Path, fixtures: dict[str, str], **extra):
    import tick_parity

    values = dict(tick_parity.TINY, outdir=str(tmp_path / "runs"), name=preset, base=fixtures["base"], **FAST[preset])
    values.update(extra)
    return resolve_config(preset, values)


@pytest.mark.parametrize("preset", ["cdc", "ewc"])
def test_one_tick_of_the_preset_resumes_exactly(preset, tmp_path, parity_fixtures):
    quiet = lambda _m: None  # noqa: E731
    straight = train(_tiny(preset, tmp_path, parity_fixtures, kimg=0.016, name="straight"), progress=False,
                     echo=quiet, plan=False)
    first = train(_tiny(preset, tmp_path, parity_fixtures, kimg=0.008, name="split"), progress=False, echo=quiet)
    resumed = train(_tiny(preset, tmp_path, parity_fixtures), resume=str(first), kimg_override=0.016,
                    progress=False, echo=quiet)
    from safetensors.torch import load_file

    a, b = load_file(str(straight / "final.safetensors")), load_file(str(resumed / "final.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in log] == [0.008, 0.016] and all(r["loss_reg"] > 0 for r in log)
    snap = load_bundle(sorted((resumed / "checkpoints").glob("snapshot-*.safetensors"))[-1], with_state=True)
    if preset == "cdc":  # the anchors and the trained patch head travel in the snapshot
        assert "regularizers.cdc.anchors" in snap.state_tensors
        head = snap.state_tensors["regularizers.cdc.head.weight"]
        fresh = load_bundle(sorted((first / "checkpoints").glob("snapshot-*.safetensors"))[0], with_state=True)
        assert not torch.equal(head, fresh.state_tensors["regularizers.cdc.head.weight"])
    base = load_bundle(parity_fixtures["base"])
    assert not torch.equal(base.networks["G"].synthesis.b32.conv1.weight,
                           load_bundle(resumed / "final.safetensors").networks["G"].synthesis.b32.conv1.weight)


def test_cdc_and_ewc_from_scratch_are_refused_with_the_remedy(tmp_path):
    import tick_parity

    cfg = resolve_config("cdc", dict(tick_parity.TINY, outdir=str(tmp_path), base="none"))
    with pytest.raises(FewshotError, match="base"):
        train(cfg, progress=False, echo=lambda _m: None, plan=False)


# ---- real images: the acceptance run ----------------------------------------------------------------------

@pytest.mark.realdata
@pytest.mark.skipif(not (DATA / "sketches-10").is_dir(), reason="../shared/data is not available")
def test_cdc_on_ten_sketches_trains_resumes_exactly_and_measures_each_tick(tmp_path, parity_fixtures, monkeypatch):
    from test_metrics import _random_inception_state

    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(_random_inception_state(), weights)
    registry = tmp_path / "weights.toml"  # no hash: the random test weights are accepted
    registry.write_text('[inception-v3-fid]\nfilename = "pt_inception-2015-12-05-6726825d.pth"\n'
                        'url = "http://127.0.0.1:9/x.pth"\n')
    monkeypatch.setenv("FEWSHOT_WEIGHTS_REGISTRY", str(registry))
    monkeypatch.setenv("FEWSHOT_WEIGHTS_INCEPTION_V3_FID", str(weights))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    data = dict(data=str(DATA / "sketches-10"), max_images=None)
    extra = dict(data, metrics="kid", metrics_every=1, metrics_n=4)
    # The straight run measures nothing: measuring must not change the training either.
    straight = train(_tiny("cdc", tmp_path, parity_fixtures, kimg=0.016, name="straight", **data), progress=False,
                     echo=lambda _m: None, plan=False)
    first = train(_tiny("cdc", tmp_path, parity_fixtures, kimg=0.008, name="split", **extra), progress=False,
                  echo=lambda _m: None, plan=False)
    resumed = train(_tiny("cdc", tmp_path, parity_fixtures, **extra), resume=str(first), kimg_override=0.016,
                    progress=False, echo=lambda _m: None, plan=False)
    from safetensors.torch import load_file

    a, b = load_file(str(straight / "final.safetensors")), load_file(str(resumed / "final.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in rows] == [0.008, 0.016] and all(math.isfinite(r["kid"]) for r in rows)
