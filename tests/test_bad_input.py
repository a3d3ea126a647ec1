"""Bad input fails before any compute, with one message that names the fix."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab import run
from pyro_elbo_lab.registry import guides

CATALOGUE = [
    (["objective.name=nope"], r"unknown objective 'nope'; registered objectives are: .*trace"),
    (["guide.name=nope"], r"unknown guide 'nope'; registered guides are: .*normal"),
    (["model.name=nope"], r"unknown model 'nope'; registered models are: .*gmm"),
    (
        ["+objective.alfa=0.5"],
        r"objective 'trace' has no parameter 'alfa'; it accepts: num_particles",
    ),
    (["objective.num_particles=many"], r"parameter 'num_particles' must be int, got 'many'"),
    (["steps=-5"], r"steps must be an integer >= 1, got -5"),
    (["objective.num_particles=0"], r"objective.num_particles must be an integer >= 1, got 0"),
    (["objective=renyi", "objective.alpha=1.0"], r"alpha must differ from 1 .*use objective=trace"),
    (["objective=rws", "objective.insomnia=2.0"], r"objective.insomnia must lie in \[0, 1\]"),
    (["model.num_components=0"], r"model.num_components must be an integer >= 1"),
    (["model.num_train=2"], r"num_train=2 is smaller than model.num_components=3"),
    (
        ["model.assignment=enumerated"],
        r"discrete latents \['assignment'\] that objective 'trace' cannot enumerate; "
        r"use objective=trace_enum, or marginalise them",
    ),
    (["optim.optim_args.lr=-0.1"], r"optim.optim_args.lr must be a number > 0"),
    (["evaluation.iwae_particles=0"], r"evaluation.iwae_particles must be an integer >= 1"),
    (["device=tpu"], r"device 'tpu' is not"),
    (["guide.init_scale=0"], r"guide.init_scale must be a finite number > 0"),
]


@pytest.mark.parametrize(
    ("overrides", "message"), CATALOGUE, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_bad_input_is_refused_before_fitting(overrides, message, compose_config):
    config = compose_config(*overrides)
    with pytest.raises(ConfigError, match=message):
        run(config)
    record = run(config, catch_errors=True)
    assert record["status"] == "failed" and "fit" not in record


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_names_the_fix(compose_config):
    with pytest.raises(
        ConfigError, match="CUDA is not available on this machine; use device=cpu or auto"
    ):
        run(compose_config("device=cuda"))


def test_wrong_top_level_types_fail_when_the_config_is_composed(compose_config):
    with pytest.raises(ConfigCompositionException, match="steps=many") as error:
        compose_config("steps=many")
    assert isinstance(error.value.__cause__, ValidationError)
    assert "could not be converted to Integer" in str(error.value.__cause__)


class _NoRsampleNormal(dist.Normal):
    has_rsample = False


def _score_function_guide(model):
    def guide(data=None):
        loc = pyro.param("guide_loc", torch.zeros(model.dim))
        pyro.sample("loc", _NoRsampleNormal(loc, 0.5).to_event(1))

    return guide


def test_reparameterised_only_objective_refuses_a_score_function_guide(
    compose_config, temporary_component
):
    temporary_component(guides, "score_function_guide", _score_function_guide)
    config = compose_config(
        "model=normal_normal",
        "objective=tail_adaptive",
        "guide=normal",
        "guide.name=score_function_guide",
        "~guide.init_scale",
        "~guide.init_loc",
    )
    with pytest.raises(
        ConfigError, match=r"guide site 'loc'.*not reparameterisable, but objective 'tail_adaptive'"
    ):
        run(config)
