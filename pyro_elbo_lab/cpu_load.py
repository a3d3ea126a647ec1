"""How busy the CPUs of this process's budget are with other processes' work, now.

Linux counts each CPU's time in ``/proc/stat`` (user, nice, system, idle, iowait, irq,
softirq, steal, in clock ticks) and each process's own time in ``/proc/<pid>/stat``
(utime and stime, all its threads). Over a short window the other processes' load on the
CPUs this process may run on is

.. math::

    L = \\frac{\\sum_{c \\in A} \\Delta\\mathrm{busy}_c - \\Delta\\mathrm{own}}
              {\\sum_{c \\in A} \\Delta\\mathrm{total}_c / |A|},

A the affinity mask: the CPUs another process keeps busy, in CPUs. Unlike the one-minute
load average, which decays with a time constant of a minute (a benchmark's previous
process, or a sweep's finished job, stays in it for a minute after it ends) and counts
processes on every CPU of the host, this is what a step starting now meets.

:func:`free_cpus` is the budget minus that load: where one core of two is kept busy by
another process, a compiled step on two OpenMP threads waits at each barrier for the
thread that shares the busy core (its time slices, milliseconds, are longer than the
whole step at small N): 0.25× its idle speed at N = 10³, K = 5, D = 2, where one
thread keeps 0.79× (``experiments/gmm_scale/targets.md``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pyro_elbo_lab.cpu_budget import affinity_mask

PROC_STAT = Path("/proc/stat")
#: the default window over which the load is measured (clock ticks are 10 ms)
WINDOW_S = 0.25


def _cpu_ticks(cpus: set[int], stat: Path) -> tuple[int, int]:
    """(busy, total) clock ticks so far, summed over ``cpus``."""
    busy = total = 0
    for line in stat.read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(field) for field in fields[:8]]  # guest time is already in user
        idle = ticks[3] + ticks[4]  # idle and iowait
        busy += sum(ticks) - idle
        total += sum(ticks)
    return busy, total


def _own_ticks(pid: int) -> int:
    """utime + stime of process ``pid`` (all its threads), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def busy_cpus(window_s: float = WINDOW_S, stat: Path = PROC_STAT) -> float:
    """CPUs of the affinity mask kept busy by other processes over the next ``window_s``
    seconds (0.0 where ``/proc`` is not there to read: not Linux)."""
    cpus, pid = affinity_mask(), os.getpid()
    if cpus is None or not stat.exists():
        return 0.0
    busy, total, own = *_cpu_ticks(cpus, stat), _own_ticks(pid)
    time.sleep(window_s)
    busy_after, total_after = _cpu_ticks(cpus, stat)
    elapsed = (total_after - total) / len(cpus)  # ticks of one CPU over the window
    others = busy_after - busy - (_own_ticks(pid) - own)
    return max(0.0, others / elapsed) if elapsed > 0 else 0.0


def free_cpus(budget: int, window_s: float = WINDOW_S) -> int:
    """Of ``budget`` CPUs (:func:`~pyro_elbo_lab.cpu_budget.cpu_budget`), those other
    processes leave free now, at least 1: the CPUs of the affinity mask minus
    :func:`busy_cpus`, rounded, at most ``budget``. Where a cgroup quota sets the budget
    (a container's ``--cpus=2`` on a 64-core host), the host's other load takes none of
    it until fewer than ``budget`` CPUs of the mask are left unused."""
    cpus = affinity_mask()
    if cpus is None:
        return max(1, budget)
    unused = len(cpus) - round(busy_cpus(window_s))
    return max(1, min(budget, unused))
