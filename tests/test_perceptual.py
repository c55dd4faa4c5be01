"""LPIPS-VGG (fewshot.perceptual): the package's distance, a trunk from the weights registry, the embedding identity."""

from __future__ import annotations

import sys

import pytest
import torch

from fewshot.errors import FewshotError
from fewshot.perceptual import embed_uint8, load_lpips, pairwise_lpips, uint8_to_lpips

# Float64 throughout where two computations are compared: they differ only in summation order (Winograd against
# direct convolution, a norm expansion against a difference), whose float64 error, ~1e-16 relative per operation
# over < 10^4-term sums, stays orders below these bounds.
F64_REL = 1e-9


@pytest.fixture(scope="module")
def lpips64():
    return load_lpips(random_trunk=True, seed=1).double()


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def test_squared_embedding_distances_are_the_lpips_distances(lpips64):
    a, b = _images(3, seed=1), _images(3, seed=2)
    direct = lpips64(a, b)
    via = (lpips64.embed(a) - lpips64.embed(b)).square().sum(1)
    assert direct.shape == (3,) and bool((direct > 0).all())
    torch.testing.assert_close(via, direct, rtol=F64_REL, atol=0)
    grid = pairwise_lpips(lpips64.embed(a), lpips64.embed(b))  # float32 result of float64 sums
    torch.testing.assert_close(grid.diagonal().double(), direct, rtol=1e-6, atol=0)
    assert float(lpips64(a, a).abs().max()) < 1e-12  # a distance: zero on equal images


def test_lpips_is_differentiable_in_its_inputs(lpips64):
    a = _images(2, seed=3).requires_grad_(True)
    lpips64(a, _images(2, seed=4)).sum().backward()
    assert a.grad is not None and float(a.grad.abs().sum()) > 0


def test_the_trunk_is_torchvisions_vgg16_stage_by_stage(tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(5)
    vgg = torchvision.models.vgg16().features.double().eval()
    path = tmp_path / "vgg16-features.pth"
    torch.save({f"features.{k}": v.float() for k, v in vgg.state_dict().items()}, path)
    monkeypatch.setattr("fewshot.weights.resolve_weights", lambda name, p=None, flag=None: path)
    lpips = load_lpips().double()
    saved = torch.load(path, weights_only=True)  # the float32 file, as both read it
    vgg.load_state_dict({k[len("features."):]: v.double() for k, v in saved.items()})
    x = _images(2, seed=6)
    scaled = lpips.model.scaling_layer(x)
    want, h = [], scaled
    for index, layer in enumerate(vgg):
        h = layer(h)
        if index in (3, 8, 15, 22, 29):
            want.append(h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10))
    for got, ref in zip(lpips.stages(x), want, strict=True):
        torch.testing.assert_close(got, ref, rtol=F64_REL, atol=1e-12)


def test_uint8_pairwise_matches_pairs(lpips64):
    lpips = load_lpips(random_trunk=True, seed=1)  # float32, as the metrics use it
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    grid = pairwise_lpips(embed_uint8(lpips, images, batch_size=3), embed_uint8(lpips, images))
    assert grid.shape == (4, 4) and float(grid.diagonal().abs().max()) < 1e-6
    direct = lpips64(uint8_to_lpips(images[:2]).double(), uint8_to_lpips(images[2:]).double())
    # float32 trunk against float64: relative error of a few float32 roundings per conv layer (13 layers).
    torch.testing.assert_close(grid[[0, 1], [2, 3]].double(), direct, rtol=1e-3, atol=0)


def test_offline_without_vgg16_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FEWSHOT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FewshotError) as caught:
        load_lpips()
    assert "vgg16" in caught.value.message and "\n" not in caught.value.message


def test_missing_lpips_package_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)
    with pytest.raises(FewshotError, match="'lpips' package") as caught:
        load_lpips(random_trunk=True)
    assert caught.value.hint == "install it: pip install lpips"
