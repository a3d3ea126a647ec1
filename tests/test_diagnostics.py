"""CUBO, PSIS k̂, AIS, posterior error and gradient statistics against known answers."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_elbo_lab.evaluation.ais import annealed_importance_sampling
from pyro_elbo_lab.evaluation.bounds import draw_log_weights
from pyro_elbo_lab.evaluation.diagnostics import cubo_from_log_weights
from pyro_elbo_lab.evaluation.gradients import gradient_statistics
from pyro_elbo_lab.evaluation.posterior_error import guide_draws, standardized_errors
from pyro_elbo_lab.fitters.psis import pareto_smoothed_log_weights
from pyro_elbo_lab.models import BetaBernoulli, NormalNormal
from pyro_elbo_lab.objectives import StickingTheLanding
from tests.helpers import posterior_guide, set_gaussian_guide

MODEL = NormalNormal(num_train=20, seed=0)
EXACT = MODEL.exact_log_evidence()


def test_cubo_sits_above_the_evidence_with_enough_samples():
    guide = posterior_guide(MODEL, scale_factor=1.3, shift=0.1)  # wider: chi^2 is finite
    log_weights = draw_log_weights(MODEL, guide, (), num_particles=200_000, max_plate_nesting=1)
    assert cubo_from_log_weights(log_weights) > EXACT > float(log_weights.mean())


def test_cubo_at_few_samples_is_biased_low_often():
    guide = posterior_guide(MODEL, scale_factor=0.9, shift=0.15)
    below = 0
    for _ in range(200):
        log_weights = draw_log_weights(MODEL, guide, (), num_particles=10, max_plate_nesting=1)
        below += cubo_from_log_weights(log_weights) < EXACT
    assert below / 200 > 0.1  # why the lab records the sample size and warns when small


def _standard_normal_target():
    pyro.sample("z", dist.Normal(0.0, 1.0))


@pytest.mark.parametrize(("proposal_scale", "expected"), [(0.6, 1 - 0.6**2), (0.8, 1 - 0.8**2)])
def test_psis_khat_matches_the_analytic_tail_index(proposal_scale, expected):
    def guide():
        pyro.sample("z", dist.Normal(0.0, proposal_scale))

    pyro.set_rng_seed(0)
    log_weights = draw_log_weights(
        _standard_normal_target, guide, (), num_particles=100_000, max_plate_nesting=0,
        particle_batch=100_000,
    )  # fmt: skip
    _, khat = pareto_smoothed_log_weights(log_weights)
    # A generalized Pareto fit to ~950 tail weights: shape error ~0.05; 3x that allowed.
    assert abs(khat - expected) < 0.15


def test_psis_khat_is_small_for_a_wide_proposal():
    def guide():
        pyro.sample("z", dist.Normal(0.0, 1.5))

    pyro.set_rng_seed(0)
    log_weights = draw_log_weights(
        _standard_normal_target, guide, (), num_particles=20_000, max_plate_nesting=0
    )
    assert pareto_smoothed_log_weights(log_weights)[1] < 0.5


@pytest.mark.slow
def test_ais_converges_to_the_exact_evidence_on_the_normal_model():
    guide = posterior_guide(MODEL, scale_factor=0.6, shift=0.4)
    errors = {}
    for temperatures in (5, 100):
        result = annealed_importance_sampling(
            MODEL, guide, (), max_plate_nesting=1, num_chains=200, num_temperatures=temperatures
        )
        errors[temperatures] = abs(result.log_evidence - EXACT)
    assert errors[100] < 4 * result.std_error + 0.01
    assert errors[100] < errors[5]


@pytest.mark.slow
def test_ais_matches_the_exact_evidence_on_beta_bernoulli():
    model = BetaBernoulli(num_train=30, seed=1)
    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(300):
        svi.step(model.train_data)
    result = annealed_importance_sampling(
        model, guide, (model.train_data,), max_plate_nesting=1, num_chains=300, num_temperatures=100
    )
    assert abs(result.log_evidence - model.exact_log_evidence()) < 4 * result.std_error + 0.01
    assert 0.3 < result.acceptance_rate < 1.0


def test_posterior_error_measures_a_known_shift_in_posterior_sds():
    posterior = MODEL.exact_posterior()
    reference = {"loc": posterior["loc"].sample((20_000,))}
    draws = guide_draws(
        MODEL,
        posterior_guide(MODEL, shift=0.5 * float(posterior["loc"].base_dist.scale[0])),
        (),
        ["loc"],
        20_000,
        1,
    )
    errors = standardized_errors(draws, reference)["loc"]
    assert errors["mean_error_max"] == pytest.approx(0.5, abs=0.05)
    assert errors["sd_error_max"] < 0.05


def test_gradient_statistics_split_guide_and_model_and_vanish_for_stl_at_the_posterior():
    pyro.clear_param_store()
    guide = AutoNormal(MODEL)
    guide()
    base = MODEL.exact_posterior()["loc"].base_dist
    set_gaussian_guide(guide, base.loc, base.scale)
    stl = gradient_statistics(StickingTheLanding(num_particles=1), MODEL, guide, (), 20)
    trace = gradient_statistics(Trace_ELBO(), MODEL, guide, (), 20)
    assert set(stl) == {"guide"} and stl["guide"]["coordinates"] == 4
    assert stl["guide"]["variance"] < 1e-12 < trace["guide"]["variance"]
    assert math.isfinite(trace["guide"]["snr"])


def test_gradient_statistics_report_model_parameters_as_their_own_group():
    def model(data):
        shift = pyro.param("shift", torch.tensor(0.0))
        loc = pyro.sample("loc", dist.Normal(shift, 1.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

    pyro.clear_param_store()
    data = torch.randn(10)
    guide = AutoNormal(model)
    statistics = gradient_statistics(Trace_ELBO(), model, guide, (data,), 10)
    assert set(statistics) == {"guide", "model"} and statistics["model"]["coordinates"] == 1


def test_gaussian_kl_is_exact_for_autonormal_on_the_normal_model():
    from torch.distributions import kl_divergence

    from pyro_elbo_lab.evaluation.posterior_error import gaussian_kl

    pyro.clear_param_store()
    guide = AutoNormal(MODEL)
    guide()
    base = MODEL.exact_posterior()["loc"].base_dist
    set_gaussian_guide(guide, base.loc + 0.1, base.scale * 1.5)
    expected = float(kl_divergence(dist.Normal(base.loc + 0.1, base.scale * 1.5), base).sum())
    assert gaussian_kl(guide, (), MODEL.exact_posterior())["loc"] == pytest.approx(
        expected, rel=1e-5
    )
    set_gaussian_guide(guide, base.loc, base.scale)
    assert gaussian_kl(guide, (), MODEL.exact_posterior())["loc"] == pytest.approx(0.0, abs=1e-6)


def test_gaussian_kl_covers_per_point_multivariate_posteriors():
    from pyro_elbo_lab.evaluation.posterior_error import gaussian_kl
    from pyro_elbo_lab.models import FactorAnalysis

    model = FactorAnalysis(num_train=10)
    exact = model.exact_posterior()
    posterior = exact["ability"]

    def guide(data=None):
        with pyro.plate("data", 10):
            pyro.sample("ability", dist.Normal(posterior.mean, 2 * posterior.stddev).to_event(1))

    # One factor: per point KL(N(m, 4v) || N(m, v)) = (4 - 1 - log 4) / 2, ten points.
    expected = 10 * (4 - 1 - math.log(4)) / 2
    assert gaussian_kl(guide, (), exact)["ability"] == pytest.approx(expected, rel=1e-4)
