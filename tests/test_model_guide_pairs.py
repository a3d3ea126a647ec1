"""Every registered (model, guide) pair either runs or refuses in one line before any
step, naming what to use instead. Registering a model or a guide enrols it here."""

from __future__ import annotations

import pytest
from pyro import poutine

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab.components import build_components
from pyro_elbo_lab.registry import guides, models

PAIRS = [(model, guide) for model in models.names() for guide in guides.names()]


@pytest.mark.slow
@pytest.mark.parametrize(("model", "guide"), PAIRS)
def test_a_model_guide_pair_runs_or_refuses_naming_the_fix(model, guide, compose_config):
    overrides = [o for o in models.example_overrides(model) if not o.startswith("guide=")]
    config = compose_config(*overrides, f"guide={guide}")
    try:
        components = build_components(config)
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message
        assert "use " in message or "set " in message or "give " in message, message
        return
    with poutine.block():  # the guide serves the model's sites: it runs on its data
        poutine.trace(components.guide).get_trace(components.model.train_data)


@pytest.mark.parametrize(
    ("model", "guide", "fix"),
    [
        ("sbn", "normal", "use guide=amortized_bernoulli"),
        ("sbn", "mvn", "use guide=amortized_bernoulli"),
        ("vae", "normal", "use guide=amortized"),
        ("vae", "flow", "use guide=amortized"),
    ],
)
def test_a_guide_that_cannot_serve_the_model_names_the_one_that_fits(
    model, guide, fix, compose_config
):
    config = compose_config(*models.example_overrides(model), f"guide={guide}")
    with pytest.raises(ConfigError, match=fix):
        build_components(config)


@pytest.mark.parametrize(("model", "guide"), [("vae", "amortized"), ("sbn", "amortized_bernoulli")])
def test_a_learned_model_gets_its_guide_and_evaluation_sizes_by_default(
    model, guide, compose_config
):
    config = compose_config(f"model={model}", fast=False)
    assert config.guide.name == guide
    assert config.evaluation.test_particles == 100 and config.evaluation.elbo_particles == 20
    named = compose_config(f"model={model}", "evaluation.test_particles=5000", fast=False)
    assert named.evaluation.test_particles == 5000  # the command line still wins


@pytest.mark.parametrize(
    ("model", "objective", "expected"),
    [
        ("vae", "iwae", True),  # every latent local to the data plate: the papers' bound
        ("sbn", "vimco", True),
        ("normal_normal", "iwae", False),  # a global latent: the joint bound
        ("gmm", "iwae", False),
    ],
)
def test_per_datapoint_bounds_are_the_default_where_every_latent_is_local(
    model, objective, expected, compose_config
):
    config = compose_config(*models.example_overrides(model), f"objective={objective}")
    assert build_components(config).objective.per_datapoint is expected
    joint = compose_config(
        *models.example_overrides(model), f"objective={objective}", "objective.per_datapoint=false"
    )
    assert build_components(joint).objective.per_datapoint is False
