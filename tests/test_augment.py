"""Augmentation: the ADA p rule, pipeline invariants, double backward, DiffAugment, APA, resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from float32_bounds import LAMBDA, U32, U64, assert_within, dot_sigma
from PIL import Image

from fewshot.augment import AUGMENTS, PIPELINES, build_augment, preview_grid
from fewshot.augment.diffaug import cutout_mask
from fewshot.errors import FewshotError


def _images(batch: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=gen) * 2 - 1


class TinyD(torch.nn.Module):
    """A small discriminator-shaped net: conv, leaky ReLU, mean, one logit per image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.nn.functional.leaky_relu(self.conv(x), 0.2).mean(dim=(2, 3)))


# -- registry ---------------------------------------------------------------------------------


def test_registry_names_and_errors() -> None:
    assert {"none", "ada", "diffaug", "apa", "ada+apa"} <= set(AUGMENTS)
    for name in ("none", "ada", "diffaug", "apa", "ada+apa"):
        aug = build_augment(name, p=0.0, target=0.6, ada_kimg=100, interval=4)
        assert aug.p.ndim == 0 and aug.p.dtype == torch.float32
    assert build_augment("ada").adaptive and build_augment("apa").adaptive and build_augment("ada+apa").adaptive
    assert not build_augment("diffaug").adaptive and not build_augment("none").adaptive
    assert float(build_augment("diffaug", p=0.0).p) == 1.0  # always on, reported as 1
    with pytest.raises(FewshotError, match="unknown augmentation"):
        build_augment("mixup")
    with pytest.raises(FewshotError, match="does not take"):
        build_augment("apa", pipeline="bgc")
    with pytest.raises(FewshotError, match="unknown ADA pipeline"):
        build_augment("ada", pipeline="xyz")
    with pytest.raises(FewshotError, match="unknown ADA option"):
        build_augment("ada", wobble=1)
    with pytest.raises(FewshotError, match=r"\[0, 1\]"):
        build_augment("ada", p=1.5)
    with pytest.raises(FewshotError, match="policy"):
        build_augment("diffaug", policy="color,blur")


# -- the ADA p rule ------------------------------------------------------------------------------


def test_ada_p_update_exact_after_interval_and_clamped() -> None:
    aug = build_augment("ada", p=0.0, target=0.6, ada_kimg=1, interval=4)
    step = 10 * 4 / 1000  # batch 10, interval 4, ada_kimg 1
    mostly_real = torch.tensor([1.0, 2.0, 3.0, -1.0, 5.0, 0.5, 0.1, 4.0, 2.0, 1.0])  # rt = 0.8
    for batch in range(4):
        assert float(aug.p) == 0.0, f"p moved before the interval ended (batch {batch})"
        aug.accumulate(mostly_real)
        aug.update(10)
    assert float(aug.p) == pytest.approx(step, abs=1e-7)
    assert aug.stats() == pytest.approx({"p": step, "rt": 0.8}, abs=1e-6)
    # Statistics were reset: four batches below target bring p back down, and further ones clamp at 0.
    for _ in range(12):
        aug.accumulate(-torch.ones(10))
        aug.update(10)
    assert float(aug.p) == 0.0 and aug.stats()["rt"] == -1.0
    # Clamped at 1 (the official code is not).
    high = build_augment("ada", p=0.99, ada_kimg=1)
    for _ in range(4):
        high.accumulate(torch.ones(10))
        high.update(10)
    assert float(high.p) == 1.0
    # rt exactly at target leaves p unchanged; no statistics leaves p unchanged.
    level = build_augment("ada", p=0.5, target=0.0, ada_kimg=1)
    for _ in range(4):
        level.accumulate(torch.tensor([1.0, -1.0]))
        level.update(10)
    for _ in range(4):
        level.update(10)
    assert float(level.p) == 0.5


def test_non_adaptive_methods_measure_rt_but_keep_p() -> None:
    for name in ("none", "diffaug"):
        aug = build_augment(name, ada_kimg=1)
        before = float(aug.p)
        for _ in range(4):
            aug.accumulate(torch.ones(8))
            aug.update(8)
        assert float(aug.p) == before and aug.stats()["rt"] == 1.0


