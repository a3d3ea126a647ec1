"""The CPU budget: the affinity mask and the cgroup quota (v1, v2), rounded down."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyro_elbo_lab.cpu_budget import cgroup_cpu_quota, cpu_budget
from pyro_elbo_lab.lab import threads
from pyro_elbo_lab.lab.threads import parallel_jobs, threads_per_job


def _cgroup_v2(root: Path, path: str, limits: dict[str, str]) -> Path:
    """A fake v2 hierarchy: ``limits`` maps a cgroup directory to its ``cpu.max``."""
    for directory, cpu_max in limits.items():
        (root / directory).mkdir(parents=True, exist_ok=True)
        (root / directory / "cpu.max").write_text(cpu_max + "\n")
    proc = root / "proc_self_cgroup"
    proc.write_text(f"0::{path}\n")
    return proc


def _cgroup_v1(root: Path, path: str, quota_us: int, period_us: int, mount: str) -> Path:
    directory = root / mount / path.strip("/")
    directory.mkdir(parents=True)
    (directory / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    (directory / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    proc = root / "proc_self_cgroup"
    proc.write_text(f"12:memory:{path}\n4:cpu,cpuacct:{path}\n1:name=systemd:{path}\n")
    return proc


@pytest.fixture
def eight_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)


def test_v2_quota_of_the_process_cgroup(tmp_path, eight_cpus):
    proc = _cgroup_v2(tmp_path, "/user.slice/job", {"user.slice/job": "200000 100000"})
    assert cgroup_cpu_quota(tmp_path, proc) == 2.0
    assert cpu_budget(tmp_path, proc) == 2


def test_v2_max_means_no_limit(tmp_path, eight_cpus):
    proc = _cgroup_v2(tmp_path, "/job", {"": "max 100000", "job": "max 100000"})
    assert cgroup_cpu_quota(tmp_path, proc) is None
    assert cpu_budget(tmp_path, proc) == 8


def test_v2_an_ancestor_limit_binds(tmp_path, eight_cpus):
    limits = {"kubepods": "300000 100000", "kubepods/pod/container": "max 100000"}
    proc = _cgroup_v2(tmp_path, "/kubepods/pod/container", limits)
    assert cpu_budget(tmp_path, proc) == 3


def test_a_fractional_quota_rounds_down_and_never_below_one(tmp_path, eight_cpus):
    proc = _cgroup_v2(tmp_path, "/", {"": "150000 100000"})
    assert cgroup_cpu_quota(tmp_path, proc) == 1.5
    assert cpu_budget(tmp_path, proc) == 1
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert cpu_budget(tmp_path, proc) == 1


def test_v2_inside_a_container_whose_cgroup_is_the_mount_root(tmp_path, eight_cpus):
    # the path names the host's cgroup, which the container's mount shows as its root
    proc = _cgroup_v2(tmp_path, "/../system.slice/docker-abc.scope", {"": "400000 100000"})
    assert cpu_budget(tmp_path, proc) == 4


@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpu"])
def test_v1_cfs_quota(tmp_path, eight_cpus, mount):
    proc = _cgroup_v1(tmp_path, "/docker/abc", 250000, 100000, mount)
    assert cgroup_cpu_quota(tmp_path, proc) == 2.5
    assert cpu_budget(tmp_path, proc) == 2


def test_v1_negative_quota_means_no_limit(tmp_path, eight_cpus):
    proc = _cgroup_v1(tmp_path, "/", -1, 100000, "cpu,cpuacct")
    assert cpu_budget(tmp_path, proc) == 8


def test_a_smaller_affinity_mask_binds(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)
    proc = _cgroup_v2(tmp_path, "/", {"": "600000 100000"})
    assert cpu_budget(tmp_path, proc) == 2


def test_no_cgroup_information_leaves_the_affinity_mask(tmp_path, eight_cpus):
    assert cpu_budget(tmp_path, tmp_path / "missing") == 8


def test_threads_divide_the_budget_among_a_launchers_parallel_jobs(monkeypatch):
    monkeypatch.setattr(threads, "cpu_budget", lambda: 8)
    monkeypatch.setattr(threads, "free_cpus", lambda budget: budget - 3)  # 3 CPUs busy
    assert threads_per_job(3, {"n_jobs": 2}) == 3  # asked for
    assert threads_per_job(None, {"n_jobs": None}) == 1  # one job per CPU
    assert threads_per_job(None, {"n_jobs": 2}) == 4
    assert threads_per_job(None, {"n_jobs": -2}) == 1  # joblib: all CPUs but one
    # one job at a time (Hydra's basic launcher): what other processes leave free
    assert threads_per_job(None, {}) == 5
    assert threads_per_job(None, {"cpus_per_task": 2}) == 2  # submitit
    assert parallel_jobs({"n_jobs": -1}) == 8 and parallel_jobs(None) == 1
