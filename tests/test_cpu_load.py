"""The CPUs other processes keep busy, from /proc/stat, and the CPUs they leave free."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pyro_elbo_lab import cpu_load

linux_only = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc")


def _fake_ticks(monkeypatch, cpu_ticks, own_ticks):
    """busy_cpus on recorded counters: two reads of each, before and after the window."""
    cpu_reads, own_reads = iter(cpu_ticks), iter(own_ticks)
    monkeypatch.setattr(cpu_load, "_cpu_ticks", lambda cpus, stat: next(cpu_reads))
    monkeypatch.setattr(cpu_load, "_own_ticks", lambda pid: next(own_reads))
    monkeypatch.setattr(cpu_load.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(cpu_load.time, "sleep", lambda seconds: None)


def test_the_processes_own_time_is_not_load(monkeypatch, tmp_path):
    """Two CPUs over 50 ticks each (100 in all): 80 busy, 30 of them this process's."""
    (tmp_path / "stat").write_text("cpu 0\n")
    _fake_ticks(monkeypatch, [(0, 0), (80, 100)], [0, 30])
    assert cpu_load.busy_cpus(stat=tmp_path / "stat") == pytest.approx(1.0)


def test_free_cpus_subtract_the_rounded_load_and_keep_one(monkeypatch):
    monkeypatch.setattr(cpu_load.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    for busy, budget, free in [(0.3, 8, 8), (1.6, 8, 6), (7.9, 8, 1), (2.0, 4, 4), (6.0, 4, 2)]:
        monkeypatch.setattr(cpu_load, "busy_cpus", lambda window_s, busy=busy: busy)
        # a quota of 4 on the 8 CPUs of the mask: the host's load takes none of it until
        # fewer than 4 CPUs are left unused
        assert cpu_load.free_cpus(budget) == free


@linux_only
def test_a_spinning_process_is_seen_as_one_busy_cpu():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs in the affinity mask")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # the interpreter's start-up is not the steady load
        busy = cpu_load.busy_cpus(window_s=0.5)
        free = cpu_load.free_cpus(len(os.sched_getaffinity(0)), window_s=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy >= 0.7  # one CPU, less the ticks' granularity (10 ms in 500)
    assert free <= len(os.sched_getaffinity(0)) - 1
