"""The shared particle engine: shapes, exactness at the posterior, per-datapoint weights, errors."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal
from pyro.poutine.util import site_is_subsample

from pyro_elbo_lab.engine import (
    guess_max_plate_nesting,
    sample_log_weights,
    sample_observed_log_likelihood,
)
from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.models import GaussianMixture, NormalNormal
from tests.helpers import posterior_guide


def test_log_weights_at_the_exact_posterior_all_equal_the_log_evidence():
    model = NormalNormal(num_train=30, seed=1)
    weights = sample_log_weights(
        model, posterior_guide(model), (), {}, num_particles=64, max_plate_nesting=1
    )
    assert weights.log_weights.shape == (64,)
    # log p(x, z) - log p(z | x) = log p(x) for every z: only float32 rounding remains.
    assert torch.allclose(
        weights.log_weights, torch.full((64,), model.exact_log_evidence()), atol=2e-3
    )


def test_vectorised_weights_equal_one_particle_at_a_time():
    model = GaussianMixture(num_train=25, seed=0)
    guide = AutoNormal(model)
    single_shapes = {
        name: site["value"].shape
        for name, site in pyro.poutine.trace(guide).get_trace().nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }
    batch = sample_log_weights(model, guide, (), {}, num_particles=4, max_plate_nesting=1)
    for k in range(4):
        values = {
            name: batch.guide_trace.nodes[name]["value"][k].reshape(shape)
            for name, shape in single_shapes.items()
        }
        model_trace = pyro.poutine.trace(pyro.poutine.condition(model, data=values)).get_trace()
        guide_trace = pyro.poutine.trace(pyro.poutine.condition(guide, data=values)).get_trace()
        expected = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
        assert batch.log_weights[k].detach().item() == pytest.approx(
            expected.detach().item(), rel=1e-5
        )


def test_local_weights_sum_to_the_local_part_of_the_joint():
    model = GaussianMixture(num_train=25, seed=0)
    guide = AutoNormal(model)
    weights = sample_log_weights(
        model, guide, (), {}, num_particles=5, max_plate_nesting=1, data_plate="data"
    )
    local = weights.local_log_weights()
    assert local.shape == (5, 25)
    observed = weights.model_trace.nodes["obs"]["log_prob"].reshape(5, -1).sum(-1)
    assert torch.allclose(local.sum(-1), observed, rtol=1e-5)
    assert set(weights.global_latent_sites) == {"weights", "locs", "scales"}


def test_stopped_log_q_has_the_same_value_and_only_the_path_gradient():
    model = NormalNormal(seed=0)
    guide = AutoNormal(model)
    weights = sample_log_weights(
        model, guide, (), {}, num_particles=8, max_plate_nesting=1, stop_guide_params=True
    )
    assert torch.allclose(weights.log_q_stopped, weights.log_q)
    loc = pyro.param("AutoNormal.locs.loc").unconstrained()
    scale = pyro.param("AutoNormal.scales.loc").detach()
    (full,) = torch.autograd.grad(weights.log_q.sum(), loc, retain_graph=True)
    (path,) = torch.autograd.grad(weights.log_q_stopped.sum(), loc)
    # log N(loc + scale·eps; loc, scale) does not depend on loc: the full gradient is 0, while
    # with the parameters stopped only the path term d/dz log q · dz/dloc = -eps/scale remains.
    eps = (weights.guide_trace.nodes["loc"]["value"].detach() - loc.detach()) / scale
    assert torch.allclose(full, torch.zeros_like(full), atol=1e-5)
    assert torch.allclose(path, (-eps / scale).reshape(8, -1).sum(0).reshape(path.shape), atol=1e-4)


def test_guessed_plate_nesting_is_the_model_depth():
    model = GaussianMixture(num_train=10)
    assert guess_max_plate_nesting(model, AutoNormal(model), (), {}) == 1


def test_observed_log_likelihood_is_per_particle_and_point():
    model = NormalNormal(num_train=10, num_heldout=7, seed=0)
    per_point = sample_observed_log_likelihood(
        model,
        posterior_guide(model),
        (model.heldout_data,),
        (model.train_data,),
        num_particles=6,
        max_plate_nesting=1,
        data_plate="data",
    )
    assert per_point.shape == (6, 7)


def test_enumerated_sites_are_refused_with_the_fix():
    model = GaussianMixture(num_train=10, assignment="enumerated")
    guide = AutoNormal(pyro.poutine.block(model, hide=["assignment"]))
    with pytest.raises(ConfigError, match="objective=trace_enum"):
        sample_log_weights(model, guide, (), {}, num_particles=2, max_plate_nesting=1)


class _NoRsampleNormal(dist.Normal):
    has_rsample = False


def test_non_reparameterisable_guides_are_refused_when_the_objective_needs_it():
    model = NormalNormal()

    def guide(data=None):
        pyro.sample("loc", _NoRsampleNormal(torch.zeros(2), 1.0).to_event(1))

    with pytest.raises(ConfigError, match=r"guide site 'loc'.*not reparameterisable"):
        sample_log_weights(
            model, guide, (), {}, num_particles=2, max_plate_nesting=1, require_reparam=True
        )


def _continuous_guides() -> list[str]:
    from pyro.infer.autoguide import AutoContinuous

    from pyro_elbo_lab.registry import guides

    model = NormalNormal(num_train=20, seed=0)
    names = []
    for name in guides.names():
        try:
            guide = guides.build(name, model)
        except ConfigError:
            continue
        if isinstance(guide, AutoContinuous) and not guides.get(name).trait("point_estimate"):
            names.append(name)
    return names


@pytest.mark.parametrize("name", _continuous_guides())
def test_stopped_log_q_carries_only_the_path_gradient(name):
    """log q with stopped parameters, differentiated, must equal
    (d log q / dz at the same parameters) . dz/dphi, for every continuous guide: flows
    hold their transform modules and caches, which once leaked the score term."""
    from pyro_elbo_lab.registry import guides

    model = NormalNormal(num_train=20, seed=0)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = guides.build(name, model)
    guide(model.train_data)
    with torch.no_grad():
        for parameter in guide.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    parameters = list(guide.parameters())
    weights = sample_log_weights(
        model,
        guide,
        (model.train_data,),
        {},
        num_particles=5,
        max_plate_nesting=1,
        stop_guide_params=True,
    )
    auxiliary = next(
        site
        for site in weights.guide_trace.nodes.values()
        if site["type"] == "sample" and site["infer"].get("is_auxiliary")
    )
    engine = torch.autograd.grad(
        weights.log_q_stopped.sum(), parameters, allow_unused=True, retain_graph=True
    )
    draws = auxiliary["value"]
    held = draws.detach().requires_grad_()
    slope = torch.autograd.grad(guide.get_posterior().log_prob(held).sum(), held)[0]
    path = torch.autograd.grad(draws, parameters, grad_outputs=slope, allow_unused=True)
    for got, want in zip(engine, path, strict=True):
        got = torch.zeros(()) if got is None else got
        want = torch.zeros(()) if want is None else want
        assert torch.allclose(got, want, atol=1e-5), name
