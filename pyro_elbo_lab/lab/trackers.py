"""Experiment trackers: each run of a sweep in MLflow or TensorBoard as well as its record.

A tracker is chosen by the ``tracker`` config group (``none``, ``mlflow``,
``tensorboard``). It sees a run's resolved config (flattened, as parameters), its loss
at every step, and at the end its final metrics and the files it wrote. A tracker never
stops a run: the first error it raises (an unreachable URI, a full disk) is reported
once as a warning and the tracker goes quiet, while the run and its record go on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyro_elbo_lab.errors import ConfigError, first_line, require, require_positive_int
from pyro_elbo_lab.lab.record import flatten

INSTALL = {
    "mlflow": "pip install 'pyro-elbo-lab[mlflow]'",
    "tensorboard": "pip install 'pyro-elbo-lab[tensorboard]'",
}


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among a record's metrics, by dotted name."""
    return {
        name: float(value)
        for name, value in flatten(metrics)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


class Tracker:
    """What every tracker does; this one (``tracker=none``) does nothing."""

    name = "none"

    def start(self, run_name: str, params: Mapping[str, Any]) -> None:
        """A run begins, with its flattened config."""

    def log_loss(self, step: int, loss: float) -> None:
        """The loss of one optimisation step."""

    def finish(self, record: Mapping[str, Any], files: list[Path]) -> None:
        """The run ended with ``record``, having written ``files``."""


class MLflowTracker(Tracker):
    """One MLflow run per job, in one experiment per sweep.

    :param tracking_uri: where MLflow stores runs (default: ``sqlite:///SWEEP/mlflow.db``
        with artefacts under ``SWEEP/mlartifacts``; MLflow 3 keeps its file store in
        maintenance).
    :param experiment: the experiment's name (default: the sweep directory's last two
        parts, e.g. ``2026-12-02/10-00-00-ab12cd``).
    :param flush_every: steps between writes of the buffered losses (one batch each).
    """

    name = "mlflow"

    def __init__(
        self, sweep_dir: Path, tracking_uri: str | None, experiment: str | None, flush_every: int
    ) -> None:
        import mlflow
        from mlflow.entities import Metric

        self._mlflow, self._metric = mlflow, Metric
        self.tracking_uri = tracking_uri or f"sqlite:///{(sweep_dir / 'mlflow.db').resolve()}"
        self.artifact_location = None if tracking_uri else (sweep_dir / "mlartifacts").resolve()
        self.experiment = experiment or "/".join(sweep_dir.resolve().parts[-2:])
        self.flush_every = flush_every
        self._client = None
        self._run_id: str | None = None
        self._buffer: list[Any] = []

    def start(self, run_name: str, params: Mapping[str, Any]) -> None:
        self._client = self._mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        found = self._client.get_experiment_by_name(self.experiment)
        if found is None:
            location = None if self.artifact_location is None else self.artifact_location.as_uri()
            experiment_id = self._client.create_experiment(
                self.experiment, artifact_location=location
            )
        else:
            experiment_id = found.experiment_id
        self._run_id = self._client.create_run(experiment_id, run_name=run_name).info.run_id
        items = [
            self._mlflow.entities.Param(key, str(value)[:6000]) for key, value in params.items()
        ]
        for start in range(0, len(items), 100):  # MLflow takes 100 params per batch
            self._client.log_batch(self._run_id, params=items[start : start + 100])

    def log_loss(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self._buffer.append(self._metric("loss", loss, 0, step))
        if len(self._buffer) >= self.flush_every:
            self._flush()

    def _flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self._client.log_batch(self._run_id, metrics=batch)

    def finish(self, record: Mapping[str, Any], files: list[Path]) -> None:
        self._flush()
        metrics = final_metrics(record.get("metrics") or {})
        step = len(record.get("fit", {}).get("loss_history", {}).get("loss", []))
        items = [self._metric(name, value, 0, step) for name, value in metrics.items()]
        for start in range(0, len(items), 1000):
            self._client.log_batch(self._run_id, metrics=items[start : start + 1000])
        for path in files:
            self._client.log_artifact(self._run_id, str(path))
        status = "FINISHED" if record.get("status") == "ok" else "FAILED"
        self._client.set_terminated(self._run_id, status=status)


class TensorBoardTracker(Tracker):
    """Scalars per step under ``SWEEP/tensorboard/JOB`` (``tensorboard --logdir
    SWEEP/tensorboard``), and the run's parameters with its final metrics as hparams."""

    name = "tensorboard"

    def __init__(self, sweep_dir: Path, log_dir: str | None, job: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer_type = SummaryWriter
        self.log_dir = Path(log_dir) if log_dir else sweep_dir / "tensorboard" / job
        self._writer = None

    def start(self, run_name: str, params: Mapping[str, Any]) -> None:
        self._writer = self._writer_type(log_dir=str(self.log_dir))
        self._params = {
            key: value if isinstance(value, int | float | str | bool) else str(value)
            for key, value in params.items()
        }

    def log_loss(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self._writer.add_scalar("loss", loss, step)

    def finish(self, record: Mapping[str, Any], files: list[Path]) -> None:
        metrics = final_metrics(record.get("metrics") or {})
        self._writer.add_hparams(
            self._params, {f"final/{name}": value for name, value in metrics.items()}, run_name="."
        )
        self._writer.close()


class GuardedTracker(Tracker):
    """A tracker whose first error becomes one warning, after which it does nothing."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.name = tracker.name
        self.failed = False

    def _call(self, method: str, *args: Any) -> None:
        if self.failed:
            return
        try:
            getattr(self.tracker, method)(*args)
        except Exception as error:
            self.failed = True
            warnings.warn(
                f"tracker {self.name} failed in {method} ({type(error).__name__}: "
                f"{first_line(error)}); the run and its record "
                "go on without it",
                RuntimeWarning,
                stacklevel=3,
            )

    def start(self, run_name: str, params: Mapping[str, Any]) -> None:
        self._call("start", run_name, params)

    def log_loss(self, step: int, loss: float) -> None:
        self._call("log_loss", step, loss)

    def finish(self, record: Mapping[str, Any], files: list[Path]) -> None:
        self._call("finish", record, files)


def require_tracker_extra(name: str) -> None:
    """Fail in one line, naming the install command, when ``tracker=name``'s library is
    missing."""
    if name not in INSTALL:
        return
    try:
        __import__(name)  # each tracker's library has the tracker's name
    except ImportError:
        raise ConfigError(f"tracker={name} needs {name}: {INSTALL[name]}") from None


def build_tracker(settings: Mapping[str, Any], sweep_dir: Path, job: str) -> Tracker:
    """The tracker ``settings`` (the ``tracker`` config node) names, guarded."""
    name = settings.get("name", "none")
    require(
        name in ("none", "mlflow", "tensorboard"),
        f"tracker must be one of none, mlflow, tensorboard, got {name!r}",
    )
    if name == "none":
        return Tracker()
    require_tracker_extra(name)
    if name == "mlflow":
        flush_every = settings.get("flush_every", 50)
        require_positive_int("tracker.flush_every", flush_every)
        tracker = MLflowTracker(
            sweep_dir, settings.get("tracking_uri"), settings.get("experiment"), flush_every
        )
    else:
        tracker = TensorBoardTracker(sweep_dir, settings.get("log_dir"), job)
    return GuardedTracker(tracker)
