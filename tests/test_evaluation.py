"""Evaluation estimators against exact answers on the Normal–Normal model."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.evaluation import (
    EvaluationSettings,
    estimate_elbo,
    estimate_iwae,
    evaluate_guide,
)
from pyro_elbo_lab.evaluation.bounds import MAX_BATCH_ELEMENTS, particle_batch_for
from pyro_elbo_lab.evaluation.exact_kl import closed_form_kl
from pyro_elbo_lab.evaluation.posterior_error import importance_resampled_draws
from pyro_elbo_lab.evaluation.predictive import heldout_log_likelihood
from pyro_elbo_lab.models import NormalNormal
from pyro_elbo_lab.registry import guides
from tests.helpers import assert_normal_moments, posterior_guide, set_gaussian_guide

MODEL = NormalNormal(num_train=20, num_heldout=30, seed=0)


def test_bounds_are_ordered_for_a_wider_than_posterior_guide():
    guide = posterior_guide(MODEL, scale_factor=1.8, shift=0.1)
    exact = MODEL.exact_log_evidence()
    elbo = estimate_elbo(MODEL, guide, (), num_particles=4000, max_plate_nesting=1)
    iwae = estimate_iwae(MODEL, guide, (), num_particles=100, num_repeats=40, max_plate_nesting=1)
    # Each inequality must hold beyond 4 standard errors of the estimates.
    assert elbo.value + 4 * elbo.std_error < iwae.value - 4 * iwae.std_error
    assert iwae.value - 4 * iwae.std_error < exact
    assert elbo.num_samples == 4000 and iwae.num_samples == 40


def test_elbo_and_kl_add_up_to_the_evidence():
    """ELBO(q) + KL(q || p(z|x)) = log p(x), both sides computed independently."""
    import torch.distributions as tdist

    guide = posterior_guide(MODEL, scale_factor=1.5, shift=0.3)
    posterior = MODEL.exact_posterior()["loc"]
    base = posterior.base_dist
    q = tdist.Normal(base.loc + 0.3, base.scale * 1.5)
    kl = float(tdist.kl_divergence(q, base).sum())
    elbo = estimate_elbo(MODEL, guide, (), num_particles=20000, max_plate_nesting=1)
    assert abs(elbo.value + kl - MODEL.exact_log_evidence()) < 4 * elbo.std_error


def test_importance_resampling_moves_a_wide_guide_onto_the_posterior():
    """SIR from q = N(mu + 0.3, (1.8 sd)²): one particle keeps q; 256 recover p(z|x)
    (the resampled law is off by O(chi²(p||q)/K))."""
    posterior = MODEL.exact_posterior()["loc"].base_dist
    guide = posterior_guide(MODEL, scale_factor=1.8, shift=0.3)
    pyro.set_rng_seed(0)
    cases = {1: (posterior.loc + 0.3, 1.8 * posterior.scale), 256: (posterior.loc, posterior.scale)}
    for num_particles, (loc, scale) in cases.items():
        draws = importance_resampled_draws(
            MODEL, guide, (), ["loc"], 400, num_particles=num_particles, max_plate_nesting=1
        )["loc"]
        assert draws.shape == (400, 2)
        assert_normal_moments(draws, loc, scale)


def test_stratified_resampling_never_keeps_a_component_that_proposes_nothing():
    """A mixture of the exact posterior and a component 40 sd away, weights 1/2 each: its
    own draws are half junk; resampling one particle per component by pi_k w_k is exact."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    posterior = MODEL.exact_posterior()["loc"].base_dist
    guide = guides.build("mixture", MODEL)
    guide(MODEL.train_data)
    with torch.no_grad():
        guide.locs.copy_(torch.stack([posterior.loc, posterior.loc + 40 * posterior.scale]))
        guide.logits.zero_()
    pyro.get_param_store()["AutoGaussianMixture.scales"] = posterior.scale.expand(2, 2).clone()
    args = (MODEL.train_data,)
    resampled = importance_resampled_draws(
        MODEL, guide, args, ["loc"], 400, num_particles=2, max_plate_nesting=1, stratify=True
    )["loc"]
    assert_normal_moments(resampled, posterior.loc, posterior.scale)
    raw = importance_resampled_draws(
        MODEL, guide, args, ["loc"], 400, num_particles=1, max_plate_nesting=1
    )["loc"]
    far = (raw - posterior.loc).div(posterior.scale).abs().max(-1).values > 20
    assert 0.4 < far.double().mean() < 0.6
    # every draw needs a complete set of strata, even where all draws together have one
    with pytest.raises(ConfigError, match=r"\(3: .*resample_particles\) must be a multiple"):
        importance_resampled_draws(
            MODEL, guide, args, ["loc"], 400, num_particles=3, max_plate_nesting=1, stratify=True
        )


