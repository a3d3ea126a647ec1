"""Threads per compiled graph: one per ELEMENTS_PER_THREAD elements of its largest
tensor, within torch's threads and the CPU budget."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from pyro_elbo_lab.engine import compiled, graph_threads
from pyro_elbo_lab.engine.graph_threads import ELEMENTS_PER_THREAD, largest_tensor


def _graph(elements: int) -> torch.fx.GraphModule:
    """A graph whose widest tensor has ``elements`` elements (an outer product)."""
    return make_fx(lambda x, y: (x[:, None] * y[None, :]).sum(), tracing_mode="fake")(
        torch.zeros(elements // 10), torch.zeros(10)
    )


def test_the_largest_tensor_is_read_from_the_traced_shapes():
    assert largest_tensor(_graph(10_000)) == 10_000


@pytest.mark.parametrize(
    ("elements", "available", "threads"),
    [
        (1_000, 8, 1),  # a small graph: one thread, whatever is available
        (3 * ELEMENTS_PER_THREAD, 8, 3),
        (30 * ELEMENTS_PER_THREAD, 8, 8),  # never more than available
        (30 * ELEMENTS_PER_THREAD, 1, 1),
    ],
)
def test_threads_grow_with_the_graph_up_to_what_is_available(elements, available, threads):
    assert graph_threads.graph_threads(_graph(elements), available) == threads


def test_the_cpu_budget_caps_torchs_own_thread_count(monkeypatch):
    """From a user's script torch starts one thread per host core; a container's quota
    (the CPU budget) still binds."""
    monkeypatch.setattr(graph_threads, "cpu_budget", lambda: 2)
    monkeypatch.setattr(graph_threads, "free_cpus", lambda budget: budget)  # an idle host
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    assert graph_threads.available_threads() == 2
    assert graph_threads.graph_threads(_graph(100 * ELEMENTS_PER_THREAD)) == 2


def test_cpus_other_processes_keep_busy_are_not_counted(monkeypatch):
    """Beside a process spinning on one core of two, a compiled graph gets one thread."""
    monkeypatch.setattr(graph_threads, "cpu_budget", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(graph_threads, "free_cpus", lambda budget: budget - 1)
    assert graph_threads.graph_threads(_graph(100 * ELEMENTS_PER_THREAD)) == 1


def test_the_users_own_compile_options_win():
    inputs = [torch.zeros(3)]
    lab = compiled.compile_options_for({}, inputs, lambda: 2)
    assert [options["options"]["cpp.threads"] for options in lab] == [2, 2]
    own = compiled.compile_options_for({"options": {"cpp.threads": 4}}, inputs, lambda: 2)
    assert [options["options"]["cpp.threads"] for options in own] == [4, 4]
    mode = {"mode": "max-autotune"}
    assert compiled.compile_options_for(mode, inputs, lambda: 2) == [mode]


def test_a_graph_too_small_for_two_threads_does_not_wait_to_measure_the_load(monkeypatch):
    def measured(budget):
        raise AssertionError("a one-thread graph measured the free CPUs")

    monkeypatch.setattr(graph_threads, "free_cpus", measured)
    assert graph_threads.graph_threads(_graph(ELEMENTS_PER_THREAD)) == 1
