"""Regression tests for the engine's wrong values and crashes on valid Pyro programs
(issue 15, part A): each failed before its fix."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal

from pyro_elbo_lab.engine import sample_log_weights
from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.registry import objectives

NUM_DRAWS = 20_000


def _elbo_and_standard_error(model, guide, max_plate_nesting: int) -> tuple[float, float]:
    """The ELBO (and the s.e. of its NUM_DRAWS-draw mean) from the engine's log weights."""
    with torch.no_grad():
        log_weights = sample_log_weights(
            model,
            guide,
            (),
            {},
            num_particles=NUM_DRAWS,
            max_plate_nesting=max_plate_nesting,
        ).log_weights
    return float(log_weights.mean()), float(log_weights.std()) / math.sqrt(NUM_DRAWS)


def _trace_elbo(model, guide, max_plate_nesting: int) -> float:
    elbo = Trace_ELBO(
        num_particles=NUM_DRAWS, vectorize_particles=True, max_plate_nesting=max_plate_nesting
    )
    with torch.no_grad():
        return -elbo.loss(model, guide)


def _beta_elbo_at_beta_one(model, guide):
    """beta_elbo(beta=1) on NUM_DRAWS particles, checked against the engine's ELBO and
    Pyro's Trace_ELBO within 4 s.e. of a difference of two NUM_DRAWS-draw means."""
    beta_elbo = objectives.build("beta_elbo", num_particles=NUM_DRAWS, max_plate_nesting=0)
    value = -beta_elbo.loss(model, guide)
    reference, standard_error = _elbo_and_standard_error(model, guide, 0)
    tolerance = 4 * math.sqrt(2) * standard_error
    assert abs(value - reference) < tolerance
    assert abs(value - _trace_elbo(model, guide, 0)) < tolerance
    return beta_elbo


def gamma_latent_model() -> None:
    scale = pyro.sample("scale", dist.Gamma(2.0, 3.0))
    pyro.sample("x", dist.Normal(0.0, scale), obs=torch.tensor(0.5))


@pytest.mark.parametrize("autoguide", [AutoDiagonalNormal, AutoMultivariateNormal])
def test_beta_elbo_at_beta_one_keeps_the_autoguides_jacobian(autoguide):
    # An autoguide's constrained site is a Delta whose log density is the unconstraining
    # Jacobian; the closed-form KL used to drop it (0.7-0.9 nats off Trace_ELBO).
    guide = autoguide(gamma_latent_model)
    beta_elbo = _beta_elbo_at_beta_one(gamma_latent_model, guide)
    assert beta_elbo.analytic_kl_sites == ()


def model_side_weighted_latent_model(weighting: str):
    handler = poutine.scale(scale=3.0) if weighting == "scale" else poutine.mask(mask=False)

    def model() -> None:
        with handler:
            loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(loc, 1.0), obs=torch.tensor(0.5))

    return model


def normal_guide() -> None:
    pyro.sample("loc", dist.Normal(0.3, 0.7))


@pytest.mark.parametrize("weighting", ["scale", "mask"])
def test_beta_elbo_honours_a_model_side_scale_or_mask_on_a_latent(weighting):
    # The closed-form KL took the guide site's scale and mask, ignoring the model's.
    model = model_side_weighted_latent_model(weighting)
    beta_elbo = _beta_elbo_at_beta_one(model, normal_guide)
    assert "loc" not in beta_elbo.analytic_kl_sites


def test_beta_elbo_keeps_the_closed_form_where_model_and_guide_weigh_alike():
    beta_elbo = objectives.build("beta_elbo", num_particles=4, max_plate_nesting=0)
    model = model_side_weighted_latent_model("scale")
    beta_elbo.loss(poutine.scale(model, scale=1.0), poutine.scale(normal_guide, scale=3.0))
    assert beta_elbo.analytic_kl_sites == ("loc",)


WEIGHTS = torch.tensor([0.5, 1.0, 2.0, 0.25, 1.5])
DATA = torch.tensor([0.3, -1.2, 0.8, 2.0, -0.4])


def tensor_scaled_model() -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 5), poutine.scale(scale=WEIGHTS):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=DATA)


def tensor_scaled_local_model() -> None:
    with pyro.plate("data", 5), poutine.scale(scale=WEIGHTS):
        shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(shift, 1.0), obs=DATA)


def tensor_scaled_local_guide() -> None:
    with pyro.plate("data", 5), poutine.scale(scale=WEIGHTS):
        pyro.sample("shift", dist.Normal(0.5 * DATA, 0.7))


@pytest.mark.parametrize("name", ["iwae", "stl", "vimco", "beta_elbo", "cubo", "msc", "tvo"])
def test_a_tensor_scale_in_the_data_plate_runs(name):
    # A site reducer called float() on the scale tensor: every objective crashed.
    loss = objectives.build(name, num_particles=4, max_plate_nesting=1).loss(
        tensor_scaled_model, normal_guide
    )
    assert math.isfinite(loss)


def test_per_datapoint_iwae_weighs_each_point_by_its_tensor_scale():
    # sum_n s_n log mean_k w_kn, with the same s_n on the local latent and observation.
    iwae = objectives.build("iwae", num_particles=50_000, per_datapoint=True)
    value = -iwae.loss(tensor_scaled_local_model, tensor_scaled_local_guide)
    exact = dist.Normal(0.0, math.sqrt(2.0)).log_prob(DATA)  # log p(x_n): shift integrated out
    assert value == pytest.approx(float((WEIGHTS * exact).sum()), abs=0.02)


def observed_only_model() -> None:
    pyro.sample("x", dist.Normal(0.0, 2.0), obs=torch.tensor(0.5))


def factor_only_model() -> None:
    pyro.factor("log_density", torch.tensor(-1.3))


def empty_guide() -> None:
    pass


@pytest.mark.parametrize("model", [observed_only_model, factor_only_model])
@pytest.mark.parametrize("name", ["iwae", "iwae_dreg", "stl", "vr", "vimco", "beta_elbo"])
def test_a_model_without_latents_scores_minus_log_p_x(name, model):
    # Such a model used to raise "no sample sites"; Trace_ELBO returns -log p(x).
    objective = objectives.build(name, num_particles=4, max_plate_nesting=0)
    expected = Trace_ELBO().loss(model, empty_guide)
    assert objective.loss(model, empty_guide) == pytest.approx(expected, rel=1e-6)


def poisson_event_model() -> None:
    pyro.sample("counts", dist.Poisson(torch.full((2,), 3.0)).to_event(1))


def poisson_event_guide() -> None:
    pyro.sample("counts", dist.Poisson(torch.full((2,), 2.5)).to_event(1))


def test_the_reparameterisation_refusal_names_the_distribution_under_to_event():
    iwae = objectives.build("iwae", num_particles=4, max_plate_nesting=0)
    with pytest.raises(ConfigError, match=r"guide site 'counts' \(Poisson\) is not"):
        iwae.loss(poisson_event_model, poisson_event_guide)