def test_heldout_estimate_matches_the_exact_predictive_at_the_posterior():
    estimate = heldout_log_likelihood(
        MODEL,
        posterior_guide(MODEL),
        MODEL.train_data,
        MODEL.heldout_data,
        num_particles=20000,
        max_plate_nesting=1,
    )
    exact = float(MODEL.exact_predictive_log_likelihood(MODEL.heldout_data).mean())
    # The log of a 20k-draw mean of densities: relative MC error per point ~ 1/sqrt(20000)·cv.
    assert estimate.value == pytest.approx(exact, abs=0.01)


def test_suite_reports_gaps_and_sample_sizes():
    settings = EvaluationSettings(
        elbo_particles=500, iwae_particles=50, iwae_repeats=10, heldout_particles=500
    )
    metrics = evaluate_guide(MODEL, posterior_guide(MODEL), settings)
    assert metrics["exact_log_evidence"] == MODEL.exact_log_evidence()
    # At the exact posterior every weight equals the evidence: the gaps vanish.
    assert abs(metrics["elbo_gap"]) < 2e-3 and abs(metrics["iwae_gap"]) < 2e-3
    assert math.isfinite(metrics["heldout_gap"])
    assert metrics["samples"] == {
        "elbo_particles": 500,
        "cubo_particles": 500,
        "iwae_particles": 50,
        "iwae_repeats": 10,
        "heldout_particles": 500,
        "heldout_points": 30,
        "posterior_samples": 1000,
        "resample_particles": 0,
        "gradient_estimates": 0,
        "ais_chains": 0,
        "ais_temperatures": 0,
        "test_particles": 0,
        "particle_batch": 1000,
    }
    # At the posterior the sandwich closes: CUBO too equals log p(x), and so does k̂'s case.
    assert abs(metrics["cubo_gap"]) < 2e-3 and abs(metrics["kl_to_posterior"]) < 2e-3
    assert all(abs(gap) < 2e-3 for gap in metrics["iwae_by_particles_gap"].values())
    assert metrics["posterior_error"]["loc"]["mean_error_max"] < 0.2
    assert any("cubo from 500 samples" in warning for warning in metrics["warnings"])
    assert "posterior_error_resampled" not in metrics


def test_suite_reports_the_error_of_the_importance_resampled_posterior():
    """A guide 1.8x too wide and 1.4 sd off: its own draws are far from p(z|x), the
    resampled ones (64 particles each) within 4 s.e. of 1000 draws (plus the O(1/K) bias)."""
    pyro.set_rng_seed(0)
    settings = EvaluationSettings(
        elbo_particles=100, iwae_particles=10, iwae_repeats=5, heldout_particles=100,
        resample_particles=64, particle_batch=6400,
    )  # fmt: skip
    guide = posterior_guide(MODEL, scale_factor=1.8, shift=0.3)
    metrics = evaluate_guide(MODEL, guide, settings)
    own, resampled = metrics["posterior_error"]["loc"], metrics["posterior_error_resampled"]["loc"]
    assert own["mean_error_max"] > 1 and own["sd_error_max"] > 0.6
    assert resampled["mean_error_max"] < 4 * math.sqrt(2 / 1000)
    assert resampled["sd_error_max"] < 4 * math.sqrt(1 / 1000) + 0.05
    assert metrics["samples"]["resample_particles"] == 64
    # one site: the report's summaries are its values
    assert metrics["posterior_mean_error"] == own["mean_error_max"]
    assert metrics["posterior_sd_error_resampled"] == resampled["sd_error_max"]


