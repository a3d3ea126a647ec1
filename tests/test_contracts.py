"""Contract checks over the registry: every registered objective and guide is enrolled.

Registering a component is enough to be checked here: it trains a few steps on the
Normal–Normal model through the lab, gives finite numbers, reproduces under the same
seed, and leaves its parameters on the configured device.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyro_elbo_lab.lab import run
from pyro_elbo_lab.registry import guides, models, objectives


def _objective_fact(name: str, fact: str, default: bool = False) -> bool:
    """A fact an objective states on its instance (``enumerates``, ``reports_loss``)."""
    return getattr(objectives.build(name), fact, default)


def _lab_overrides(kind: str, name: str) -> list[str]:
    # Objectives that enumerate discrete latents are checked on a model that has some.
    if kind == "objective" and _objective_fact(name, "enumerates"):
        return [f"{kind}={name}", "model=gmm", "model.assignment=enumerated", "steps=8"]
    # Guides that name the configuration they are for are checked there.
    if kind == "guide" and guides.get(name).trait("example_overrides"):
        return [f"{kind}={name}", *guides.get(name).trait("example_overrides"), "steps=8"]
    # Guides for per-point latents are checked on a model that has them.
    if kind == "guide" and guides.get(name).trait("local_latents"):
        return [f"{kind}={name}", "model=factor_analysis", "steps=8"]
    return [f"{kind}={name}", "model=normal_normal", "steps=8"]


def _device_of_params() -> set[str]:
    return {value.device.type for value in pyro.get_param_store().values()}


@pytest.mark.parametrize("name", objectives.names())
def test_objective_contract(name, compose_config):
    config = compose_config(*_lab_overrides("objective", name), "seed=11")
    record = run(config)
    assert record["status"] == "ok", record["message"]
    finite = [loss for loss in record["fit"]["loss_history"]["loss"] if math.isfinite(loss)]
    if _objective_fact(name, "reports_loss", True):
        assert len(finite) == len(record["fit"]["loss_history"]["loss"])
    assert math.isfinite(record["metrics"]["elbo"]) and math.isfinite(record["metrics"]["iwae"])
    assert _device_of_params() == {"cpu"}
    again = run(config)
    assert again["fit"]["loss_history"] == record["fit"]["loss_history"]
    assert again["metrics"] == record["metrics"]


@pytest.mark.parametrize("name", guides.names())
def test_guide_contract(name, compose_config):
    config = compose_config(*_lab_overrides("guide", name), "seed=11")
    record = run(config)
    assert record["status"] == "ok", record["message"]
    assert math.isfinite(record["fit"]["final_loss"])
    metrics = record["metrics"]
    assert math.isfinite(metrics["elbo"])
    # Guide-based held-out likelihood needs global latents (see evaluation.predictive);
    # a model that learns θ is measured on held-out points by its test log-likelihood.
    if not guides.get(name).trait("local_latents"):
        assert math.isfinite(metrics.get("heldout_loglik", metrics.get("test_loglik")))
    assert _device_of_params() == {"cpu"}
    assert run(config)["metrics"] == record["metrics"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", objectives.names())
def test_objective_runs_on_cuda(name, compose_config):
    record = run(compose_config(*_lab_overrides("objective", name), "device=cuda"))
    assert record["status"] == "ok", record["message"]
    assert _device_of_params() == {"cuda"}


def _valid_pairs() -> list[tuple[str, str]]:
    pairs = []
    for objective in objectives.names():
        if _objective_fact(objective, "enumerates"):
            continue  # needs enumerated latents: checked on the enumerated GMM above
        pairs += [(objective, model) for model in models.names()]
    return pairs


@pytest.mark.slow
@pytest.mark.parametrize(("objective", "model"), _valid_pairs())
def test_every_objective_trains_every_model_and_bounds_sit_below_the_truth(
    objective, model, compose_config
):
    record = run(
        compose_config(f"objective={objective}", *models.example_overrides(model), "steps=5"),
        catch_errors=True,
    )
    if record["status"] == "failed":
        refusals = []
        if _objective_fact(objective, "model_gradient", "bound") is None:
            refusals.append("does not train them")  # a model with parameters of its own
        if _objective_fact(objective, "requires_reparam"):
            refusals.append("is not reparameterisable")  # a model with discrete latents
        assert any(refusal in record["message"] for refusal in refusals), record["message"]
        return
    assert record["status"] == "ok", record["message"]
    metrics = record["metrics"]
    truth = metrics.get("exact_log_evidence")
    if truth is not None:
        # E[ELBO] <= E[IWAE_K] <= log p(x) for any guide: beyond 4 standard errors is a bug.
        assert metrics["elbo"] - 4 * metrics["elbo_se"] <= truth
        assert metrics["iwae"] - 4 * metrics["iwae_se"] <= truth
