"""Evaluation estimators against exact answers on the Normal–Normal model."""

from __future__ import annotations

import math

import pytest

from pyro_elbo_lab.evaluation import (
    EvaluationSettings,
    estimate_elbo,
    estimate_iwae,
    evaluate_guide,
)
from pyro_elbo_lab.evaluation.predictive import heldout_log_likelihood
from pyro_elbo_lab.models import NormalNormal
from tests.helpers import posterior_guide

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
        "gradient_estimates": 0,
        "ais_chains": 0,
        "ais_temperatures": 0,
    }
    # At the posterior the sandwich closes: CUBO too equals log p(x), and so does k̂'s case.
    assert abs(metrics["cubo_gap"]) < 2e-3 and abs(metrics["kl_to_posterior"]) < 2e-3
    assert all(abs(gap) < 2e-3 for gap in metrics["iwae_by_particles_gap"].values())
    assert metrics["posterior_error"]["loc"]["mean_error_max"] < 0.2
    assert any("cubo from 500 samples" in warning for warning in metrics["warnings"])


def test_settings_reject_non_positive_sample_sizes():
    from pyro_elbo_lab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"evaluation.iwae_particles must be an integer >= 1"):
        EvaluationSettings(iwae_particles=0)
