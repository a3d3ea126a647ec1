r"""Running a (model, guide) pair: the particle plate, unvectorised traces, plate depth."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pyro
from pyro import poutine
from pyro.util import get_rng_state, set_rng_state

#: The name of the plate the engine vectorises particles in.
PARTICLE_PLATE = "num_particles_vectorized"


@contextlib.contextmanager
def random_streams_restored() -> Iterator[None]:
    """Run the block, then put Pyro's, torch's, numpy's and Python's random streams back
    where they were: a measurement inside leaves a fit's draws unchanged."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def particle_plate(num_particles: int, max_plate_nesting: int) -> pyro.plate:
    """The plate that vectorises particles, left of the model's ``max_plate_nesting`` dims."""
    return pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1))


def unbatched_traces(
    model: Callable[..., Any], guide: Callable[..., Any], args: tuple, kwargs: dict
) -> tuple[poutine.Trace, poutine.Trace]:
    """(model, guide) traces of one unvectorised pass, hidden from outer handlers."""
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    return model_trace, guide_trace


def guess_max_plate_nesting(
    model: Callable[..., Any], guide: Callable[..., Any], args: tuple, kwargs: dict
) -> int:
    """Run model and guide once, unvectorised, and read the deepest plate dim used."""
    return max(plate_depth(trace) for trace in unbatched_traces(model, guide, args, kwargs))


def plate_depth(trace: poutine.Trace) -> int:
    """The deepest plate dim a trace's sample sites use (0: no vectorised plate)."""
    dims = [
        -frame.dim
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized and frame.dim is not None
    ]
    return max(dims, default=0)


def detached_values(trace: poutine.Trace) -> poutine.Trace:
    """A copy of ``trace`` whose sample values are detached from the autograd graph."""
    detached = trace.copy()
    for name, site in trace.nodes.items():
        if site["type"] == "sample":
            detached.nodes[name] = {**site, "value": site["value"].detach()}
    return detached
