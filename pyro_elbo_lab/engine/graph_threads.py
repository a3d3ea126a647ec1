r"""How many threads one compiled CPU graph runs on.

Inductor's C++ kernels are OpenMP loops whose thread count is fixed when they are
generated (``cpp.threads``; by default torch's thread count at compile time). A thread
pays for itself only where a loop has enough elements to share: on a small graph every
kernel wakes and joins the team for a few microseconds of work. Each graph therefore gets

.. math::

    T = \min\big(B,\ \max(1,\ \lfloor S / S_1 \rfloor)\big),

with S the number of elements of the largest tensor the graph computes (the size of its
widest loop), B the threads the process may use and :data:`ELEMENTS_PER_THREAD` =
:math:`S_1` = 5,000. B is torch's thread count within the CPU budget
(:func:`~pyro_elbo_lab.cpu_budget.cpu_budget`: affinity mask and cgroup quota, so that a
compiled step called from a user's own script, where torch starts one thread per host
core, still stays within a container's quota), less the CPUs other processes keep busy
when the graph is compiled (:func:`~pyro_elbo_lab.cpu_load.free_cpus`): a thread that
shares a busy core makes the whole team wait for its time slices at every barrier (at
N = 10³ on two threads beside one spinning process, 0.25× the idle speed; one thread keeps
0.79×, ``experiments/gmm_scale/targets.md``). The choice is per graph and baked into its
kernels: nothing else in the process changes its threads; the run record lists it
(``fit.fitter.compiled_threads``). Kernels on different thread counts reduce in a
different order, so a graph compiled beside another job agrees with one compiled on an
idle machine to float32 rounding, not bit for bit; ``cpp.threads`` in the compile options
pins the count.

:math:`S_1` is measured (``experiments/gmm_scale/threads.py``, ``threads.md``): the GMM's
compiled update on 1 and 2 threads, interleaved in one process per cell, N = 20 … 10⁶,
(K, D) ∈ {5, 10} × {2, 10}, on a 2-core Intel Xeon (AVX-512, AMX). One thread is as fast
or faster up to S = 5,000 (by up to 13%), the two cells at S = 10⁴ split (−5%, +12%),
and two threads win from S = 2·10⁴ on (by 16% to 100%): the rule's choice is never more
than 5% slower than the faster one there. Only the step from one thread to two is
measured; on the 2-core AMD EPYC of issue 34, two threads were the slower and erratic
choice already at S = 10⁴, so the crossing point depends on the machine (a set-up timing
of the candidates would find it per machine; not built).
"""

from __future__ import annotations

import math

import torch

from pyro_elbo_lab.cpu_budget import cpu_budget
from pyro_elbo_lab.cpu_load import free_cpus

#: elements of a graph's largest tensor per thread (see the module doc)
ELEMENTS_PER_THREAD = 5_000


def largest_tensor(graph: torch.fx.GraphModule) -> int:
    """Elements of the largest tensor any node of ``graph`` computes (its traced
    ``meta["val"]``; 0 where no node carries one)."""
    sizes = [
        math.prod(value.shape)
        for node in graph.graph.nodes
        if isinstance(value := node.meta.get("val"), torch.Tensor)
    ]
    return max(sizes, default=0)


def available_threads() -> int:
    """torch's thread count, within this process's CPU budget and the CPUs other
    processes leave free now."""
    return max(1, min(torch.get_num_threads(), free_cpus(cpu_budget())))


def graph_threads(graph: torch.fx.GraphModule, available: int | None = None) -> int:
    """The threads ``graph``'s kernels get: one per :data:`ELEMENTS_PER_THREAD` elements
    of its largest tensor, at least 1, at most ``available`` (default
    :func:`available_threads`, measured only where the graph could use more than one)."""
    wanted = max(1, largest_tensor(graph) // ELEMENTS_PER_THREAD)
    if wanted == 1:
        return 1
    return min(wanted, available_threads() if available is None else available)
