"""Models: seeded data, ground truth checked against independent computations."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.guides import guide_target
from pyro_elbo_lab.models import GaussianMixture, NormalNormal
from pyro_elbo_lab.registry import models


def test_normal_normal_evidence_equals_the_multivariate_normal_marginal():
    model = NormalNormal(
        dim=3, num_train=7, prior_loc=0.5, prior_scale=1.5, noise_scale=0.7, seed=3
    )
    n = model.train_data.shape[0]
    covariance = 0.7**2 * torch.eye(n, dtype=torch.float64) + 1.5**2 * torch.ones(
        n, n, dtype=torch.float64
    )
    marginal = dist.MultivariateNormal(torch.full((n,), 0.5, dtype=torch.float64), covariance)
    expected = sum(float(marginal.log_prob(model.train_data[:, d].double())) for d in range(3))
    assert model.exact_log_evidence() == pytest.approx(expected, abs=1e-4)


def test_normal_normal_posterior_matches_gaussian_conditioning():
    model = NormalNormal(
        dim=1, num_train=5, prior_loc=-1.0, prior_scale=2.0, noise_scale=0.5, seed=1
    )
    x = model.train_data[:, 0].double()
    n = x.shape[0]
    # Joint of (mu, x) is Gaussian: condition it with the Schur complement.
    cov_xx = 0.25 * torch.eye(n, dtype=torch.float64) + 4.0 * torch.ones(n, n, dtype=torch.float64)
    cov_mx = 4.0 * torch.ones(1, n, dtype=torch.float64)
    gain = cov_mx @ torch.linalg.inv(cov_xx)
    mean = -1.0 + gain @ (x + 1.0)
    variance = 4.0 - gain @ cov_mx.T
    posterior = model.exact_posterior()["loc"]
    assert float(posterior.mean) == pytest.approx(float(mean), abs=1e-5)
    assert float(posterior.variance) == pytest.approx(float(variance), abs=1e-6)


def test_normal_normal_predictive_integrates_the_likelihood_over_the_posterior():
    model = NormalNormal(dim=2, num_train=10, seed=2)
    posterior = model.exact_posterior()["loc"]
    draws = posterior.sample((200_000,))
    x = model.heldout_data[:3]
    likelihood = dist.Normal(draws.unsqueeze(1), model.noise_scale).log_prob(x).sum(-1)
    monte_carlo = likelihood.logsumexp(0) - torch.log(torch.tensor(200_000.0))
    # 200k draws: relative MC error of the density is well under 1%.
    assert torch.allclose(model.exact_predictive_log_likelihood(x), monte_carlo, atol=0.02)


@pytest.mark.parametrize("name", ["gmm", "normal_normal"])
def test_same_seed_same_data_other_seed_other_data(name):
    first, again, other = (models.build(name, seed=s) for s in (4, 4, 5))
    assert torch.equal(first.train_data, again.train_data)
    assert torch.equal(first.heldout_data, again.heldout_data)
    assert not torch.equal(first.train_data, other.train_data)


def test_gmm_sizes_come_from_config():
    model = GaussianMixture(num_components=4, dim=3, num_train=50, num_heldout=11)
    assert model.train_data.shape == (50, 3)
    assert model.heldout_data.shape == (11, 3)
    trace = poutine.trace(model).get_trace()
    assert trace.nodes["locs"]["value"].shape == (4, 3)
    assert trace.nodes["weights"]["value"].shape == (4,)


def test_gmm_enumerated_and_marginalized_give_the_same_elbo():
    pyro.set_rng_seed(0)
    marginal = GaussianMixture(seed=1, num_train=40)
    enumerated = GaussianMixture(seed=1, num_train=40, assignment="enumerated")
    guide = AutoNormal(marginal)
    guide(marginal.train_data)
    # Same seed, same guide draws: the enumerated sum over assignments equals the
    # logsumexp in the marginal likelihood, so the estimates agree to float rounding.
    pyro.set_rng_seed(7)
    value_marginal = Trace_ELBO(num_particles=3, max_plate_nesting=1).loss(marginal, guide)
    pyro.set_rng_seed(7)
    value_enum = TraceEnum_ELBO(num_particles=3, max_plate_nesting=1).loss(enumerated, guide)
    assert value_enum == pytest.approx(value_marginal, rel=1e-5)


def test_enumerated_gmm_guide_target_hides_the_assignment():
    model = GaussianMixture(num_train=20, assignment="enumerated")
    guide = AutoNormal(guide_target(model))
    trace = poutine.trace(guide).get_trace(model.train_data)
    assert "assignment" not in trace.nodes
    assert {"weights", "locs", "scales"} <= set(trace.nodes)


def test_nan_in_data_is_rejected_with_its_location(monkeypatch):
    def simulate_with_nan(self, num_data, generator):
        data = torch.zeros(num_data, self.dim)
        data[3, 1] = float("nan")
        return data

    monkeypatch.setattr(NormalNormal, "simulate", simulate_with_nan)
    with pytest.raises(ConfigError, match=r"1 NaN/inf value\(s\) \(first at index \(3, 1\)\)"):
        NormalNormal()


def test_data_of_the_wrong_shape_is_rejected_with_the_expected_layout():
    model = GaussianMixture(dim=2, num_train=20)
    with pytest.raises(
        ConfigError, match=r"expects data of shape \(num_points, 2\), got \(20, 3\)"
    ):
        model(torch.zeros(20, 3))


def test_gmm_rejects_fewer_points_than_components():
    with pytest.raises(ConfigError, match=r"num_train=2 is smaller than model.num_components=3"):
        GaussianMixture(num_components=3, num_train=2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_components": 0}, "model.num_components must be an integer >= 1"),
        ({"dim": -1}, "model.dim must be an integer >= 1"),
        ({"assignment": "gibbs"}, "model.assignment must be one of marginalized, enumerated"),
        ({"loc_prior_scale": 0.0}, "model.loc_prior_scale must be a finite number > 0"),
    ],
)
def test_gmm_rejects_bad_settings(params, message):
    with pytest.raises(ConfigError, match=message):
        GaussianMixture(**params)


def test_models_live_on_the_requested_device():
    model = GaussianMixture(device="cpu", num_train=10)
    assert model.train_data.device.type == "cpu"
    trace = poutine.trace(model).get_trace()
    assert all(
        site["value"].device.type == "cpu"
        for site in trace.nodes.values()
        if site["type"] == "sample"
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["gmm", "normal_normal"])
def test_models_run_on_cuda(name):
    model = models.build(name, device="cuda")
    trace = poutine.trace(model).get_trace()
    assert trace.nodes["obs"]["fn"].log_prob(model.train_data).is_cuda