def test_state_dict_round_trip_resumes_p_and_statistics() -> None:
    logits = [torch.randn(6, generator=torch.Generator().manual_seed(i)) + 1 for i in range(11)]
    straight = build_augment("ada", ada_kimg=0.1)
    for i in range(11):
        straight.accumulate(logits[i])
        straight.update(6)

    first = build_augment("ada", ada_kimg=0.1)
    for i in range(6):  # stop in the middle of an interval
        first.accumulate(logits[i])
        first.update(6)
    state = {k: v.clone() for k, v in first.state_dict().items()}
    assert {"p", "sign_sum", "sign_count", "batches_since_update", "last_rt"} <= set(state)
    resumed = build_augment("ada", ada_kimg=0.1)
    resumed.load_state_dict(state)
    assert resumed.stats() == first.stats()
    for i in range(6, 11):
        resumed.accumulate(logits[i])
        resumed.update(6)
    assert resumed.stats() == straight.stats()
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_apa_state_round_trips_through_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    aug = build_augment("ada+apa", p=0.25)
    aug.remember_fakes(_images(4, 8))
    save_file(aug.state_dict(), tmp_path / "aug.safetensors")
    fresh = build_augment("ada+apa")
    assert fresh.stored_fakes.numel() == 0
    fresh.load_state_dict(load_file(tmp_path / "aug.safetensors"))
    assert torch.equal(fresh.stored_fakes, aug.stored_fakes) and float(fresh.p) == 0.25
    torch.manual_seed(5)
    expected = aug.replace_reals(_images(4, 8, seed=1))
    torch.manual_seed(5)
    assert torch.equal(fresh.replace_reals(_images(4, 8, seed=1)), expected)


# -- ADA pipeline invariants ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ada", "ada+apa"])
def test_ada_with_p_zero_is_exactly_the_identity(name: str) -> None:
    x = _images()
    for pipeline in PIPELINES:
        aug = build_augment(name, p=0.0, pipeline=pipeline)
        assert torch.equal(aug(x), x), pipeline


def _matches_any(out: torch.Tensor, candidates: list[torch.Tensor], atol: float = 0.0) -> torch.Tensor:
    """Per sample: index of the candidate it equals (within atol), -1 if none."""
    found = torch.full([out.shape[0]], -1)
    for k, cand in enumerate(candidates):
        close = (out - cand).abs().flatten(1).amax(dim=1) <= atol
        found = torch.where((found < 0) & close, torch.tensor(k), found)
    return found


def test_xflip_only_gives_input_or_its_mirror_and_twice_stays_in_the_group() -> None:
    torch.manual_seed(0)
    x = _images(32)
    aug = build_augment("ada", p=1.0, pipeline="blit", rotate90=0, xint=0)
    once = aug(x)
    which = _matches_any(once, [x, x.flip(3)])
    assert bool((which >= 0).all())
    assert (which == 0).any() and (which == 1).any()  # both outcomes occur
    twice = aug(once)
    assert bool((_matches_any(twice, [x, x.flip(3)]) >= 0).all())
    # Flipping back the flipped ones recovers the input.
    restored = torch.where((which == 1).view(-1, 1, 1, 1), once.flip(3), once)
    assert torch.equal(restored, x)  # blits move pixels exactly, no resampling blur


