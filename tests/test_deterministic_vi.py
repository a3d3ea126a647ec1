"""Deterministic and quasi-Newton VI against truths: DADVI and SAA on a correlated
Gaussian, linear response under mean field, multi-path Pathfinder on two modes."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.evaluation.exact_kl import guide_gaussian
from pyro_elbo_lab.fitters.dadvi import FixedDrawObjective, standardised_noise
from pyro_elbo_lab.fitters.psis import pareto_smoothed_log_weights
from pyro_elbo_lab.registry import fitters, models
from tests.helpers import GaussianTarget, correlated_gaussian


def _solve(name: str, target, guide, steps: int = 300, **options):
    fitter = fitters.build(name, target, guide, **options)
    for _ in range(steps):
        if fitter.converged:
            break
        fitter.step()
    return fitter


@pytest.mark.parametrize("name", ["dadvi", "saa"])
def test_deterministic_fitters_recover_a_correlated_gaussian_exactly(name):
    """A full-rank guide on a 5-d Gaussian with strong correlations: the fixed-draw
    objective on standardised draws (M = 30 > D) has the target as its optimum, so the
    solution is the target to the solver's tolerance (1e-5 nats of predicted decrease)."""
    pyro.clear_param_store()
    mean, covariance = correlated_gaussian()
    target = GaussianTarget(dist.MultivariateNormal(mean, covariance))
    fitter = _solve(name, target, AutoMultivariateNormal(target.model))
    assert fitter.converged and fitter.arrived
    q = guide_gaussian(fitter.guide, ["z"])
    torch.testing.assert_close(q.loc, mean.double(), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(q.covariance_matrix, covariance.double(), rtol=1e-3, atol=1e-3)


def test_the_fixed_draw_objective_is_a_deterministic_function_of_the_parameters():
    pyro.clear_param_store()
    mean, covariance = correlated_gaussian()
    target = GaussianTarget(dist.MultivariateNormal(mean, covariance))
    for guide in (AutoMultivariateNormal(target.model), AutoNormal(target.model)):
        guide(target.train_data)
        objective = FixedDrawObjective(target, guide, num_draws=30)
        point = objective.point()
        first, gradient = objective.value_and_gradient(point)
        torch.manual_seed(123)  # the run's own stream plays no part
        second, again = objective.value_and_gradient(point)
        assert first == second and torch.equal(gradient, again)


def test_standardised_draws_have_zero_mean_and_identity_second_moment():
    noise = standardised_noise(30, 5, torch.float64)
    torch.testing.assert_close(noise.mean(0), torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(noise.T @ noise / 30, torch.eye(5, dtype=torch.float64))
    with pytest.raises(ConfigError, match=r"use fitter\.num_draws >= 6"):
        standardised_noise(5, 5, torch.float64)


def test_linear_response_recovers_the_marginal_variances_mean_field_understates():
    """On N(μ, Σ) a mean-field Gaussian's optimal variances are 1/(Σ⁻¹)_ii, below Σ_ii
    wherever coordinates correlate; the linear-response covariance is Σ itself
    (Giordano et al.: exact for Gaussian targets)."""
    pyro.clear_param_store()
    mean, covariance = correlated_gaussian()
    target = GaussianTarget(dist.MultivariateNormal(mean, covariance))
    fitter = _solve("dadvi", target, AutoDiagonalNormal(target.model), linear_response=True)
    assert fitter.arrived
    mean_field = guide_gaussian(fitter.guide, ["z"]).covariance_matrix.diagonal().double()
    expected_mean_field = 1 / torch.linalg.inv(covariance.double()).diagonal()
    torch.testing.assert_close(mean_field, expected_mean_field, rtol=1e-3, atol=1e-4)
    assert bool((mean_field < 0.9 * covariance.diagonal().double()).any())
    response = torch.tensor(fitter.details()["linear_response"]["covariance"], dtype=torch.float64)
    torch.testing.assert_close(response, covariance.double(), rtol=2e-3, atol=2e-3)


def test_linear_response_is_for_mean_field_guides():
    pyro.clear_param_store()
    target = GaussianTarget(dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pytest.raises(ConfigError, match="corrects a mean-field guide's covariance"):
        fitters.build("dadvi", target, AutoMultivariateNormal(target.model), linear_response=True)


@pytest.mark.slow
def test_multi_path_pathfinder_finds_both_modes_in_their_proportions():
    """The label-symmetric mixture ``bimodal`` has two mirror-image modes of equal
    mass. Eight paths from dispersed starts, 2,000 draws resampled with PSIS: the
    fraction in the first mode is within 4 binomial s.e. of ½ (resampling from weights
    whose effective size is at least half the draws: 4·√(¼/1000) ≈ 0.063)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = models.build("bimodal")
    fitter = _solve("pathfinder", model, AutoMultivariateNormal(model.model), steps=3000,
                    paths=8, num_draws=2000)  # fmt: skip
    draws = fitter.resampled
    first_mode = float((draws[:, 0] > draws[:, 1]).double().mean())
    assert abs(first_mode - 0.5) < 0.063
    assert fitter.details()["psis_khat"] < 0.7
    modes = {tuple(g.mean.round().tolist()) for g, _ in fitter.finished}
    assert len(modes) == 2  # each path found one mode; both were found


def test_pareto_smoothing_tames_heavy_weights_and_reports_their_tail():
    generator = torch.Generator().manual_seed(0)
    light = torch.randn(4000, generator=generator, dtype=torch.float64)  # lognormal(0, 1)
    heavy = 1.5 * torch.distributions.StudentT(1.0).sample((4000,)).double()  # Cauchy-like
    _, k_light = pareto_smoothed_log_weights(light)
    smoothed, k_heavy = pareto_smoothed_log_weights(heavy)
    assert k_light < 0.5 < 0.7 < k_heavy or k_heavy > 0.7
    assert float(smoothed.max()) <= float(heavy.max()) + 1e-12
    assert math.isinf(pareto_smoothed_log_weights(light[:10])[1])
