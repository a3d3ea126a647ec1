"""The sweep's console: a progress bar per sweep on terminals only, warnings summed up."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_module
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf

from pyro_elbo_lab.lab import console
from pyro_elbo_lab.lab.console import SweepConsole, WarningCollector, count_jobs


def _sweep_config(*overrides: str):
    with initialize_config_module("pyro_elbo_lab.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def _sweep(params: dict, task: list[str]):
    return OmegaConf.create({"hydra": {"sweeper": {"params": params}, "overrides": {"task": task}}})


def test_the_job_count_is_the_product_of_the_swept_values():
    assert count_jobs(_sweep_config()) == 4 * 8  # the main job: 4 objectives, 8 seeds
    assert count_jobs(_sweep_config("experiment=smoke")) == 2
    # the command line's overrides replace the preset's and add their own sweeps
    params = {"objective": "trace,renyi", "seed": "0"}
    assert count_jobs(_sweep(params, ["objective=trace,iwae,stl", "seed=range(4)"])) == 3 * 4
    assert count_jobs(_sweep(params, ["steps=5"])) == 2


def test_pyro_and_torch_warnings_are_counted_and_others_shown_once(monkeypatch):
    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *rest: shown.append(str(message)))
    with WarningCollector() as collector:
        for _ in range(3):
            warnings.warn_explicit(
                "enumerate nothing", UserWarning, "/x/site-packages/pyro/a.py", 1
            )
            warnings.warn_explicit("a user's warning", UserWarning, "/home/me/model.py", 7)
    assert collector.summary() == ["3x UserWarning: enumerate nothing"]
    assert shown == ["a user's warning"]


def test_the_sweep_bar_counts_jobs_and_failures_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(console, "interactive", lambda: True)
    callback = SweepConsole()
    config = _sweep_config("experiment=smoke")
    callback.on_multirun_start(config)
    for status in ("ok", "failed"):
        callback.on_job_end(
            config, SimpleNamespace(status=JobStatus.COMPLETED, return_value=status)
        )
    callback.on_multirun_end(config)
    shown = capsys.readouterr().err
    assert "sweep" in shown and "2/2" in shown and "failed=1" in shown


def test_no_bar_in_ci_logs(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert not console.interactive()


@pytest.mark.slow
def test_a_sweep_sums_up_pyros_repeated_warnings_once(tmp_path):
    from tests.test_cli import elbo_lab  # the CLI helper, run in a subprocess

    result = elbo_lab(
        "experiment=smoke",
        "objective=trace_enum",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    console_output = result.stdout + result.stderr  # Hydra logs to stdout
    assert console_output.count("warnings from Pyro and PyTorch during the sweep") == 1
    assert "x UserWarning: TraceEnum_ELBO found no sample sites" in console_output
    assert "sweep:" not in result.stderr  # not a terminal: no progress bar
