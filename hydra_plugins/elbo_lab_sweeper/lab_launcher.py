"""``hydra/launcher=parallel`` (the default): a sweep's jobs in parallel worker processes.

One worker per CPU of the budget (:func:`~pyro_elbo_lab.cpu_budget.cpu_budget`) unless
``hydra.launcher.n_jobs`` says otherwise, each job with ``budget / n_jobs`` torch threads.
Workers are joblib's (loky: reused across the launches of a sweep, a crashed worker
replaced). Jobs are reported as they finish, so the sweep's console counts them and
sums up their warnings as it does for jobs run in this process. With one job to run, or
one worker, jobs run here, as Hydra's basic launcher runs them.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from pyro_elbo_lab.lab.console import WORKER_ENVIRONMENT, SweepConsole, WarningCollector
from pyro_elbo_lab.lab.threads import parallel_jobs

log = logging.getLogger(__name__)


class ParallelLauncher(BasicLauncher):
    """Hydra launcher: jobs in ``n_jobs`` worker processes (None: the CPU budget)."""

    def __init__(self, n_jobs: int | None = None) -> None:
        super().__init__()
        self.n_jobs = n_jobs

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        workers = min(parallel_jobs({"n_jobs": self.n_jobs}), len(job_overrides))
        if workers <= 1:
            return super().launch(job_overrides, initial_job_idx)
        from joblib import Parallel, delayed

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Launching %d jobs in %d worker processes", len(job_overrides), workers)
        for index, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
        callbacks = self.hydra_context.callbacks.callbacks
        consoles = [callback for callback in callbacks if isinstance(callback, SweepConsole)]
        state = Singleton.get_state()
        finished = Parallel(n_jobs=workers, backend="loky", return_as="generator_unordered")(
            delayed(_run_in_worker)(
                index, overrides, self.hydra_context, self.config, self.task_function, state
            )
            for index, overrides in enumerate(job_overrides, start=initial_job_idx)
        )
        returns: dict[int, JobReturn] = {}
        for index, job_return, warning_counts in finished:
            returns[index] = job_return
            for console in consoles:
                console.job_finished(job_return, warning_counts)
        return [returns[index] for index in sorted(returns)]


def _run_in_worker(
    index: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> tuple[int, JobReturn, Counter]:
    """One job in a worker process: Hydra's job set-up, the task, the warnings it raised."""
    os.environ[WORKER_ENVIRONMENT] = "1"  # no per-run progress bars from workers
    setup_globals()
    Singleton.set_state(singleton_state)
    job_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(job_config):
        job_config.hydra.job.id = index
        job_config.hydra.job.num = index
    HydraConfig.instance().set_config(job_config)
    with WarningCollector() as collector:
        job_return = run_job(
            hydra_context=hydra_context,
            task_function=task_function,
            config=job_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    return index, job_return, collector.counts
