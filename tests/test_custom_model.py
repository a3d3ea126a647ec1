"""model=custom: a plain Pyro model callable from the user's own file or module."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab import run
from pyro_elbo_lab.models import CustomModel
from pyro_elbo_lab.models.custom import load_target

MODEL_FILE = textwrap.dedent(
    """
    import pyro
    import pyro.distributions as dist
    import torch


    def model(data):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 3.0).to_event(1))
        with pyro.plate("data", data.shape[0]):
            pyro.sample("obs", dist.Normal(loc, 1.0).to_event(1), obs=data)


    def no_data_model():
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        pyro.factor("pull", -0.5 * (loc - 1.0) ** 2)


    def broken(data):
        raise ValueError("columns must be positive")


    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def user_files(tmp_path):
    module = tmp_path / "user_model.py"
    module.write_text(MODEL_FILE)
    data = tmp_path / "points.csv"
    rows = np.random.default_rng(0).normal(1.5, 1.0, size=(40, 2))
    np.savetxt(data, rows, delimiter=",", header="a,b", comments="")
    return module, data


def test_a_model_from_a_file_gets_its_data_split_and_plate_depth(user_files):
    module, data = user_files
    model = CustomModel(target=f"{module}:model", data=str(data), num_heldout=10, seed=3)
    assert model.train_data.shape == (30, 2) and model.heldout_data.shape == (10, 2)
    assert model.max_plate_nesting == 1
    again = CustomModel(target=f"{module}:model", data=str(data), num_heldout=10, seed=3)
    assert (again.train_data == model.train_data).all()


def test_a_model_from_a_module_path_loads():
    program = load_target("pyro_elbo_lab.models.custom:poisson_regression")
    assert callable(program)


def test_the_lab_sweeps_a_custom_model_and_notes_what_it_cannot_measure(user_files, compose_config):
    module, data = user_files
    overrides = [
        "model=custom",
        f"model.target={module}:model",
        f"model.data={data}",
        "model.num_heldout=10",
    ]
    for objective in ("trace", "iwae", "stl"):
        record = run(compose_config(*overrides, f"objective={objective}", "steps=30"))
        assert record["status"] == "ok", record["message"]
        metrics = record["metrics"]
        assert math.isfinite(metrics["elbo"]) and math.isfinite(metrics["heldout_loglik"])
        assert "kl_to_posterior" not in metrics and "posterior_error" not in metrics
        notes = " ".join(metrics["warnings"])
        assert "no exact or reference log evidence" in notes
        assert "posterior error is not measured" in notes


def test_a_model_without_data_takes_no_argument(user_files, compose_config):
    module, _ = user_files
    record = run(compose_config("model=custom", f"model.target={module}:no_data_model"))
    assert record["status"] == "ok", record["message"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("user_model.py", r"model.target must be PATH.py:NAME or package.module:NAME"),
        ("missing.py:model", r"file '.*missing.py' does not exist"),
        ("no_such_package.models:model", r"module 'no_such_package.models' cannot be imported"),
        ("{module}:nothing", r"has no 'nothing'; its callables are: broken, model, no_data_model"),
        ("{module}:NOT_CALLABLE", r"is a int, not a callable Pyro model"),
        ("{module}:broken", r"raised ValueError when run on the data \(40, 2\): columns must be"),
    ],
)
def test_bad_targets_fail_in_one_line_naming_the_fix(user_files, target, message):
    module, data = user_files
    with pytest.raises(ConfigError, match=message) as raised:
        CustomModel(target=target.format(module=module), data=str(data))
    assert "\n" not in str(raised.value)


def test_held_out_rows_need_the_named_data_plate(user_files):
    module, data = user_files
    with pytest.raises(ConfigError, match=r"plate named 'rows'.*model.num_heldout=0"):
        CustomModel(target=f"{module}:model", data=str(data), num_heldout=5, data_plate="rows")


def test_model_custom_without_a_target_names_the_option():
    with pytest.raises(ConfigError, match=r"model=custom needs model.target="):
        CustomModel()
