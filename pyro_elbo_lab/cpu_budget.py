"""The CPUs this process may use.

The budget is the smallest of the process's affinity mask and its cgroup CPU quota
(cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, of the
process's own cgroup and every ancestor up to the mount), rounded down, at least 1. A
container started with ``--cpus=2`` or a Kubernetes CPU limit on a 64-core host then
gets 2 threads, not 64: threads beyond the quota only wait for their time slices, and
OpenMP workers spinning at a barrier make that tens of times slower. joblib's
``cpu_count`` reads the same files, but only the root cgroup's, and rounds a fractional
quota up (1.5 CPUs would give 2 threads); hence this reader.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def affinity_mask() -> set[int] | None:
    """The CPUs this process may run on; None where there is no mask to read (macOS,
    Windows)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return set(affinity(0)) if affinity is not None else None


def cpu_budget(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The CPUs this process may use: min(affinity mask, cgroup quota rounded down), ≥ 1."""
    mask = affinity_mask()
    cpus = len(mask) if mask is not None else os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def cgroup_cpu_quota(
    cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP
) -> float | None:
    """The tightest CPU quota (in CPUs, may be fractional) on this process's cgroup and its
    ancestors, v1 or v2; None where there is none (no limit, not Linux)."""
    try:
        memberships = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in memberships:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":  # v2: one unified hierarchy
            mount, reader = cgroup_root, _v2_quota
        elif "cpu" in controllers.split(","):
            mount, reader = cgroup_root / controllers, _v1_quota
            if not mount.is_dir():  # e.g. mounted as cpu/ with cpuacct linked beside it
                mount = cgroup_root / "cpu"
        else:
            continue
        quotas += [q for q in map(reader, _cgroup_and_ancestors(mount, path)) if q is not None]
    return min(quotas, default=None)


def _cgroup_and_ancestors(mount: Path, path: str) -> Iterator[Path]:
    """The process's cgroup directory (or, inside a container whose mount shows its own
    cgroup as the root, the deepest part of the path that exists) up to the mount."""
    directory = mount / path.strip("/")
    while directory != mount and not directory.is_dir():
        directory = directory.parent
    while True:
        yield directory
        if directory == mount or mount not in directory.parents:
            return
        directory = directory.parent


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else _ratio(quota, period)


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    quota_us, period_us = int(quota), int(period)
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None  # -1: no limit
