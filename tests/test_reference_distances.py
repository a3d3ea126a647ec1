"""Reference distances against cases with known answers."""

from __future__ import annotations

import math

import torch

from pyro_elbo_lab.evaluation.reference_distances import reference_distances


def _normal(count: int, seed: int, dim: int = 3) -> torch.Tensor:
    return torch.randn(count, dim, generator=torch.Generator().manual_seed(seed))


def test_same_distribution_is_close_to_zero_everywhere():
    found = reference_distances({"z": _normal(2000, 1)}, {"z": _normal(10_000, 2)})
    # 2,000 draws: W1 of N(0,1) samples ~ 1/sqrt(n) scale, well under 0.1
    assert found["w1_max"] < 0.1 and found["sliced_w1"] < 0.1 and found["gaussian_w2"] < 0.15
    assert 0.9 < found["sd_ratio_min"] <= found["sd_ratio_max"] < 1.1
    assert set(found["parameters"]) == {"z[1]", "z[2]", "z[3]"}


def test_a_shift_and_a_scaling_give_their_exact_distances():
    """N(1, 2²) against N(0, 1) per coordinate: mean error 1, sd ratio 2, W1 = E|X + 1 − X'|
    under the quantile coupling = E|1 + Z| = 1.166 (Z ~ N(0,1)), Gaussian W2 per coordinate
    sqrt(1 + (2 − 1)²) = √2, so √(2 · 3) = 2.449 jointly."""
    reference = {"z": _normal(20_000, 3)}
    draws = {"z": 1 + 2 * _normal(20_000, 4)}
    found = reference_distances(draws, reference)
    expected_w1 = 2 * math.exp(-0.5) / math.sqrt(2 * math.pi) + 1 - 2 * (1 - 0.8413447)
    for values in found["parameters"].values():
        assert abs(values["mean_error"] - 1) < 0.05 and abs(values["sd_ratio"] - 2) < 0.05
        assert abs(values["w1"] - expected_w1) < 0.05
    assert abs(found["gaussian_w2"] - math.sqrt(6)) < 0.1


def test_scalar_sites_and_non_finite_draws():
    reference = {"s": torch.randn(5000, generator=torch.Generator().manual_seed(5))}
    draws = {"s": torch.full((100,), float("inf"))}
    found = reference_distances(draws, reference)
    assert found["gaussian_w2"] == math.inf and set(found["parameters"]) == {"s"}
