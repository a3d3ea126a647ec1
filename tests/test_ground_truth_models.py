"""Each model's ground truth against an independent computation."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.evaluation.posterior_error import standardized_errors
from pyro_elbo_lab.models import (
    BayesianLinearRegression,
    BetaBernoulli,
    EightSchools,
    FactorAnalysis,
    TinyGaussianMixture,
    bimodal,
)


def _trapezoid_log(log_values: torch.Tensor, grid: torch.Tensor) -> float:
    return float(
        torch.trapezoid((log_values - log_values.max()).exp(), grid).log() + log_values.max()
    )


def test_beta_bernoulli_evidence_and_posterior_match_quadrature():
    model = BetaBernoulli(num_train=25, seed=3)
    theta = torch.linspace(1e-6, 1 - 1e-6, 200_001, dtype=torch.float64)
    data = model.train_data.double()
    log_joint = dist.Beta(2.0, 2.0).log_prob(theta) + (
        data.sum() * theta.log() + (len(data) - data.sum()) * (1 - theta).log()
    )
    assert model.exact_log_evidence() == pytest.approx(_trapezoid_log(log_joint, theta), abs=1e-5)
    density = (log_joint - log_joint.max()).exp()
    mean = float(torch.trapezoid(theta * density, theta) / torch.trapezoid(density, theta))
    assert float(model.exact_posterior()["theta"].mean) == pytest.approx(mean, abs=1e-6)


def test_linear_regression_evidence_is_the_multivariate_t_marginal():
    model = BayesianLinearRegression(num_train=15, seed=2)
    x, y = model.train_data[:, :-1].double(), model.train_data[:, -1].double()
    # Integrating beta then sigma^2 out: y ~ t_{2 a0}(0, (b0 / a0)(I + v0 X X^T)).
    scale = (model.b0 / model.a0) * (torch.eye(len(y), dtype=torch.float64) + model.v0 * x @ x.T)
    marginal = dist.MultivariateStudentT(
        2 * model.a0, torch.zeros(len(y), dtype=torch.float64), torch.linalg.cholesky(scale)
    )
    assert model.exact_log_evidence() == pytest.approx(float(marginal.log_prob(y)), abs=1e-6)


def test_linear_regression_posterior_mean_is_the_ridge_solution():
    model = BayesianLinearRegression(num_train=50, prior_variance_scale=2.0, seed=1)
    x, y = model.train_data[:, :-1].double(), model.train_data[:, -1].double()
    ridge = torch.linalg.solve(x.T @ x + torch.eye(3, dtype=torch.float64) / 2.0, x.T @ y)
    assert torch.allclose(model.exact_posterior()["coefficients"].loc.double(), ridge, atol=1e-5)


def test_factor_analysis_evidence_and_posterior_match_quadrature():
    model = FactorAnalysis(num_tests=4, num_train=5, seed=4)
    z = torch.linspace(-8, 8, 40_001, dtype=torch.float64)
    w, psi = model.weight.double()[:, 0], model.noise_variance.double()
    total = 0.0
    posterior = model.exact_posterior()["ability"]
    for n, x in enumerate(model.train_data.double()):
        log_joint = dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(
            z[:, None] * w, psi.sqrt()
        ).log_prob(x).sum(-1)
        total += _trapezoid_log(log_joint, z)
        density = (log_joint - log_joint.max()).exp()
        mean = torch.trapezoid(z * density, z) / torch.trapezoid(density, z)
        assert float(posterior.mean[n, 0]) == pytest.approx(float(mean), abs=1e-4)
    assert model.exact_log_evidence() == pytest.approx(total, abs=1e-3)


def test_factor_analysis_with_learned_loadings_has_no_closed_form():
    model = FactorAnalysis(loadings="learned", num_train=10)
    assert model.exact_log_evidence() is None and model.exact_posterior() is None
    assert pyro.poutine.trace(model).get_trace().nodes["loadings"]["value"].shape == (6, 1)


@pytest.mark.parametrize("fixed_weights", [False, True])
def test_tiny_gmm_evidence_equals_brute_force_over_assignments(fixed_weights):
    model = TinyGaussianMixture(
        num_components=3, dim=2, num_train=5, fixed_weights=fixed_weights, seed=1
    )
    x, k, n = model.train_data.double(), 3, 5
    terms = []
    for assignment in itertools.product(range(k), repeat=n):
        labels = torch.tensor(assignment)
        counts = torch.bincount(labels, minlength=k).tolist()
        if fixed_weights:
            term = -n * math.log(k)
        else:  # Dirichlet(1)-multinomial
            term = math.lgamma(k) - math.lgamma(n + k) + sum(math.lgamma(c + 1) for c in counts)
        for cluster in range(k):
            points = x[labels == cluster]
            if len(points):
                covariance = torch.eye(len(points), dtype=torch.float64) + 9.0 * torch.ones(
                    len(points), len(points), dtype=torch.float64
                )
                marginal = dist.MultivariateNormal(
                    torch.zeros(len(points), dtype=torch.float64), covariance
                )
                term += float(marginal.log_prob(points.T).sum())
        terms.append(term)
    assert model.exact_log_evidence() == pytest.approx(
        float(torch.tensor(terms, dtype=torch.float64).logsumexp(0)), abs=1e-6
    )


def test_tiny_gmm_refuses_too_many_assignments_with_the_sizes_that_fit():
    model = TinyGaussianMixture(num_components=3, num_train=40)
    with pytest.raises(
        ConfigError, match=r"3\^40 assignments.*use at most 13 points with 3 components"
    ):
        model.exact_log_evidence()


def test_bimodal_posterior_has_two_symmetric_modes():
    model = bimodal(num_train=8)
    assert model.fixed_weights and model.num_components == 2
    # Swapping the two means leaves the likelihood unchanged: the posterior is symmetric.
    trace = pyro.poutine.trace(model).get_trace()
    swapped = pyro.poutine.trace(
        pyro.poutine.condition(model, data={"locs": trace.nodes["locs"]["value"].flip(0)})
    ).get_trace()
    assert float(trace.log_prob_sum()) == pytest.approx(float(swapped.log_prob_sum()), abs=1e-4)


def test_eight_schools_reference_draws_load_and_agree_with_themselves():
    model = EightSchools()
    draws = model.reference_posterior_draws()
    assert draws["theta"].shape == (10_000, 8) and draws["tau"].shape == (10_000,)
    assert model.train_data.shape == (8, 2) and model.heldout_data.shape[0] == 0
    first = {name: value[::2] for name, value in draws.items()}
    second = {name: value[1::2] for name, value in draws.items()}
    split_half = standardized_errors(first, second)
    # 5000 draws (ESS ~ 5k) per half: standardised mean errors of order 1/sqrt(5000) ~ 0.014.
    assert all(error["mean_error_max"] < 0.1 for error in split_half.values())


def test_eight_schools_posterior_error_detects_the_prior():
    model = EightSchools()
    reference = model.reference_posterior_draws()
    prior_mu = {"mu": dist.Normal(0.0, 5.0).sample((5000,))}
    assert standardized_errors(prior_mu, {"mu": reference["mu"]})["mu"]["sd_error_max"] > 0.3


def test_eight_schools_reference_path_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"set model.reference_path"):
        EightSchools(reference_path=str(tmp_path / "missing.zip")).reference_posterior_draws()
