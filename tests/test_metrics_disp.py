"""`fewshot metrics` on a DISP bundle: the generator draws its priors from the bank the bundle carries."""

from __future__ import annotations

import torch

from fewshot.cli.metrics import _with_priors
from fewshot.generate import load_generator


def test_disp_bundle_generator_samples_priors_from_its_bank(tmp_path):
    from test_disp import disp_bundle

    path, bank = disp_bundle(tmp_path / "disp.safetensors")
    G = load_generator(path)
    assert G.c_dim == bank.priors.shape[1]
    wrapped = _with_priors(str(path), G)
    assert wrapped is not G and wrapped.c_dim == 0  # metrics code sees an unconditional generator
    z = torch.randn(3, G.z_dim)
    with torch.no_grad():
        a = wrapped(z, None, noise_mode="const")
        b = wrapped(z, None, noise_mode="const")
    assert a.shape == (3, 3, 32, 32)
    assert not torch.equal(a, b)  # a fresh mixup of instance priors per draw


def test_unconditional_generator_is_left_alone(tmp_path):
    from conftest import make_tiny_G

    from fewshot.checkpoint import save_bundle

    path = tmp_path / "G.safetensors"
    save_bundle(path, {"G_ema": make_tiny_G()})
    G = load_generator(path)
    assert _with_priors(str(path), G) is G
