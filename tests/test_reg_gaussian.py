"""The Gaussian example of Reg-DGM (Proposition 2.2): regularising towards a pre-trained estimate helps
exactly inside the interval the proposition gives."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gaussian_regdgm.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("gaussian_regdgm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SIGMA, M = 1.0, 10


@pytest.mark.parametrize(
    ("bias_term", "inside", "outside"),
    [
        (0.5, [0.45, 0.6, 0.8], [0.1, 0.2]),  # close μ_PRE: interval (1/3, 1)
        (3.0, [0.1, 0.25, 0.4], [0.7, 0.9]),  # far μ_PRE: interval (0, 1/2)
    ],
)
def test_regularised_estimator_wins_exactly_inside_the_interval(example, bias_term, inside, outside):
    mu_pre = (bias_term / M) ** 0.5  # m(μ_PRE − μ*)² = bias_term with μ* = 0
    low, high = example.beta_interval(SIGMA, M, 0.0, mu_pre)
    for beta in inside + outside:
        assert (low < beta < high) == (beta in inside)  # the chosen β are on the intended side
    for beta in inside:
        mse = example.monte_carlo_mse(beta, SIGMA, M, 0.0, mu_pre, trials=40000, seed=1)
        assert mse["reg"] < min(mse["mle"], mse["pre"]), (beta, mse)
        assert mse["reg"] == pytest.approx(example.closed_form_mse(beta, SIGMA, M, 0.0, mu_pre), rel=0.05)
    for beta in outside:
        mse = example.monte_carlo_mse(beta, SIGMA, M, 0.0, mu_pre, trials=40000, seed=2)
        assert not mse["reg"] < min(mse["mle"], mse["pre"]), (beta, mse)


def test_interval_bounds(example):
    assert example.beta_interval(1.0, 10, 0.0, (0.5 / 10) ** 0.5) == pytest.approx((1 / 3, 1.0))
    assert example.beta_interval(1.0, 10, 0.0, (3.0 / 10) ** 0.5) == pytest.approx((0.0, 0.5))
    # an exact pre-trained estimate (MSE 0) cannot be beaten: the interval is empty
    low, high = example.beta_interval(1.0, 10, 0.0, 0.0)
    assert not low < high
