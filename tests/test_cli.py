"""The command line, end to end: real multiruns in subprocesses, reports, launchers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from pyro_elbo_lab.cpu_budget import cpu_budget

SMOKE = ["experiment=smoke", "progress_bar=false"]


def elbo_lab(*arguments: str, cwd: Path, module: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pyro_elbo_lab"] if module else ["elbo-lab"]
    return subprocess.run(
        [*command, *arguments], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def records(sweep: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(sweep.rglob("record.json"))]


@pytest.mark.slow
def test_a_sweep_writes_records_table_and_plots(tmp_path):
    sweep = tmp_path / "sweep"
    result = elbo_lab(*SMOKE, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in records(sweep)] == ["ok", "ok"]
    for name in ("comparison.md", "comparison.csv", "loss_curves.png", "metrics.png"):
        assert (sweep / name).stat().st_size > 0, name
    table = (sweep / "comparison.md").read_text()
    assert "`trace/normal/gmm" in table and "`renyi/normal/gmm" in table
    assert "Δ ELBO" in table
    assert "`trace/normal/gmm" in result.stdout  # printed to the console too


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    result = elbo_lab(
        *SMOKE,
        "objective=renyi",
        "objective.alpha=0.5,1.0",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    statuses = sorted(r["status"] for r in records(sweep))
    assert statuses == ["failed", "ok"]
    assert "alpha must differ from 1" in (sweep / "comparison.md").read_text()


@pytest.mark.slow
def test_the_report_is_rebuilt_from_records_alone(tmp_path):
    sweep = tmp_path / "sweep"
    assert elbo_lab(*SMOKE, f"hydra.sweep.dir={sweep}", cwd=tmp_path).returncode == 0
    for name in ("comparison.md", "comparison.csv"):
        (sweep / name).unlink()
    (sweep / "99").mkdir()
    (sweep / "99" / "record.json").write_text('{"truncated": ')  # a job killed mid-write
    rebuilt = subprocess.run(
        ["elbo-lab-report", str(sweep)], capture_output=True, text=True, check=False
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "`trace/normal/gmm" in (sweep / "comparison.md").read_text()
    assert (sweep / "comparison.csv").exists()


def test_the_report_command_says_when_there_are_no_records(tmp_path):
    result = subprocess.run(
        ["elbo-lab-report", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "no run records" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", [None, 2])
def test_the_parallel_launcher_runs_jobs_in_worker_processes_with_the_cpu_budget(tmp_path, n_jobs):
    sweep = tmp_path / "sweep"
    chosen = [] if n_jobs is None else [f"hydra.launcher.n_jobs={n_jobs}"]
    result = elbo_lab(*SMOKE, *chosen, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    done = records(sweep)
    assert [r["status"] for r in done] == ["ok", "ok"]
    budget = cpu_budget()
    workers = min(2, budget if n_jobs is None else n_jobs)
    if workers > 1:
        assert f"Launching 2 jobs in {workers} worker processes" in result.stdout
    assert {r["torch_threads"] for r in done} == {max(1, budget // (n_jobs or budget))}
    assert (sweep / "comparison.md").exists()


def test_the_default_sweep_directory_resolves_and_resume_names_it():
    with initialize_config_module("pyro_elbo_lab.conf", version_base="1.3"):
        fresh = compose("config", return_hydra_config=True)
        resumed = compose("config", overrides=["resume=old/sweep"], return_hydra_config=True)
    date, time_suffix = r"\d{4}-\d\d-\d\d", r"\d\d-\d\d-\d\d-[0-9a-f]{6}"
    assert re.fullmatch(f"multirun/{date}/{time_suffix}", fresh.hydra.sweep.dir)
    assert resumed.hydra.sweep.dir == "old/sweep"


@pytest.mark.parametrize(
    ("overrides", "warned"), [([], False), (["tune=true"], True), (["protocol=plain"], False)]
)
def test_a_single_run_warns_about_tuning_only_when_asked_to_tune(tmp_path, overrides, warned):
    run_dir = tmp_path / "run"
    result = elbo_lab(
        "hydra.mode=RUN", "steps=3", "progress_bar=false", *overrides,
        f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ("this single run is not tuned" in result.stdout + result.stderr) == warned


@pytest.mark.slow
def test_the_local_submitit_launcher_runs_a_four_job_sweep_and_the_report_rebuilds(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    result = elbo_lab(
        *SMOKE,
        "hydra/launcher=local_submitit",
        "seed=0,1",
        "hydra.sweeper.max_batch_size=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    done = records(sweep)
    assert [r["status"] for r in done] == ["ok"] * 4
    assert {(r["components"]["objective"], r["seed"]) for r in done} == {
        (objective, seed) for objective in ("trace", "renyi") for seed in (0, 1)
    }
    (sweep / "comparison.md").unlink()
    rebuilt = subprocess.run(
        ["elbo-lab-report", str(sweep)], capture_output=True, text=True, check=False
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    table = (sweep / "comparison.md").read_text()
    assert "`trace/normal/gmm" in table and "2/0/0" in table


def test_a_single_run_without_sweeping(tmp_path):
    run_dir = tmp_path / "run"
    result = elbo_lab(*SMOKE, "hydra.mode=RUN", "steps=3", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "record.json").read_text())["status"] == "ok"


def test_an_unknown_config_option_lists_the_available_ones(tmp_path):
    result = elbo_lab("objective=nope", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'objective/nope'" in result.stderr
    assert "trace" in result.stderr and "renyi" in result.stderr


@pytest.mark.parametrize("module", [False, True])
def test_listing_the_components(tmp_path, module):
    result = elbo_lab("list" if module else "--list", cwd=tmp_path, module=module)
    assert result.returncode == 0, result.stderr
    assert (
        "objectives:" in result.stdout and "guides:" in result.stdout and "models:" in result.stdout
    )
    assert "trace " in result.stdout


def _experiment_presets() -> list[str]:
    from importlib.resources import files

    folder = files("pyro_elbo_lab.conf").joinpath("experiment")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


@pytest.mark.parametrize("preset", _experiment_presets())
def test_experiment_presets_sweep_what_they_say(preset):
    """A preset's sweep is the product of its params merged over config.yaml's: every
    swept key must be the preset's own, or a guide study that forgets to pin the
    objective silently runs every default objective too."""
    from importlib.resources import files

    import yaml
    from hydra import compose, initialize_config_module

    with initialize_config_module("pyro_elbo_lab.conf", version_base="1.3"):
        config = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    params = config.hydra.sweeper.params
    source = files("pyro_elbo_lab.conf").joinpath("experiment", f"{preset}.yaml").read_text()
    own = yaml.safe_load(source)["hydra"]["sweeper"]["params"]
    assert {key: str(value) for key, value in params.items()} == {
        key: str(value) for key, value in own.items()
    }
    runs = 1
    for value in params.values():
        runs *= len(str(value).split(","))
    assert runs <= 50, params  # a study, not a grid search
