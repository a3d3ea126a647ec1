"""``hydra/sweeper=lab``: the basic sweeper's grid, plus a tuning phase and resume.

Hydra finds sweepers only under the ``hydra_plugins`` package, hence this module. It
expands the sweep as Hydra's basic sweeper does (the product of every swept key's
values, in batches of ``max_batch_size``), then, on the lab's top-level settings:

- ``tune=true``: before the reported jobs, one study of Hydra's Optuna sweeper per
  configuration (:mod:`pyro_elbo_lab.lab.tuning`), written under ``SWEEP/tuning/``
  and reused when the sweep resumes; each reported job gets its study's values;
- ``resume=DIR``: the sweep is DIR's, and only its jobs without an ``ok`` record (by
  :func:`~pyro_elbo_lab.lab.resume.config_hash`) run, numbered after the jobs there.
"""

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab.record import package_versions, read_records, version_differences
from pyro_elbo_lab.lab.resume import config_hash, ok_hashes
from pyro_elbo_lab.lab.threads import parallel_jobs
from pyro_elbo_lab.lab.tuning import (
    TUNING_FILE,
    TuneSettings,
    require_disjoint_seeds,
    tuning_summary,
)

log = logging.getLogger(__name__)


# Hydra scans this module without registering it in sys.modules, so the dataclass's
# annotations are evaluated eagerly (no ``from __future__ import annotations``), and in
# the typing forms OmegaConf reads.
@dataclass
class LabSweeperConf:
    _target_: str = "hydra_plugins.elbo_lab_sweeper.lab_sweeper.LabSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[dict[str, str]] = None  # noqa: UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="lab", node=LabSweeperConf, provider="pyro-elbo-lab"
)


@dataclass
class LabParallelLauncherConf:
    _target_: str = "hydra_plugins.elbo_lab_sweeper.lab_launcher.ParallelLauncher"
    n_jobs: Optional[int] = None  # noqa: UP045  (None: one job per CPU of the budget)


ConfigStore.instance().store(
    group="hydra/launcher",
    name="lab_parallel",
    node=LabParallelLauncherConf,
    provider="pyro-elbo-lab",
)


