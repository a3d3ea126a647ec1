"""run(config) -> record: seeding, records, divergence and failure handling."""

from __future__ import annotations

import json
import math

import pytest
from pyro.infer import Trace_ELBO

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab import run
from pyro_elbo_lab.lab.record import RECORD_FILE
from pyro_elbo_lab.registry import objectives


def test_a_run_records_config_components_versions_and_metrics(compose_config, tmp_path):
    config = compose_config("model=normal_normal", "objective=trace", "seed=3")
    record = run(config, output_dir=tmp_path)
    assert record["status"] == "ok", record["message"]
    assert record["components"] == {
        "model": "normal_normal",
        "guide": "normal",
        "objective": "trace",
        "optim": "adam",
        "fitter": "svi",
    }
    assert record["seed"] == 3 and record["device"] == "cpu"
    assert {"python", "torch", "pyro-ppl", "pyro-elbo-lab"} <= set(record["versions"])
    assert record["config"]["objective"]["name"] == "trace"
    assert record["fit"]["steps_completed"] == 5
    for key in ("elbo", "iwae", "heldout_loglik", "exact_log_evidence", "elbo_gap", "iwae_gap"):
        assert isinstance(record["metrics"][key], float)
    on_disk = json.loads((tmp_path / RECORD_FILE).read_text())
    assert on_disk["status"] == "ok" and on_disk["metrics"]["elbo"] == record["metrics"]["elbo"]


def test_the_same_config_and_seed_give_the_same_numbers(compose_config):
    config = compose_config("objective=renyi", "seed=1")
    first, second = run(config), run(config)
    assert first["fit"]["loss_history"] == second["fit"]["loss_history"]
    assert first["metrics"] == second["metrics"]
    other = run(compose_config("objective=renyi", "seed=2"))
    assert other["fit"]["loss_history"] != first["fit"]["loss_history"]


def test_leftover_parameters_do_not_leak_into_the_next_run(compose_config):
    config = compose_config("seed=0")
    first = run(config)
    run(compose_config("seed=5", "steps=20"))
    assert run(config)["metrics"] == first["metrics"]


class _NaNLoss(Trace_ELBO):
    def loss_and_grads(self, model, guide, *args, **kwargs):
        super().loss_and_grads(model, guide, *args, **kwargs)
        return float("nan")


def test_a_diverging_fit_stops_and_is_recorded(compose_config, temporary_component, tmp_path):
    temporary_component(objectives, "nan_loss", _NaNLoss)
    config = compose_config("objective=trace", "objective.name=nan_loss", "steps=50")
    record = run(config, output_dir=tmp_path)
    assert record["status"] == "diverged"
    assert record["fit"]["steps_completed"] == 1
    assert "non-finite" in record["message"] and "lr" in record["message"]
    assert json.loads((tmp_path / RECORD_FILE).read_text())["status"] == "diverged"


def test_a_failing_run_writes_its_record_then_raises(compose_config, tmp_path):
    config = compose_config("objective=renyi", "objective.alpha=1.0")
    with pytest.raises(ConfigError, match="alpha must differ from 1"):
        run(config, output_dir=tmp_path)
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert record["status"] == "failed" and "alpha must differ from 1" in record["message"]


def test_a_failing_run_in_a_sweep_is_caught(compose_config):
    record = run(compose_config("objective=renyi", "objective.alpha=1.0"), catch_errors=True)
    assert record["status"] == "failed" and "Traceback" in record["traceback"]


def test_the_enumerated_gmm_trains_with_trace_enum(compose_config):
    record = run(compose_config("model.assignment=enumerated", "objective=trace_enum"))
    assert record["status"] == "ok", record["message"]


def test_the_laplace_guide_is_evaluated_through_its_gaussian(compose_config):
    record = run(compose_config("model=normal_normal", "guide=laplace", "steps=50"))
    assert record["status"] == "ok", record["message"]
    assert record["metrics"]["bounds_valid"] is False
    # The Laplace Gaussian of a Gaussian posterior is exact once the MAP is found.
    assert abs(record["metrics"]["iwae_gap"]) < 0.5


def test_ais_gives_the_reference_evidence_where_no_closed_form_exists(compose_config):
    config = compose_config(
        "model=factor_analysis",
        "model.loadings=learned",
        "model.num_train=20",
        "evaluation.ais_temperatures=10",
        "evaluation.ais_chains=20",
        "evaluation.gradient_estimates=3",
        "evaluation.elbo_particles=200",  # PSIS needs >= 10 tail weights
    )
    metrics = run(config)["metrics"]
    assert "exact_log_evidence" not in metrics
    for key in ("reference_log_evidence", "ais_se", "elbo_gap", "kl_to_posterior", "psis_khat"):
        assert math.isfinite(metrics[key]), key
    assert metrics["samples"]["ais_temperatures"] == 10
    assert "heldout_loglik" not in metrics  # local latents: no guide for held-out points
    assert set(metrics["gradient"]) == {"guide"}


def test_eight_schools_runs_through_the_lab_with_its_reference_posterior(compose_config):
    metrics = run(compose_config("model=eight_schools", "steps=20"))["metrics"]
    assert set(metrics["posterior_error"]) == {"mu", "tau", "theta"}
