"""The sigmoid belief network: its exact evidence, its guide, and what it refuses."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.evaluation.learned_model import per_image_bounds
from pyro_elbo_lab.lab import run
from pyro_elbo_lab.registry import guides, models

SMALL = {"num_train": 40, "num_heldout": 10, "num_latents": 3, "subsample_size": None}


def _brute_force_log_marginal(model, images: torch.Tensor) -> torch.Tensor:
    """Σ over every state, one state at a time with torch's own Bernoulli densities."""
    prior = torch.distributions.Bernoulli(logits=model.network.prior_logits)
    terms = []
    for state in model.states:
        likelihood = torch.distributions.Bernoulli(logits=model.network.decoder(state))
        terms.append(prior.log_prob(state).sum() + likelihood.log_prob(images).sum(-1))
    return torch.stack(terms).logsumexp(0)


@pytest.mark.parametrize("hidden", [[], [7]])
def test_the_exact_evidence_is_the_sum_over_every_latent_state(hidden):
    torch.manual_seed(0)
    model = models.build("sbn", **SMALL, hidden=hidden)
    with torch.no_grad():  # move θ off its symmetric start
        for value in model.network.parameters():
            value.normal_()
    expected = _brute_force_log_marginal(model, model.train_data)
    torch.testing.assert_close(model.log_marginal(model.train_data), expected)
    assert model.exact_log_evidence() == pytest.approx(
        float(expected.detach().double().sum()), rel=1e-6
    )


def test_the_iwae_bound_reaches_the_exact_evidence_per_image():
    model = models.build("sbn", **SMALL)
    guide = guides.build("amortized_bernoulli", model, hidden=[8])
    guide(model.train_data)
    bounds = per_image_bounds(
        model, guide, model.heldout_data, num_particles=8000, image_batch=5, particle_batch=2000
    )
    estimate = bounds.iwae
    assert (bounds.elbo <= estimate).all()  # a mean of logs under the log of the mean
    exact = model.log_marginal(model.heldout_data).detach()
    # q = Bernoulli(1/2)^3 proposes each of the 8 states; the relative variance of w is at
    # most 7, so each image's estimate has sd <= sqrt(7 / 8000) = 0.03 and bias ~ 5e-4.
    assert (estimate <= exact + 0.15).all()
    assert abs(float((estimate - exact).mean())) < 5 * math.sqrt(7 / 8000 / 10)


def test_the_exact_marginal_model_has_no_latents_and_trace_gives_its_evidence():
    model = models.build("sbn", **SMALL, marginal="exact")
    guide = guides.build("none", model)
    loss = Trace_ELBO().loss(model, guide, model.train_data)
    assert loss == pytest.approx(-model.exact_log_evidence(), rel=1e-5)


def test_training_by_the_exact_marginal_raises_the_test_likelihood(compose_config):
    config = compose_config(
        "model=sbn", "model.marginal=exact", "guide=none", "model.num_train=300",
        "model.num_heldout=50", "model.num_latents=4", "model.subsample_size=100",
        "steps=150", "optim.optim_args.lr=0.02", "evaluation.test_particles=1",
    )  # fmt: skip
    record = run(config)
    assert record["status"] == "ok", record["message"]
    metrics = record["metrics"]
    # 784 pixels at p = 1/2 is -543.4 nats an image; the marginal fit learns pixel means
    assert metrics["exact_test_loglik"] < -100
    assert metrics["exact_test_loglik"] > -300
    assert metrics["test_loglik"] == pytest.approx(metrics["exact_test_loglik"], abs=1e-3)
    assert record["model_parameters"]["names"] == ["sbn$$$prior_logits", "sbn$$$decoder.0.weight",
                                                   "sbn$$$decoder.0.bias"]  # fmt: skip


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_latents": 17}, "at most H = 16"),
        ({"marginal": "enumerated"}, "parameter 'marginal' must be one of 'sampled', 'exact'"),
        ({"hidden": [0]}, "model.hidden entries"),
    ],
)
def test_bad_options_fail_in_one_line(params, message):
    with pytest.raises(ConfigError, match=message):
        models.build("sbn", **{**SMALL, **params})


def test_guide_none_refuses_a_model_with_latents():
    with pytest.raises(ConfigError, match=r"guide=none is for models without latents.*\['z'\]"):
        guides.build("none", models.build("sbn", **SMALL))


def test_the_bernoulli_guide_refuses_continuous_latents():
    vae = models.build("vae", num_train=20, num_heldout=5, latent_dim=2, hidden=[4])
    guide = guides.build("amortized_bernoulli", vae)
    with pytest.raises(ConfigError, match="takes binary latents; site 'z' \\(Normal\\)"):
        guide(vae.train_data)


def test_a_path_gradient_objective_refuses_the_binary_latents(compose_config):
    config = compose_config(*models.example_overrides("sbn"), "objective=iwae")
    record = run(config, catch_errors=True)
    assert record["status"] == "failed"
    assert "guide site 'z' (Bernoulli) is not reparameterisable" in record["message"]


@pytest.mark.parametrize("baseline", ["average", "network"])
def test_trace_graph_trains_with_each_baseline(baseline, compose_config):
    config = compose_config(
        *models.example_overrides("sbn"), "objective=trace_graph", f"guide.baseline={baseline}",
        "guide.hidden=[8]", "steps=20",
    )  # fmt: skip
    record = run(config)
    assert record["status"] == "ok", record["message"]
    names = list(pyro.get_param_store().keys())
    if baseline == "network":
        assert any("baseline_network" in name for name in names)
    else:
        assert any(name.startswith("__baseline_avg_downstream_cost") for name in names)