def test_rotate90_outputs_are_quarter_turns() -> None:
    torch.manual_seed(1)
    x = _images(32)
    out = build_augment("ada", p=1.0, pipeline="blit", xflip=0, xint=0)(x)
    which = _matches_any(out, [torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    assert bool((which >= 0).all()) and len(set(which.tolist())) == 4


def test_integer_translation_only_moves_pixels() -> None:
    torch.manual_seed(2)
    x = _images(16)
    out = build_augment("ada", p=1.0, pipeline="blit", xflip=0, rotate90=0)(x)
    assert out.shape == x.shape
    moved = 0
    for i in range(x.shape[0]):
        # Every output pixel (an RGB triple) is one of the input pixels: a permutation with
        # reflected repeats at the border, no interpolation.
        pixels_in = x[i].flatten(1).t()  # [HW, 3]
        pixels_out = out[i].flatten(1).t()
        exact = (pixels_out[:, None, :] == pixels_in[None, :, :]).all(dim=-1).any(dim=-1)
        assert bool(exact.all()), f"sample {i} has interpolated pixels"
        moved += int(not torch.equal(out[i], x[i]))
    assert moved > 8


def test_general_geometry_and_colour_change_images_but_keep_shape() -> None:
    torch.manual_seed(3)
    x = _images(8, 32)
    for pipeline in ("geom", "color", "bgc", "bgcfnc"):
        out = build_augment("ada", p=1.0, pipeline=pipeline)(x)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert (out - x).abs().mean() > 0.05, pipeline


def test_grayscale_images_are_supported() -> None:
    out = build_augment("ada", p=1.0, pipeline="bgc")(_images(4, 16)[:, :1])
    assert out.shape == (4, 1, 16, 16) and torch.isfinite(out).all()


@pytest.mark.parametrize("name,kwargs", [("ada", {"pipeline": "bgcfnc"}), ("diffaug", {}), ("ada+apa", {})])
def test_double_backward_through_the_augmentation(name: str, kwargs: dict) -> None:
    """R1: grad of D(aug(x)) w.r.t. x with create_graph=True, then backprop into D's weights."""
    torch.manual_seed(4)
    aug = build_augment(name, p=1.0, **kwargs)
    disc = TinyD()
    x = _images(4, 16).requires_grad_(True)
    logits = disc(aug(x))
    (grad_x,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    assert grad_x.abs().sum() > 0
    penalty = grad_x.square().sum()
    penalty.backward()
    assert disc.conv.weight.grad is not None and disc.conv.weight.grad.abs().sum() > 0
    assert torch.isfinite(disc.conv.weight.grad).all()


@pytest.fixture(autouse=True)
def reference_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain-PyTorch filtering by default: no compiler needed; one test below covers the compiled ops."""
    monkeypatch.setenv("FEWSHOT_OPS", "reference")


@pytest.mark.parametrize("ops", ["reference", "auto"])
def test_second_derivative_matches_finite_differences(ops: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hessian-vector product by double backward equals a central difference of the gradient.

    ``auto`` runs the compiled upfirdn2d when it builds (the trainer's default path).
    """
    monkeypatch.setenv("FEWSHOT_OPS", ops)
    aug = build_augment("ada", p=1.0, pipeline="bgc")
    weight = torch.randn(3, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def grad_of_d(images: torch.Tensor, create_graph: bool) -> torch.Tensor:
        torch.manual_seed(11)  # the same random transform on every evaluation
        score = torch.nn.functional.softplus(torch.nn.functional.conv2d(aug(images), weight)).sum()
        return torch.autograd.grad(score, images, create_graph=create_graph)[0]

    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64, generator=gen).requires_grad_(True)
    v = torch.randn(x.shape, dtype=torch.float64, generator=gen)
    (hvp,) = torch.autograd.grad((grad_of_d(x, True) * v).sum(), x)
    eps = 1e-4
    plus = grad_of_d((x + eps * v).detach().requires_grad_(True), False)
    minus = grad_of_d((x - eps * v).detach().requires_grad_(True), False)
    scale = hvp.abs().max()
    assert scale > 1
    # Central differences are accurate to O(eps^2): about 1e-7 of the scale here; a wrong
    # second derivative is off by the scale itself.
    assert (hvp - (plus - minus) / (2 * eps)).abs().max() < 1e-5 * scale


# -- DiffAugment ------------------------------------------------------------------------------------


def test_diffaugment_shapes_and_colour_ranges() -> None:
    torch.manual_seed(6)
    x = _images(16, 16)
    out = build_augment("diffaug")(x)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    # On a flat grey image saturation and contrast do nothing; brightness shifts by U(-0.5, 0.5).
    grey = torch.full((256, 3, 8, 8), 0.1)
    shifted = build_augment("diffaug", policy="color")(grey) - 0.1
    per_image = shifted.flatten(1)
    # 1e-6: float32 rounds each pixel a few times at values below 1 (u = 6e-8 each), and the no-op contrast step
    # subtracts the flat image's mean, a 192-term sum (float32_bounds' model: LAMBDA u sqrt(193) 0.1 = 7e-8).
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-6)
    assert per_image.min() >= -0.5 - 1e-6 and per_image.max() <= 0.5 + 1e-6
    assert per_image.min() < -0.4 and per_image.max() > 0.4


def test_diffaugment_translation_shifts_with_zero_fill() -> None:
    torch.manual_seed(7)
    x = _images(32, 16) + 3  # all values > 0, so zeros can only come from the padding
    out = build_augment("diffaug", policy="translation")(x)
    limit = round(16 / 8)
    for i in range(x.shape[0]):
        found = False
        for dy in range(-limit, limit + 1):
            for dx in range(-limit, limit + 1):
                expected = torch.zeros_like(x[i])
                ys, xs = slice(max(dy, 0), 16 + min(dy, 0)), slice(max(dx, 0), 16 + min(dx, 0))
                yt, xt = slice(max(-dy, 0), 16 + min(-dy, 0)), slice(max(-dx, 0), 16 + min(-dx, 0))
                expected[:, ys, xs] = x[i][:, yt, xt]
                found |= torch.equal(out[i], expected)
        assert found, f"sample {i} is not an integer shift within +-{limit}"


def test_diffaugment_cutout_zeroes_one_half_size_square() -> None:
    torch.manual_seed(8)
    size, half = 16, 8
    out = build_augment("diffaug", policy="cutout")(torch.ones(200, 3, size, size))
    assert torch.equal(out[:, :1].expand_as(out), out)  # the same mask on every channel
    full_squares = 0
    for mask in out[:, 0]:
        zero_rows = (mask == 0).any(dim=1).nonzero().flatten()
        zero_cols = (mask == 0).any(dim=0).nonzero().flatten()
        height, width = len(zero_rows), len(zero_cols)
        # The zeros form one solid rectangle: the half-size square, clipped only by the border.
        assert int((mask == 0).sum()) == height * width
        assert (mask[zero_rows.min() : zero_rows.max() + 1, zero_cols.min() : zero_cols.max() + 1] == 0).all()
        assert 0 < height <= half and 0 < width <= half
        if height < half:
            assert zero_rows.min() == 0 or zero_rows.max() == size - 1
        if width < half:
            assert zero_cols.min() == 0 or zero_cols.max() == size - 1
        full_squares += height == half and width == half
    assert full_squares > 20  # about 28% of centres keep the square whole
    assert cutout_mask(3, 9, 9, torch.device("cpu")).shape == (3, 1, 9, 9)


# -- APA -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["apa", "ada+apa"])
def test_apa_replaces_about_p_of_the_reals(name: str) -> None:
    torch.manual_seed(9)
    aug = build_augment(name, p=0.3)
    reals = torch.zeros(4000, 3, 4, 4)
    assert torch.equal(aug.replace_reals(reals), reals)  # nothing stored yet: identity
    fakes = torch.full((50, 3, 4, 4), 0.5, requires_grad=True)
    aug.remember_fakes(fakes * 2)
    assert not aug.stored_fakes.requires_grad
    mixed = aug.replace_reals(reals)
    replaced = (mixed == 1.0).flatten(1).all(dim=1)
    kept = (mixed == 0.0).flatten(1).all(dim=1)
    assert bool((replaced | kept).all())
    fraction = replaced.float().mean().item()
    assert abs(fraction - 0.3) < 0.03, fraction
    if name == "apa":
        x = _images()
        assert torch.equal(aug(x), x)  # APA alone never transforms images
    else:
        assert not torch.equal(aug(_images()), _images())  # one p also drives the ADA pipeline


def test_apa_p_follows_the_ada_rule() -> None:
    aug = build_augment("apa", ada_kimg=1)
    for _ in range(4):
        aug.accumulate(torch.ones(10))
        aug.update(10)
    assert float(aug.p) == pytest.approx(0.04, abs=1e-7)


# -- preview ------------------------------------------------------------------------------------------


def test_preview_grid_writes_png_and_restores_p(tmp_path: Path) -> None:
    from fewshot.data import demo_images

    data = demo_images(9, 16)
    aug = build_augment("ada", p=0.0)
    path = preview_grid(aug, data.images, tmp_path / "preview" / "grid.png", n=9, p=1.0)
    assert float(aug.p) == 0.0
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.size == (3 * 16 + 2 * 2, 3 * 16 + 2 * 2)
    identity = preview_grid(build_augment("none"), data.images, tmp_path / "same.png", n=1)
    with Image.open(identity) as img:
        assert torch.equal(torch.tensor(np.array(img)).permute(2, 0, 1), data.images[0])
    assert math.isclose(float(aug.p), 0.0)


def test_grid_sample_bilinear_equals_torch_and_has_a_second_derivative() -> None:
    """The ADA sampler: same values and first gradient as F.grid_sample, and gradgradcheck passes
    (torch's CUDA grid_sampler_2d_backward has no derivative; ours is the same on every device)."""
    from fewshot.augment.grid_sample import grid_sample_bilinear

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=gen).requires_grad_(True)
    theta = torch.eye(2, 3, dtype=torch.float64).expand(2, 2, 3) + 0.3 * torch.randn(2, 2, 3, dtype=torch.float64, generator=gen)
    grid = torch.nn.functional.affine_grid(theta, [2, 3, 9, 8], align_corners=False)
    want = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    got = grid_sample_bilinear(x, grid)
    torch.testing.assert_close(got, want)
    v = torch.randn(want.shape, dtype=torch.float64, generator=gen)
    (g_want,) = torch.autograd.grad(want, x, v)
    (g_got,) = torch.autograd.grad(got, x, v)
    torch.testing.assert_close(g_got, g_want)
    assert torch.autograd.gradcheck(lambda t: grid_sample_bilinear(t, grid), (x,))
    assert torch.autograd.gradgradcheck(lambda t: grid_sample_bilinear(t, grid), (x,))
    with pytest.raises(ValueError, match="grid"):
        grid_sample_bilinear(x, grid.clone().requires_grad_(True))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deterministic_transposed_sampling_equals_atens_backward(dtype) -> None:
    """The scatter-add form of S^T (what a deterministic CUDA run uses) is aten's grid-sampler input gradient,
    taps outside the image included, and the adjoint of the sampling: <S x, v> = <x, S^T v>."""
    from fewshot.augment.grid_sample import _sample, _sample_transposed, _sample_transposed_by_scatter

    gen = torch.Generator().manual_seed(6)
    theta = 1.4 * torch.eye(2, 3, dtype=dtype).expand(3, 2, 3) + 0.3 * torch.randn(3, 2, 3, dtype=dtype, generator=gen)
    grid = torch.nn.functional.affine_grid(theta, [3, 2, 11, 9], align_corners=False)  # some taps fall outside
    assert (grid.abs() > 1).any()
    shape = torch.Size([3, 2, 8, 10])
    v = torch.randn(3, 2, 11, 9, dtype=dtype, generator=gen)
    got = _sample_transposed_by_scatter(v, grid, shape)
    want = _sample_transposed(v, grid, shape)  # aten on the CPU
    # Tolerance: the two sums of the same taps in different orders (float32_bounds.dot_sigma, twice): a pixel gathers
    # at most 4 taps from each of the 11 x 9 samples, and the squared terms (w v)^2 are at most w v^2 (0 <= w <= 1).
    u = U32 if dtype == torch.float32 else U64
    bound = 2**0.5 * LAMBDA * dot_sigma(4 * 11 * 9, _sample_transposed(v.square(), grid, shape), u)
    assert_within(got, want, bound, "S^T v")
    x = torch.randn(shape, dtype=dtype, generator=gen)
    # The adjoint identity: two inner products of 3 x 2 x 11 x 9 and 3 x 2 x 8 x 10 terms, after S or S^T.
    lhs, rhs = (_sample(x, grid) * v).sum(), (x * got).sum()
    terms = ((_sample(x, grid) * v).square().sum() + (x * got).square().sum()).sqrt()
    assert_within(lhs, rhs, 2 * LAMBDA * dot_sigma(4 * 11 * 9 + v.numel(), terms.square(), u), "<S x, v> = <x, S^T v>")
