"""The conformance suite: every registered objective on every catalogue case ends in
agreement or a one-line refusal; ELBO-equivalent configurations match Pyro's ELBO in
expectation. Registering an objective or a model enrols it here."""

from __future__ import annotations

import collections
import math
import warnings

import pyro
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_elbo_lab.conformance import (
    ELBO_EQUIVALENTS,
    all_cases,
    check_case,
    check_elbo_equivalence,
)
from pyro_elbo_lab.conformance.__main__ import main
from pyro_elbo_lab.conformance.catalogue import handwritten_cases
from pyro_elbo_lab.conformance.checks import PYRO_KEYWORD_SETS, fresh_program
from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.objectives import StickingTheLanding
from pyro_elbo_lab.registry import models, objectives

CASES = {case.name: case for case in all_cases()}

#: What the catalogue must cover (issue 15): feature -> at least this many cases.
REQUIRED_FEATURES = {
    "subsample": 4,
    "scale": 3,
    "tensor_scale": 3,
    "mask": 2,
    "obs_mask": 1,
    "constrained": 9,
    "to_event": 3,
    "score_function": 3,
    "enumerated": 2,
    "factor": 2,
    "no_latents": 2,
    "pyro.module": 2,
    "PyroModule": 2,
    "particle_dim": 2,
    "lab_model": len(models.names()),
}


def test_the_catalogue_covers_every_kind_of_valid_program():
    assert len(handwritten_cases()) >= 40
    counts = collections.Counter(feature for case in CASES.values() for feature in case.features)
    for feature, minimum in REQUIRED_FEATURES.items():
        assert counts[feature] >= minimum, feature
    names = " ".join(CASES)
    for kind in ("nested_plates", "side_by_side_plates", "auto_dim_plates", "several_sites"):
        assert kind in names
    for autoguide in ("auto_normal", "auto_diagonal_normal", "auto_mvn", "auto_delta"):
        assert sum(name.endswith(autoguide) for name in CASES) >= 3


@pytest.mark.parametrize("case_name", CASES)
@pytest.mark.parametrize("objective", objectives.names())
def test_every_objective_agrees_or_refuses(objective, case_name):
    outcome = check_case(objective, CASES[case_name])
    assert outcome.verdict in ("agree", "refuse")


@pytest.mark.parametrize(
    ("objective", "case_name"),
    [
        ("iwae", "normal/auto_diagonal_normal"),
        ("stl", "gamma/auto_mvn"),
        ("beta_elbo", "tensor_scaled_data/handwritten"),
        ("vimco", "bernoulli_latent/handwritten"),
        ("tvo", "factor_only/empty"),
        ("trace_enum", "enumerated_local/auto_diagonal_normal"),
    ],
)
def test_supported_programs_agree(objective, case_name):
    assert check_case(objective, CASES[case_name]).verdict == "agree"


@pytest.mark.parametrize(
    ("objective", "case_name", "site"),
    [
        ("iwae", "bernoulli_latent/handwritten", "on"),
        ("stl", "score_function_normal/handwritten", "loc"),
        ("vimco", "enumerated_global/auto_normal", "component"),
        ("msc", "subsampled_local/handwritten", "shift"),
        ("iwae_dreg", "unbatched_only/auto_normal", "slope"),
        ("trace", "enumerated_local/auto_diagonal_normal", "component"),
        ("trace_mean_field", "poisson_event/handwritten", "counts"),
        ("rws", "normal/auto_delta", "loc"),
    ],
)
def test_unsupported_programs_are_refused_naming_the_site(objective, case_name, site):
    outcome = check_case(objective, CASES[case_name])
    assert outcome.verdict == "refuse"
    assert f"'{site}'" in outcome.message


@pytest.mark.slow
@pytest.mark.parametrize("case_name", CASES)
@pytest.mark.parametrize("equivalent", ELBO_EQUIVALENTS, ids=lambda spec: spec.label)
def test_elbo_equivalent_objectives_match_pyros_elbo_in_expectation(equivalent, case_name):
    outcome = check_elbo_equivalence(equivalent, CASES[case_name])
    features = CASES[case_name].features
    if outcome.verdict == "refuse":  # only programs no path-gradient objective can take
        assert {"score_function", "enumerated", "not_vectorisable"} & set(features)


def test_the_outcome_table_lists_every_objective(capsys):
    assert main([]) == 0
    table = capsys.readouterr().out
    for name in objectives.names():
        assert f"| {name} |" in table


