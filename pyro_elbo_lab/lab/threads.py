"""How many torch threads each job of a sweep gets: the CPU budget
(:func:`~pyro_elbo_lab.cpu_budget.cpu_budget`) divided among a launcher's parallel jobs,
or, for a job that runs alone, the CPUs of the budget other processes leave free when it
starts (:func:`~pyro_elbo_lab.cpu_load.free_cpus`): beside another job spinning on one
core of two, torch's parallel ops on two threads wait for that core's time slices at
every op (the eager GMM step at N = 10³: 0.08–0.29× its idle speed,
experiments/gmm_scale/targets.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyro_elbo_lab.cpu_budget import cpu_budget
from pyro_elbo_lab.cpu_load import free_cpus


def parallel_jobs(launcher: Mapping[str, Any] | None, budget: int | None = None) -> int:
    """How many jobs a launcher runs at once on this machine: its ``n_jobs`` (None: the
    CPU budget; joblib's negatives: -1 all of the budget, -2 all but one, ...); 1 for
    launchers without ``n_jobs`` (Hydra's basic launcher, submitit: one job per process)."""
    if launcher is None or "n_jobs" not in launcher:
        return 1
    budget = cpu_budget() if budget is None else budget
    requested = launcher["n_jobs"]
    if requested is None:
        return budget
    if requested < 0:
        return max(1, budget + 1 + requested)
    return max(1, requested)


def threads_per_job(requested: int | None, launcher: Mapping[str, Any] | None) -> int:
    """``requested`` if set; else the CPU budget divided among the launcher's parallel jobs
    (a submitit job: its ``cpus_per_task``, within the budget; a job alone: the CPUs of
    the budget that other processes leave free)."""
    if requested is not None:
        return requested
    budget = cpu_budget()
    if launcher is not None and launcher.get("cpus_per_task"):
        return max(1, min(budget, int(launcher["cpus_per_task"])))
    jobs = parallel_jobs(launcher, budget)
    if jobs == 1:
        return free_cpus(budget)
    return max(1, budget // jobs)
