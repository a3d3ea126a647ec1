"""The registry: lookup, errors that list valid names, parameter checks, entry points."""

from __future__ import annotations

import re
from importlib.metadata import EntryPoint

import pytest

from pyro_elbo_lab import registry
from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab.listing import component_listing

PYRO_OBJECTIVES = [
    "trace",
    "trace_mean_field",
    "trace_graph",
    "trace_enum",
    "renyi",
    "rws",
    "tail_adaptive",
]
PYRO_GUIDES = ["normal", "delta", "mvn", "lowrank_mvn", "iaf", "laplace"]


def test_pyro_components_are_registered_under_short_names():
    assert set(PYRO_OBJECTIVES) <= set(registry.objectives.names())
    assert set(PYRO_GUIDES) <= set(registry.guides.names())
    assert {"gmm", "normal_normal"} <= set(registry.models.names())


@pytest.mark.parametrize("kind", ["objective", "guide", "model"])
def test_unknown_name_lists_the_registered_ones(kind):
    reg = registry.REGISTRIES[kind]
    with pytest.raises(
        ConfigError, match=f"unknown {kind} 'nope'; registered {kind}s are: "
    ) as error:
        reg.get("nope")
    for name in reg.names():
        assert name in str(error.value)


def test_unknown_parameter_names_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"objective 'renyi' has no parameter 'alfa'.*alpha"):
        registry.objectives.build("renyi", alfa=0.5)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("trace", {"num_particles": "many"}, "parameter 'num_particles' must be int"),
        ("trace", {"num_particles": 2.5}, "parameter 'num_particles' must be int"),
        ("trace", {"vectorize_particles": "yes"}, "parameter 'vectorize_particles' must be bool"),
        ("renyi", {"alpha": "half"}, "parameter 'alpha' must be float"),
    ],
)
def test_wrong_types_are_rejected_with_the_expected_type(name, params, message):
    with pytest.raises(ConfigError, match=message):
        registry.objectives.build(name, **params)


def test_literal_parameters_list_their_choices():
    model = registry.models.build("normal_normal")
    with pytest.raises(ConfigError, match="one of 'median', 'mean', 'feasible', 'sample'"):
        registry.guides.build("normal", model, init_loc="middle")


def test_registering_a_name_twice_is_an_error(temporary_component):
    temporary_component(registry.objectives, "twice", lambda: None)
    with pytest.raises(ValueError, match="registered twice"):
        registry.objectives.add("twice", lambda: None)


def test_third_party_components_arrive_through_entry_points(monkeypatch):
    fresh = registry.Registry("objective", "pyro_elbo_lab.objectives")
    point = EntryPoint(
        name="third_party_elbo", value="pyro.infer:Trace_ELBO", group="pyro_elbo_lab.objectives"
    )
    monkeypatch.setattr(
        registry, "entry_points", lambda group: [point] if group == fresh.entry_point_group else []
    )
    component = fresh.get("third_party_elbo")
    assert component.factory.__name__ == "Trace_ELBO"
    assert component.description  # taken from the factory's docstring


def test_listing_names_every_component_with_its_description():
    listing = component_listing()
    for reg in registry.REGISTRIES.values():
        for component in reg:
            assert re.search(
                rf"^  {component.name}\s+{re.escape(component.description)}$", listing, re.M
            )
