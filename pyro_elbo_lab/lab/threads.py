"""How many torch threads a job gets, so parallel jobs do not oversubscribe the cores."""

from __future__ import annotations

import os
from typing import Any


def threads_per_job(requested: int | None, launcher: Any) -> int:
    """``requested`` if set; else all cores divided by the launcher's parallel jobs."""
    if requested is not None:
        return requested
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    parallel_jobs = launcher.get("n_jobs") if launcher is not None else None
    if not isinstance(parallel_jobs, int) or parallel_jobs == 0:
        return cores
    if parallel_jobs < 0:  # joblib: -1 is all cores, -2 all but one, ...
        parallel_jobs = max(1, cores + 1 + parallel_jobs)
    return max(1, cores // parallel_jobs)
