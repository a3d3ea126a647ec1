"""tracker=mlflow / tensorboard: what a run writes there, read back with their own readers."""

from __future__ import annotations

import sys
import warnings

import pytest

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab import run
from pyro_elbo_lab.lab.trackers import GuardedTracker, Tracker

STEPS = 12


def _sweep(compose_config, sweep_dir, *overrides):
    records = []
    for job, objective in enumerate(("trace", "iwae")):
        config = compose_config(f"objective={objective}", f"steps={STEPS}", *overrides)
        records.append(run(config, output_dir=sweep_dir / str(job), sweep_dir=sweep_dir))
    assert all(record["status"] == "ok" for record in records)
    return records


def test_mlflow_holds_one_run_per_job_in_one_experiment(tmp_path, compose_config):
    mlflow = pytest.importorskip("mlflow")
    records = _sweep(compose_config, tmp_path, "tracker=mlflow", "tracker.flush_every=5")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("/".join(tmp_path.resolve().parts[-2:]))
    runs = {
        found.data.params["objective.name"]: found
        for found in client.search_runs([experiment.experiment_id])
    }
    assert set(runs) == {"trace", "iwae"}
    for record in records:
        found = runs[record["components"]["objective"]]
        assert found.info.status == "FINISHED"
        assert found.data.params["model.name"] == "gmm" and found.data.params["seed"] == "0"
        history = client.get_metric_history(found.info.run_id, "loss")
        assert [point.step for point in history] == list(range(STEPS))
        assert found.data.metrics["elbo"] == pytest.approx(record["metrics"]["elbo"])
        artifacts = {item.path for item in client.list_artifacts(found.info.run_id)}
        assert "record.json" in artifacts


def test_tensorboard_holds_the_loss_per_step_and_final_metrics(tmp_path, compose_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records = _sweep(compose_config, tmp_path, "tracker=tensorboard")
    for job, record in enumerate(records):
        events = EventAccumulator(str(tmp_path / "tensorboard" / str(job)))
        events.Reload()
        losses = events.Scalars("loss")
        assert [event.step for event in losses] == list(range(STEPS))
        final = EventAccumulator(str(tmp_path / "tensorboard" / str(job)))
        final.Reload()
        assert "final/elbo" in final.Tags()["scalars"]
        assert final.Scalars("final/elbo")[0].value == pytest.approx(record["metrics"]["elbo"])


def test_a_tracker_that_fails_warns_once_and_the_run_goes_on(tmp_path, compose_config):
    pytest.importorskip("mlflow")
    (tmp_path / "a_file").write_text("not a directory")  # so the store cannot be created
    config = compose_config(
        "steps=5", "tracker=mlflow", f"tracker.tracking_uri=sqlite:///{tmp_path}/a_file/x.db"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = run(config, output_dir=tmp_path / "0")
    assert record["status"] == "ok", record["message"]
    messages = [str(w.message) for w in caught if "tracker mlflow failed" in str(w.message)]
    assert len(messages) == 1 and "the run and its record go on" in messages[0]
    assert (tmp_path / "0" / "record.json").is_file()


def test_a_tracker_failing_mid_run_is_silenced_after_one_warning():
    class FullDisk(Tracker):
        name = "full_disk"

        def log_loss(self, step: int, loss: float) -> None:
            raise OSError("No space left on device")

    guarded = GuardedTracker(FullDisk())
    with pytest.warns(RuntimeWarning, match=r"tracker full_disk failed in log_loss \(OSError"):
        guarded.log_loss(0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guarded.log_loss(1, 1.0)
        guarded.finish({}, [])


@pytest.mark.parametrize("name", ["mlflow", "tensorboard"])
def test_a_missing_tracker_library_names_the_install_command(name, compose_config, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=rf"tracker={name} needs {name}: pip install"):
        run(compose_config(f"tracker={name}"))