def test_settings_reject_non_positive_sample_sizes():
    from pyro_elbo_lab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"evaluation.iwae_particles must be an integer >= 1"):
        EvaluationSettings(iwae_particles=0)


def test_estimates_over_many_points_are_cut_to_the_point_evaluation_budget():
    settings = EvaluationSettings(
        elbo_particles=1000, iwae_particles=100, iwae_repeats=20, max_point_evals=1_000_000
    )
    same, none = settings.for_data(500)  # 1000 x 500 = 5e5 evaluations: within the budget
    assert same == settings and none == []
    cut, warnings = settings.for_data(100_000)  # 10 particles (the floor) per estimate
    assert (cut.elbo_particles, cut.iwae_particles, cut.iwae_repeats) == (10, 10, 1)
    assert len(warnings) == 3 and "evaluation.elbo_particles=1000 cut to 10" in warnings[0]
    middle, _ = settings.for_data(2_000)  # IWAE keeps K = 100 and loses repeats first
    assert (middle.elbo_particles, middle.iwae_particles, middle.iwae_repeats) == (500, 100, 5)


def test_the_evaluation_batch_bounds_the_memory_of_a_pass():
    assert particle_batch_for(1000, torch.zeros(50)) == 1000
    assert particle_batch_for(1000, torch.zeros(100_000, 2)) == MAX_BATCH_ELEMENTS // 200_000
    assert particle_batch_for(1000, torch.zeros(()).expand(10**6, 10**5)) == 1  # a view: no memory


@pytest.mark.parametrize("guide_name", ["normal", "diagonal_normal", "mvn"])
def test_the_kl_of_a_gaussian_guide_is_exact_and_never_negative(guide_name):
    """KL(N(m, s²) ‖ N(μ, σ²)) per dimension = log(σ/s) + (s² + (m − μ)²)/(2σ²) − 1/2:
    0 at the posterior (where log p(x) − ELBO in float32 came out about −3e-6), and the
    formula for a shifted, narrower guide."""
    pyro.clear_param_store()
    guide = guides.build(guide_name, MODEL)
    guide(MODEL.train_data)
    posterior = MODEL.exact_posterior()["loc"].base_dist
    set_gaussian_guide(guide, posterior.loc, posterior.scale)
    metrics = evaluate_guide(MODEL, guide, EvaluationSettings(elbo_particles=200))
    assert metrics["kl_to_posterior_method"] == "closed form"
    assert 0 <= metrics["kl_to_posterior"] < 1e-9 and metrics["kl_to_posterior_se"] == 0
    m, s = posterior.loc + 0.3, posterior.scale * 0.7
    set_gaussian_guide(guide, m, s)
    sigma, mu = posterior.scale.double(), posterior.loc.double()
    expected = (
        sigma.log()
        - s.double().log()
        + (s.double() ** 2 + (m.double() - mu) ** 2) / (2 * sigma**2)
        - 0.5
    ).sum()
    # the guide's covariance is formed in float32 (scale_tril, then cast): 1e-6 relative
    assert closed_form_kl(MODEL, guide) == pytest.approx(float(expected), rel=1e-6)


def test_a_guide_without_a_gaussian_form_gets_the_monte_carlo_kl_with_its_error():
    metrics = evaluate_guide(
        MODEL, posterior_guide(MODEL, scale_factor=1.2), EvaluationSettings(elbo_particles=4000)
    )
    assert metrics["kl_to_posterior_method"] == "monte carlo"
    evidence = metrics["exact_log_evidence"]
    assert metrics["kl_to_posterior_se"] >= abs(evidence) * 2.0**-23  # float32's resolution
    assert metrics["kl_to_posterior_se"] >= metrics["elbo_se"]
