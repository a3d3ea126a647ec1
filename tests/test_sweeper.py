"""The lab's sweeper (``hydra/sweeper=lab``), end to end: resume and tuning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import SMOKE, elbo_lab, records


def _job_dirs(sweep: Path) -> set[str]:
    return {path.name for path in sweep.iterdir() if path.is_dir() and path.name.isdigit()}


@pytest.mark.slow
def test_a_resumed_sweep_runs_only_the_jobs_without_an_ok_record(tmp_path):
    sweep = tmp_path / "sweep"
    arguments = (*SMOKE, "seed=0,1")
    assert elbo_lab(*arguments, f"hydra.sweep.dir={sweep}", cwd=tmp_path).returncode == 0
    assert _job_dirs(sweep) == {"0", "1", "2", "3"}

    def run_of(record: dict) -> tuple[str, int]:
        return record["components"]["objective"], record["seed"]

    missing = run_of(json.loads((sweep / "1" / "record.json").read_text()))
    (sweep / "1" / "record.json").unlink()  # a job that never finished
    failed = json.loads((sweep / "2" / "record.json").read_text())
    failed["status"] = "failed"
    (sweep / "2" / "record.json").write_text(json.dumps(failed))
    untouched = (sweep / "0" / "record.json").read_text()

    result = elbo_lab(*arguments, f"resume={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 of 4 jobs have an ok record, 2 to run" in result.stdout + result.stderr
    assert _job_dirs(sweep) == {"0", "1", "2", "3", "4", "5"}  # new jobs numbered after
    assert (sweep / "0" / "record.json").read_text() == untouched
    rerun = {run_of(r) for r in records(sweep / "4") + records(sweep / "5")}
    assert rerun == {missing, run_of(failed)}
    report = (sweep / "comparison.md").read_text()
    assert "(4 runs)" in report and "Runs that did not finish" not in report

    again = elbo_lab(*arguments, f"resume={sweep}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "4 of 4 jobs have an ok record, 0 to run" in again.stdout + again.stderr
    assert _job_dirs(sweep) == {"0", "1", "2", "3", "4", "5"}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=sequential"]], ids=["default", "seq"])
def test_resuming_a_complete_sweep_runs_nothing_and_rebuilds_the_report(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    arguments = (*SMOKE, *launcher)
    first = elbo_lab(*arguments, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    finished = {path: path.read_text() for path in sweep.glob("*/record.json")}
    for _ in range(2):
        (sweep / "comparison.md").unlink()
        again = elbo_lab(*arguments, f"resume={sweep}", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        output = again.stdout + again.stderr
        assert "2 of 2 jobs have an ok record, 0 to run" in output
        assert "nothing to run" in output and "Traceback" not in output
        assert "(2 runs)" in (sweep / "comparison.md").read_text()  # the report, rebuilt
        assert {path: path.read_text() for path in sweep.glob("*/record.json")} == finished


@pytest.mark.slow
def test_a_resume_over_records_of_another_install_says_so(tmp_path):
    sweep = tmp_path / "sweep"
    assert elbo_lab(*SMOKE, f"hydra.sweep.dir={sweep}", cwd=tmp_path).returncode == 0
    path = sweep / "0" / "record.json"
    older = json.loads(path.read_text())
    older["versions"]["pyro-ppl"] = "1.8.0"
    path.write_text(json.dumps(older))
    again = elbo_lab(*SMOKE, f"resume={sweep}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "across package versions: pyro-ppl: 1.8.0 (1 record)" in again.stdout
    report = (sweep / "comparison.md").read_text()
    assert "## Package versions differ between runs" in report and "1.8.0 (1 record)" in report


@pytest.mark.slow
def test_tuning_chooses_values_on_validation_seeds_then_reports_fresh_seeds(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    arguments = (
        *SMOKE,
        "tune=true",
        "tuning.trials=2",
        "tuning.seeds=[50]",
        "tuning.params=['optim.optim_args.lr=tag(log, interval(0.001, 0.3))',"
        "'objective.alpha=interval(0.1, 0.9)']",
        "seed=0,1",
    )
    result = elbo_lab(*arguments, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    everything = records(sweep)
    trials = [r for r in everything if r["role"] == "tuning"]
    reported = [r for r in everything if r["role"] == "reported"]
    # a study of 2 trials per configuration (trace, renyi), each on the validation seed
    assert len(trials) == 4 and {r["seed"] for r in trials} == {50}
    assert sorted((r["components"]["objective"], r["seed"]) for r in reported) == [
        ("renyi", 0), ("renyi", 1), ("trace", 0), ("trace", 1),
    ]  # fmt: skip
    for record in reported:
        tuning = record["tuning"]
        lr = tuning["values"]["optim.optim_args.lr"]
        assert 0.001 <= lr <= 0.3 and record["config"]["optim"]["optim_args"]["lr"] == lr
        assert tuning["trials"] == 2 and tuning["seeds"] == [50] and tuning["model_evals"] > 0
        # the knob is tuned only where the configuration has it
        has_alpha = record["components"]["objective"] == "renyi"
        assert ("objective.alpha" in tuning["values"]) == has_alpha
        if has_alpha:
            assert record["config"]["objective"]["alpha"] == tuning["values"]["objective.alpha"]
    report = (sweep / "comparison.md").read_text()
    assert "**Tuned** per configuration by Optuna" in report and "## Tuned values" in report
    assert report.count("`trace/normal/gmm") >= 2  # the rows are not split by tuned values

    # a resumed sweep with one more seed reuses the studies: no new trial, two new runs
    more = elbo_lab(*arguments[:-1], "seed=0,1,2", f"resume={sweep}", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    after = records(sweep)
    assert sum(r["role"] == "tuning" for r in after) == len(trials)
    assert sorted(r["seed"] for r in after if r["role"] == "reported") == [0, 0, 1, 1, 2, 2]


def test_tuning_refuses_validation_seeds_that_are_reported(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result = elbo_lab(
        *SMOKE, "seed=0,1", "tune=true", "tuning.seeds=[1]", f"hydra.sweep.dir={tmp_path}/s",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "tuning.seeds [1] overlap the reported seeds [1]" in result.stderr
