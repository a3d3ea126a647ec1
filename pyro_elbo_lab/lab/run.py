"""``run(config) -> record``: one lab run as a plain function, callable without Hydra."""

from __future__ import annotations

import datetime as dt
import json
import time
import traceback
from pathlib import Path
from typing import Any

import pyro
import torch
from omegaconf import DictConfig, OmegaConf

from pyro_elbo_lab.engine import random_streams_restored, use_compile_cache
from pyro_elbo_lab.errors import ConfigError, require_positive_int
from pyro_elbo_lab.evaluation import EvaluationSettings, evaluate_guide
from pyro_elbo_lab.evaluation.checkpoints import CheckpointProbe, CheckpointSettings
from pyro_elbo_lab.lab.budget import BudgetSettings
from pyro_elbo_lab.lab.components import build_components, evaluation_guide
from pyro_elbo_lab.lab.config import settings
from pyro_elbo_lab.lab.convergence import ConvergenceSettings
from pyro_elbo_lab.lab.fit import FitPlan, FitResult, fit
from pyro_elbo_lab.lab.image_grids import write_image_grids
from pyro_elbo_lab.lab.learned import model_parameter_names, save_model_parameters
from pyro_elbo_lab.lab.posterior_file import write_posterior_files, xarray_module
from pyro_elbo_lab.lab.predictions import write_predictions
from pyro_elbo_lab.lab.record import (
    SCHEMA_VERSION,
    flatten,
    git_commit,
    package_versions,
    write_record,
)
from pyro_elbo_lab.lab.resume import config_hash
from pyro_elbo_lab.lab.robust_schedule import ScheduleSettings
from pyro_elbo_lab.lab.trackers import Tracker, build_tracker
from pyro_elbo_lab.lab.tuning import TuneSettings
from pyro_elbo_lab.lab.vsbc import VSBCSettings, simulation_based_calibration
from pyro_elbo_lab.registry import fitters, models


def validate(config: DictConfig) -> None:
    """Top-level values out of range fail before anything is built."""
    require_positive_int("loss_history_points", config.loss_history_points)
    if config.num_threads is not None:
        require_positive_int("num_threads", config.num_threads)
    if not (isinstance(config.seed, int) and 0 <= config.seed < 2**32):
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {config.seed!r}")
    fit_plan(config)
    settings(config.evaluation, EvaluationSettings)
    settings(config.tuning, TuneSettings)
    settings(config.vsbc, VSBCSettings)
    require_positive_int("posterior_draws", config.posterior_draws, minimum=0)
    if config.posterior_draws:
        xarray_module()