class LabSweeper(BasicSweeper):
    """Hydra's basic sweeper with the lab's tuning phase and resume."""

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.task_function = task_function

    def sweep(self, arguments: list[str]) -> Any:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides([*self._parse_config(), *arguments])
        jobs = [job for batch in self.split_arguments(parsed, None) for job in batch]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not (sweep_dir / "multirun.yaml").exists():
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        if self.config.tune:
            jobs = self._tuned(jobs, sweep_dir)
        first_index = 0
        if self.config.resume:
            jobs, first_index = self._pending(jobs, sweep_dir)
            if not jobs:
                log.info("nothing to run: every job of %s has an ok record", sweep_dir)
                return []
        self.overrides = list(self.split_overrides_to_chunks(jobs, self.max_batch_size))
        self.batch_index = 0
        returns = []
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            returns.append(self.launcher.launch(batch, initial_job_idx=first_index))
            first_index += len(batch)
        return returns

    def _job_config(self, overrides: list[str]) -> DictConfig:
        """A job's composed config without its ``hydra`` node (what the job's run sees)."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            del config["hydra"]
        return config

    def _pending(self, jobs: list[list[str]], sweep_dir: Path) -> tuple[list[list[str]], int]:
        records = [r for r in read_records(sweep_dir) if r.get("role") != "tuning"]
        for difference in version_differences(records, installed=package_versions()):
            log.warning("resuming %s across package versions: %s", sweep_dir, difference)
        done = ok_hashes(records)
        pending = [
            job
            for job in jobs
            if config_hash(OmegaConf.to_container(self._job_config(job), resolve=True)) not in done
        ]
        numbers = [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        log.info(
            "resuming %s: %d of %d jobs have an ok record, %d to run",
            sweep_dir, len(jobs) - len(pending), len(jobs), len(pending),
        )  # fmt: skip
        return pending, max(numbers, default=-1) + 1

    def _tuned(self, jobs: list[list[str]], sweep_dir: Path) -> list[list[str]]:
        """Each job with its configuration's tuned values (a study per configuration)."""
        tune = TuneSettings(**OmegaConf.to_container(self.config.tuning, resolve=True))
        _optuna()
        configurations: dict[tuple[str, ...], list[str]] = {}
        seeds = set()
        for job in jobs:
            seeds.add(int(self._job_config(job).seed))
            configurations.setdefault(_configuration(job), [])
        require_disjoint_seeds(tune, seeds)
        for configuration in configurations:
            name = hashlib.sha256("\n".join(configuration).encode()).hexdigest()[:10]
            result_file = sweep_dir / "tuning" / name / TUNING_FILE
            if not result_file.exists():
                self._study(list(configuration), result_file.parent, tune)
            values = json.loads(result_file.read_text())["values"]
            configurations[configuration] = [
                *(f"{key}={value!r}" for key, value in values.items()),
                f"tuning.result='{result_file.resolve()}'",
            ]
        return [[*job, *configurations[_configuration(job)]] for job in jobs]

    def _study(self, configuration: list[str], directory: Path, tune: TuneSettings) -> None:
        """Hydra's Optuna sweeper over ``tuning.params`` on the validation seeds."""
        optuna, OptunaSweeper = _optuna()

        job_config = self._job_config(configuration)
        params = {
            key: space
            for key, space in tune.spaces.items()
            if OmegaConf.select(job_config, key, default=None) is not None
        }
        directory.mkdir(parents=True, exist_ok=True)
        if not params:
            log.info(
                "tuning %s: it has none of %s, nothing to tune", configuration, list(tune.spaces)
            )
            (directory / TUNING_FILE).write_text(
                json.dumps(tuning_summary(directory, tune, {}, float("nan")))
            )
            return
        config = self.config.copy()
        OmegaConf.set_readonly(config, False)
        with open_dict(config):
            config.hydra.sweep.dir = str(directory)
        sampler = optuna.samplers.TPESampler(
            seed=tune.sampler_seed, n_startup_trials=max(1, min(10, tune.trials // 2))
        )
        study = OptunaSweeper(
            sampler=sampler, direction=tune.direction, storage=None,
            study_name=" ".join(configuration) or "default", n_trials=tune.trials,
            n_jobs=parallel_jobs(self.config.hydra.launcher),
            search_space=None, custom_search_space=None, params=OmegaConf.create(params),
        )  # fmt: skip
        study.setup(
            hydra_context=self.hydra_context, task_function=self.task_function, config=config
        )
        log.info("tuning %s over %s: %d trials", configuration, list(params), tune.trials)
        # A job's config is composed afresh from its overrides: the directory goes there too.
        # Trials record no anytime curve: only the validation metric matters there.
        study.sweep([*configuration, "tuning.trial=true", "checkpoints.count=0",
                     f"hydra.sweep.dir='{directory}'"])  # fmt: skip
        results = OmegaConf.to_container(OmegaConf.load(directory / "optimization_results.yaml"))
        summary = tuning_summary(directory, tune, results["best_params"], results["best_value"])
        (directory / TUNING_FILE).write_text(json.dumps(summary, indent=2))


def _configuration(job: list[str]) -> tuple[str, ...]:
    """A job's overrides less those that do not define its configuration: the seed, and
    ``resume`` (a resumed sweep finds the studies it ran before)."""
    return tuple(o for o in job if not o.startswith(("seed=", "resume=")))


def _optuna() -> tuple[Any, type]:
    """Optuna and Hydra's Optuna sweeper, imported quietly (optuna 2.x warns about
    SQLAlchemy 2 and its storage imports log at INFO), or a line naming the install."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import optuna
            from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
    except ImportError as error:
        raise ConfigError(
            f"tune=true needs Hydra's Optuna sweeper ({error}): pip install 'pyro-elbo-lab[tune]'"
        ) from error
    return optuna, OptunaSweeper
