"""Models with parameters θ of their own: every objective trains θ by the gradient of the
bound it states, or refuses; what a run learned is saved and loads back."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab import run
from pyro_elbo_lab.lab.learned import load_model_parameters
from pyro_elbo_lab.registry import objectives

DATA = torch.tensor([0.5, 1.5, 1.0])
THETA, Q_LOC, Q_SCALE = 0.3, 1.0, 0.7


def model(data):
    """z ~ N(θ, 1), x_i ~ N(z, 1); θ a parameter of the model."""
    theta = pyro.param("theta", torch.tensor(THETA))
    z = pyro.sample("z", dist.Normal(theta, 1.0))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("x", dist.Normal(z, 1.0), obs=data)


def guide(data):
    loc = pyro.param("q_loc", torch.tensor(Q_LOC))
    scale = pyro.param("q_scale", torch.tensor(Q_SCALE))
    pyro.sample("z", dist.Normal(loc, scale))


def iwae_theta_gradient(num_particles: int, draws: int = 400_000) -> tuple[float, float]:
    r"""The loss gradient −∇θ L_K = −E[Σ_k w̃_k (z_k − θ)] under q, by plain Monte Carlo
    (at K = 1 it is the ELBO's, θ − E_q[z] exactly), with its standard error."""
    generator = torch.Generator().manual_seed(1)
    z = Q_LOC + Q_SCALE * torch.randn(draws, num_particles, generator=generator)
    log_weights = (
        dist.Normal(THETA, 1.0).log_prob(z)
        + dist.Normal(z.unsqueeze(-1), 1.0).log_prob(DATA).sum(-1)
        - dist.Normal(Q_LOC, Q_SCALE).log_prob(z)
    )
    per_draw = -(torch.softmax(log_weights, -1) * (z - THETA)).sum(-1)
    return float(per_draw.mean()), float(per_draw.std() / math.sqrt(draws))


def _smallest_objective(name: str):
    """The objective with its fewest particles (1 where defined, else 2)."""
    try:
        return objectives.build(name, num_particles=1, max_plate_nesting=1), 1
    except ConfigError:
        return objectives.build(name, num_particles=2, max_plate_nesting=1), 2


@pytest.mark.slow
@pytest.mark.parametrize("name", objectives.names())
def test_theta_follows_the_gradient_of_the_bound_or_is_refused(name):
    objective, num_particles = _smallest_objective(name)
    if objective.model_gradient is None:
        with pytest.raises(ConfigError, match="does not train them"):
            objective.loss_and_grads(model, guide, DATA)
        return
    gradients = []
    for _ in range(1500):
        pyro.clear_param_store()
        objective.loss_and_grads(model, guide, DATA)
        gradients.append(float(pyro.param("theta").grad))
    gradients = torch.tensor(gradients, dtype=torch.float64)
    mean, se = float(gradients.mean()), float(gradients.std() / math.sqrt(len(gradients)))
    # ELBO objectives at K = 1 and the IWAE-type ones (wake-θ included) at K = 2 follow
    # the IWAE_K bound's θ-gradient; 4.5 s.e. covers 20 objectives at a 1e-4 false-alarm rate
    expected, expected_se = iwae_theta_gradient(num_particles)
    assert abs(mean - expected) <= 4.5 * math.hypot(se, expected_se) + 1e-6, (mean, expected)


LEARNED_MODEL = """
import pyro
import pyro.distributions as dist
import torch


def model(data):
    theta = pyro.param("theta", torch.tensor(0.0))
    z = pyro.sample("z", dist.Normal(theta, 1.0))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("x", dist.Normal(z, 1.0), obs=data[:, 0])
"""


@pytest.fixture
def learned_model(tmp_path):
    """A custom model with θ, and data whose mean is θ's maximum-likelihood value
    (the marginal is N(θ·1, I + 11ᵀ), so the MLE is the sample mean)."""
    (tmp_path / "learned.py").write_text(LEARNED_MODEL)
    data = 2.0 + np.random.default_rng(0).normal(size=(30, 1))
    np.savetxt(tmp_path / "x.csv", data, delimiter=",")
    overrides = (
        "model=custom", f"model.target={tmp_path / 'learned.py'}:model",
        f"model.data={tmp_path / 'x.csv'}", "model.num_heldout=0",
    )  # fmt: skip
    return overrides, float(data.mean())


@pytest.mark.parametrize("name", ["cubo", "fdiv", "msc", "tail_adaptive"])
def test_the_lab_refuses_theta_with_an_objective_that_cannot_train_it(
    compose_config, learned_model, name
):
    overrides, _ = learned_model
    with pytest.raises(ConfigError, match=f"objective '{name}' does not train them"):
        run(compose_config(*overrides, f"objective={name}"))


@pytest.mark.slow
def test_a_learned_theta_reaches_its_maximum_likelihood_value_and_loads_back(
    compose_config, learned_model, tmp_path
):
    overrides, mle = learned_model
    config = compose_config(*overrides, "steps=2000", "final_lr_fraction=0.02")
    record = run(config, output_dir=tmp_path / "run")
    assert record["status"] == "ok", record["message"]
    assert record["model_parameters"] == {
        "names": ["theta"], "trained_by": "bound", "file": "model_parameters.pt"
    }  # fmt: skip
    # The guide family holds the posterior, so the ELBO's optimum in θ is the MLE; the
    # iterate's noise after the decayed steps is about 0.01 (measured: 0.875 vs 0.869).
    learned = load_model_parameters(tmp_path / "run", into_param_store=True)
    assert float(learned["theta"]) == pytest.approx(mle, abs=0.05)
    assert float(pyro.param("theta")) == float(learned["theta"])


NEURAL_MODEL = """
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

decoder = torch.nn.Linear(1, 1)
scale = PyroModule[torch.nn.Linear](1, 1)


def model(data):
    pyro.module("decoder", decoder)
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    with pyro.plate("data", data.shape[0]):
        loc = decoder(z.reshape(-1, 1)).squeeze(-1) + scale(z.reshape(-1, 1)).squeeze(-1)
        pyro.sample("x", dist.Normal(loc.unsqueeze(-1), 1.0), obs=data[:, 0])
"""


def test_pyro_module_and_pyro_module_parameters_are_learned_and_saved(
    compose_config, learned_model, tmp_path
):
    overrides, _ = learned_model
    (tmp_path / "neural.py").write_text(NEURAL_MODEL)
    overrides = (*overrides[:1], f"model.target={tmp_path / 'neural.py'}:model", *overrides[2:])
    record = run(compose_config(*overrides, "steps=3"), output_dir=tmp_path / "run")
    assert record["status"] == "ok", record["message"]
    names = record["model_parameters"]["names"]
    assert {"decoder$$$weight", "decoder$$$bias", "weight", "bias"} <= set(names), names
    assert set(load_model_parameters(tmp_path / "run")) == set(names)