def run(
    config: DictConfig,
    output_dir: str | Path | None = None,
    catch_errors: bool = False,
    sweep_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Fit and evaluate one configuration; return (and, given ``output_dir``, write) its record.

    Seeds Pyro (``pyro.set_rng_seed``) and clears the param store first, so the same
    config gives the same record. A non-finite loss stops the fit and records
    ``diverged``; an exception records ``failed`` with its message and is re-raised
    unless ``catch_errors`` (the sweep's choice, so the other jobs go on). The
    ``tracker`` (``trackers.build_tracker``) sees the run too; ``sweep_dir`` (default:
    ``output_dir``'s parent, or the working directory) is where it groups the sweep.
    """
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "status": "failed",
        "message": None,
        "config": OmegaConf.to_container(config, resolve=True),
        "seed": config.get("seed"),
        "components": _component_names(config),
        "role": "tuning" if config.tuning.trial else "reported",
        "versions": package_versions(),
        "git_commit": git_commit(),
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    record["config_hash"] = config_hash(record["config"])
    tracker = Tracker()
    try:
        validate(config)
        if config.compile_cache_dir is not None:
            use_compile_cache(config.compile_cache_dir)
        if config.tuning.result:
            record["tuning"] = json.loads(Path(config.tuning.result).read_text())
        tracker = build_tracker(
            record["config"].get("tracker") or {},
            _sweep_dir(sweep_dir, output_dir),
            Path(output_dir).name if output_dir is not None else "run",
        )
        tracker.start(_label(record), dict(flatten(record["config"])))
        calibration = settings(config.vsbc, VSBCSettings)
        if calibration.datasets:
            record["vsbc"] = simulation_based_calibration(config, fit_plan(config), calibration)
            record["metrics"] = {
                f"vsbc_{key}": record["vsbc"][key] for key in ("min_pvalue", "max_asymmetry")
            }
            record["status"] = "ok"
        else:
            _fit_and_evaluate(config, record, output_dir, tracker)
    except Exception as error:
        record["status"] = "failed"
        record["message"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc(limit=20)
        if not catch_errors:
            _finish(record, output_dir, tracker)
            raise
    _finish(record, output_dir, tracker)
    return record


def _fit_and_evaluate(
    config: DictConfig, record: dict[str, Any], output_dir: str | Path | None, tracker: Tracker
) -> None:
    """One fit of ``config`` and its evaluation and files, into ``record``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(config.seed)
    components = build_components(config)
    record["device"] = str(components.device)
    # which bound ran: per datapoint (the default where every latent is local) or joint
    if getattr(components.objective, "supports_per_datapoint", False):
        record["bound"] = "per_datapoint" if components.objective.per_datapoint else "joint"
    record["torch_threads"] = torch.get_num_threads()
    plan = fit_plan(config)
    probe = (
        CheckpointProbe(components.model, settings(config.checkpoints, CheckpointSettings))
        if plan.checkpoints
        else None
    )
    result = fit(
        components,
        plan,
        config.progress_bar,
        label=_label(record),
        on_step=tracker.log_loss,
        measure=(lambda: probe(evaluation_guide(components))) if probe else None,
    )
    record["fit"] = _fit_summary(result, config)
    if result.diverged:
        record["status"] = "diverged"
        record["message"] = (
            f"loss or parameters became non-finite by step {result.steps_completed} "
            f"(last loss {result.losses[-1]}); lower optim.optim_args.lr or check the model"
        )
    else:
        start = time.perf_counter()
        measured_guide = evaluation_guide(components)
        with components.model.without_subsampling():
            record["metrics"] = evaluate_guide(
                components.model,
                measured_guide,
                settings(config.evaluation, EvaluationSettings),
                objective=components.objective,
            )
        record["metrics"]["bounds_valid"] = not components.guide_entry.trait("point_estimate")
        record["evaluation_time_s"] = time.perf_counter() - start
        learned = model_parameter_names(components.model, components.model.train_data)
        if learned:
            record["model_parameters"] = {
                "names": learned,
                "trained_by": getattr(components.objective, "model_gradient", "bound"),
            }
            if output_dir is not None:
                record["model_parameters"]["file"] = save_model_parameters(
                    learned, Path(output_dir)
                )
        if output_dir is not None:
            with components.model.without_subsampling():
                written = write_predictions(components.model, measured_guide, Path(output_dir))
                if config.posterior_draws:
                    record["posterior_files"] = write_posterior_files(
                        components.model,
                        measured_guide,
                        config.posterior_draws,
                        Path(output_dir),
                        {key: str(value) for key, value in record["components"].items()},
                    )
            if written is not None:
                record["predictions"] = written
            if components.model.learns_parameters:
                with random_streams_restored():
                    record["images"] = write_image_grids(
                        components.model, measured_guide, Path(output_dir)
                    )
        record["status"] = "ok"


def _finish(record: dict[str, Any], output_dir: str | Path | None, tracker: Tracker) -> None:
    record["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    files = []
    if output_dir is not None:
        directory = Path(output_dir)
        write_record(record, directory)
        written = [
            *record.get("predictions", {}).values(),
            *record.get("posterior_files", {}).values(),
            *record.get("images", {}).values(),
            *(
                [record["model_parameters"]["file"]]
                if "file" in record.get("model_parameters", {})
                else []
            ),
        ]
        files = [directory / "record.json", *(directory / name for name in written)]
    tracker.finish(record, files)


def _component_names(config: DictConfig) -> dict[str, Any]:
    """Each group's name; a fitter other than ``svi`` is the run's method, so it stands in
    for the objective (which it does not use)."""
    names = {
        group: (config.get(group) or {}).get("name")
        for group in ("model", "guide", "objective", "optim", "fitter")
    }
    names["fitter"] = names["fitter"] or "svi"
    if names["fitter"] != "svi":
        names["objective"] = names["fitter"]
    return names


def _sweep_dir(sweep_dir: str | Path | None, output_dir: str | Path | None) -> Path:
    if sweep_dir is not None:
        return Path(sweep_dir)
    return Path(output_dir).parent if output_dir is not None else Path.cwd()


def _label(record: dict[str, Any]) -> str:
    parts = record["components"]
    return f"{parts['objective']}/{parts['guide']}/{parts['model']} seed={record['seed']}"


def fit_plan(config: DictConfig) -> FitPlan:
    """The run's step cap, budget, stopping rule and checkpoint count, checked."""
    require_positive_int("steps", config.steps)
    model = models.get(config.model.name)
    fitter_name = (config.get("fitter") or {}).get("name", "svi")
    fitter = fitters.get(fitter_name) if fitter_name in fitters else None
    default_init = fitter.trait("default_init", None) if fitter is not None else None
    return FitPlan(
        steps=config.steps,
        budget=settings(config.budget, BudgetSettings),
        convergence=settings(config.convergence, ConvergenceSettings),
        checkpoints=settings(config.checkpoints, CheckpointSettings).count,
        final_lr_fraction=config.final_lr_fraction,
        schedule=settings(config.schedule, ScheduleSettings),
        init=config.init or default_init or model.trait("default_init", "median"),
        init_is_default=config.init is None,
        precondition=config.precondition or model.trait("default_precondition", "none"),
        init_scale=config.guide.get("init_scale", 0.1),
    )


def _fit_summary(result: FitResult, config: DictConfig) -> dict[str, Any]:
    return {
        "steps_requested": config.steps,
        "budget": OmegaConf.to_container(config.budget, resolve=True),
        "stopped_by": result.stopped_by,
        "convergence": result.convergence_message,
        "steps_completed": result.steps_completed,
        "model_evals": result.model_evals,
        "gradient_evals": result.gradient_evals,
        "wall_time_s": result.wall_time_s,
        "setup_time_s": result.setup_time_s,
        "checkpoint_time_s": result.checkpoint_time_s,
        "steps_per_second": result.steps_per_second,
        "final_loss": result.final_loss(),
        "loss_history": result.history(config.loss_history_points),
        "checkpoints": result.checkpoints,
        "start": result.start,
        "converged": result.certificate.converged if result.certificate else None,
        "certificate": result.certificate.summary() if result.certificate else None,
        "averaged_iterates": result.averaged,
        "fitter": result.fitter_details,
    }
