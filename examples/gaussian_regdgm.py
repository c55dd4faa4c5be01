"""Proposition 2.2 of Reg-DGM (Zhong et al., ICLR 2023) by Monte Carlo: fitting a Gaussian mean.

m samples of N(μ*, σ²). The MLE is the sample mean; a "pre-trained" estimate μ_PRE comes from other data.
Regularising the likelihood with λ(μ − μ_PRE)² gives ``(1 − β)·mean(x) + β·μ_PRE`` with β = λ/(λ + 1).
Its MSE is below both the MLE's (σ²/m) and the pre-trained one's ((μ_PRE − μ*)²) exactly when

    max{(σ² − mΔ²)/(σ² + mΔ²), 0} < β < min{2σ²/(σ² + mΔ²), 1},   Δ = μ_PRE − μ*.

Run: ``python examples/gaussian_regdgm.py`` (prints a table for β inside and outside the interval).
"""

from __future__ import annotations

import argparse

import numpy as np


def beta_interval(sigma: float, m: int, mu_star: float, mu_pre: float) -> tuple[float, float]:
    """The open interval of β where the regularised estimator beats both the MLE and μ_PRE."""
    bias_term = m * (mu_pre - mu_star) ** 2
    low = max((sigma**2 - bias_term) / (sigma**2 + bias_term), 0.0)
    high = min(2 * sigma**2 / (sigma**2 + bias_term), 1.0)
    return low, high


def monte_carlo_mse(
    beta: float, sigma: float, m: int, mu_star: float, mu_pre: float, trials: int = 20000, seed: int = 0
) -> dict[str, float]:
    """MSE of the three estimators over ``trials`` data sets of m samples each."""
    rng = np.random.default_rng(seed)
    samples = rng.normal(mu_star, sigma, size=(trials, m))
    mle = samples.mean(axis=1)
    regularised = (1 - beta) * mle + beta * mu_pre
    return {
        "mle": float(np.mean((mle - mu_star) ** 2)),
        "pre": float((mu_pre - mu_star) ** 2),  # a fixed estimate: its error does not depend on the data
        "reg": float(np.mean((regularised - mu_star) ** 2)),
    }


def closed_form_mse(beta: float, sigma: float, m: int, mu_star: float, mu_pre: float) -> float:
    """(1 − β)²σ²/m + β²Δ²: variance shrinks, bias grows."""
    return (1 - beta) ** 2 * sigma**2 / m + beta**2 * (mu_pre - mu_star) ** 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--trials", type=int, default=20000)
    args = parser.parse_args()
    # Two regimes: a close pre-trained estimate (interval bounded below), a far one (bounded above).
    for mu_pre in (np.sqrt(0.5 / args.m), np.sqrt(3.0 / args.m)):
        low, high = beta_interval(args.sigma, args.m, 0.0, mu_pre)
        print(f"\nμ*=0, σ={args.sigma}, m={args.m}, μ_PRE={mu_pre:.4f}: interval {low:.3f} < β < {high:.3f}")
        print(f"{'β':>6} {'λ':>7} {'inside':>7} {'MSE_MLE':>9} {'MSE_PRE':>9} {'MSE_REG':>9} {'closed':>9} {'REG best':>9}")
        for beta in np.linspace(0.05, 0.95, 10):
            mse = monte_carlo_mse(beta, args.sigma, args.m, 0.0, mu_pre, trials=args.trials)
            inside = low < beta < high
            best = mse["reg"] < min(mse["mle"], mse["pre"])
            lam = beta / (1 - beta)
            print(
                f"{beta:6.2f} {lam:7.3f} {str(inside):>7} {mse['mle']:9.4f} {mse['pre']:9.4f} {mse['reg']:9.4f} "
                f"{closed_form_mse(beta, args.sigma, args.m, 0.0, mu_pre):9.4f} {str(best):>9}"
            )


if __name__ == "__main__":
    main()