@pytest.mark.parametrize(
    ("name", "pyro_class", "options"),
    [
        ("trace", Trace_ELBO, {}),
        ("trace_graph", TraceGraph_ELBO, {}),
        ("trace_mean_field", TraceMeanField_ELBO, {}),
        ("renyi", RenyiELBO, {"alpha": 0.5, "num_particles": 4, "vectorize_particles": True}),
    ],
)
def test_registered_pyro_objectives_draw_exactly_what_pyros_class_draws(name, pyro_class, options):
    # The lab's refusals watch Pyro's own pass and draw nothing: the first step (which
    # also initialises the guide) and the next give Pyro's numbers to the last bit.
    def losses(objective):
        pyro.clear_param_store()
        pyro.set_rng_seed(3)
        model = models.build("normal_normal", num_train=20)
        guide = AutoNormal(model)
        return [objective.loss(model, guide, model.train_data) for _ in range(2)]

    assert losses(objectives.build(name, **options)) == losses(pyro_class(**options))


#: keyword sets every objective takes as Pyro does (no objective refuses them)
TAKEN_BY_ALL = ("vectorized", "strict_enumeration_warning", "jit", "max_iarange_nesting",
                "infinite_nesting")  # fmt: skip
KEYWORD_CASE = CASES["several_sites/auto_normal"]


@pytest.mark.parametrize("keyword_set", PYRO_KEYWORD_SETS)
@pytest.mark.parametrize("objective", objectives.names())
def test_every_objective_takes_pyros_elbo_keywords_or_refuses_in_one_line(objective, keyword_set):
    keywords = PYRO_KEYWORD_SETS[keyword_set]
    with pyro.validation_enabled(True), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # max_iarange_nesting: Pyro's too
        outcome = check_case(objective, KEYWORD_CASE, **keywords)
    if keyword_set in TAKEN_BY_ALL:
        assert outcome.verdict == "agree", outcome.message
    elif outcome.verdict == "refuse":  # one line naming the keyword at fault (checked)
        assert any(key in outcome.message for key in (*keywords, "num_particles"))


def test_engine_objectives_refuse_unvectorised_particles_and_take_one_unvectorised():
    for objective in ("stl", "iwae", "vr", "beta_elbo"):
        assert check_case(objective, KEYWORD_CASE, num_particles=1, vectorize_particles=False)
        refused = check_case(objective, KEYWORD_CASE, num_particles=4, vectorize_particles=False)
        assert refused.verdict == "refuse" and "vectorize_particles=True" in refused.message


def test_pyro_classes_without_retain_graph_refuse_it_and_take_its_default():
    for objective in ("renyi", "rws"):
        refused = check_case(objective, KEYWORD_CASE, retain_graph=True)
        assert refused.verdict == "refuse" and "takes no retain_graph" in refused.message
        assert check_case(objective, KEYWORD_CASE, retain_graph=None).verdict == "agree"


@pytest.mark.parametrize("objective", ["stl", "iwae_dreg", "trace"])
def test_retain_graph_reaches_backward_as_in_pyro(objective, monkeypatch):
    seen = []
    backward = torch.Tensor.backward

    def recording(self, *args, **kwargs):
        seen.append(kwargs.get("retain_graph"))
        return backward(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", recording)
    program = fresh_program(KEYWORD_CASE)
    elbo = objectives.build(objective, retain_graph=True, max_plate_nesting=1, num_particles=2,
                            vectorize_particles=True)  # fmt: skip
    elbo.loss_and_grads(program.model, program.guide, *program.args, **program.kwargs)
    assert seen == [True]


def test_a_keyword_pyro_does_not_have_still_fails_in_one_line():
    for objective in ("stl", "trace", "renyi"):
        with pytest.raises(ConfigError, match=r"has no parameter 'particles'") as refused:
            objectives.build(objective, particles=4)
        assert "\n" not in str(refused.value)


def test_pyros_deprecated_nesting_keyword_warns_as_pyro_does():
    with pytest.warns(DeprecationWarning, match="max_iarange_nesting is deprecated"):
        elbo = StickingTheLanding(max_iarange_nesting=2)
    assert elbo.options.max_plate_nesting == 2 and elbo.max_plate_nesting == 2
    assert StickingTheLanding(max_plate_nesting=math.inf).options.max_plate_nesting is None


def test_the_keyword_table_lists_every_objective(capsys):
    assert main(["--keywords"]) == 0
    table = capsys.readouterr().out
    assert all(f"| {name} |" in table for name in objectives.names())
    assert "takes no retain_graph" in table
