"""φ-stopped guide densities without a second guide pass equal the replayed ones."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_elbo_lab.engine import particles, sample_log_weights
from pyro_elbo_lab.engine.stopped import detached_distribution, stopped_guide_trace
from pyro_elbo_lab.registry import guides, models

CASES = [
    ("normal", "beta_bernoulli", {}),
    ("normal", "eight_schools", {}),
    ("amortized", "vae", {"num_train": 60, "num_heldout": 0, "subsample_size": 20}),
    ("amortized", "factor_analysis", {}),
    ("amortized_bernoulli", "sbn", {"num_train": 40, "num_heldout": 0, "num_latents": 3}),
]


def _stopped_weights(guide_name, model_name, model_options, replay, monkeypatch):
    """log q with φ stopped (total and per datapoint) and the guide's parameters, on the
    draws of seed 0; ``replay`` forces the second guide pass."""
    if replay:
        monkeypatch.setattr(particles, "stopped_guide_trace", lambda guide, trace: None)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = models.build(model_name, **model_options)
    guide = guides.build(guide_name, model)
    args = (model.train_data,)
    guide(*args)
    with torch.no_grad():  # away from the initial values, so every parameter matters
        for parameter in guide.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    pyro.set_rng_seed(1)
    weights = sample_log_weights(
        model, guide, args, {}, num_particles=4,
        max_plate_nesting=model.max_plate_nesting, stop_guide_params=True,
        data_plate=getattr(model, "data_plate", None),
    )  # fmt: skip
    monkeypatch.undo()
    return weights, list(guide.parameters()), guide


@pytest.mark.parametrize(("guide_name", "model_name", "model_options"), CASES)
def test_the_detached_sites_give_the_replayed_value_and_gradient(
    guide_name, model_name, model_options, monkeypatch
):
    fast, parameters, guide = _stopped_weights(
        guide_name, model_name, model_options, False, monkeypatch
    )
    assert stopped_guide_trace(guide, fast.guide_trace) is not None  # the fast path ran
    slow, slow_parameters, _ = _stopped_weights(
        guide_name, model_name, model_options, True, monkeypatch
    )
    torch.testing.assert_close(fast.log_q_stopped, slow.log_q_stopped)
    torch.testing.assert_close(fast.log_q_stopped, fast.log_q)
    if fast.local_log_q_stopped is not None:
        torch.testing.assert_close(fast.local_log_q_stopped, slow.local_log_q_stopped)
    # binary draws have no path: neither carries a gradient
    assert fast.log_q_stopped.requires_grad == slow.log_q_stopped.requires_grad
    if not fast.log_q_stopped.requires_grad:
        return
    pairs = [(fast.log_q_stopped.sum(), parameters), (slow.log_q_stopped.sum(), slow_parameters)]
    fast_grads, slow_grads = (
        torch.autograd.grad(total, params, allow_unused=True) for total, params in pairs
    )
    for got, want in zip(fast_grads, slow_grads, strict=True):
        got = torch.zeros(()) if got is None else got
        want = torch.zeros(()) if want is None else want
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_chained_encoder_is_replayed():
    """Under ``chain`` a site's parameters come from another site's draw: detaching them
    would cut that path, so the guide is replayed."""
    pyro.clear_param_store()
    model = models.build("vae", num_train=20, num_heldout=0, top_latent_dim=5)
    guide = guides.build("amortized", model, chain=True)
    trace = pyro.poutine.trace(guide).get_trace(model.train_data)
    assert stopped_guide_trace(guide, trace) is None


def test_an_unknown_distribution_is_left_to_the_replay():
    assert detached_distribution(pyro.distributions.Gamma(2.0, 3.0)) is None
