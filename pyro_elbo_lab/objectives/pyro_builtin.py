"""Pyro's own objectives, registered under short names so the lab compares against them."""

from __future__ import annotations

from typing import Any

from pyro.infer import (
    ELBO,
    RenyiELBO,
    ReweightedWakeSleep,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
    TraceTailAdaptive_ELBO,
)

from pyro_elbo_lab.errors import ConfigError, require, require_positive_int
from pyro_elbo_lab.registry import objectives


def particle_options(
    num_particles: int, vectorize_particles: bool, max_plate_nesting: int | None
) -> dict[str, Any]:
    """Validated keyword arguments shared by every ``pyro.infer.ELBO``."""
    require_positive_int("objective.num_particles", num_particles)
    options: dict[str, Any] = {
        "num_particles": num_particles,
        "vectorize_particles": vectorize_particles,
    }
    if max_plate_nesting is not None:
        require_positive_int("objective.max_plate_nesting", max_plate_nesting, minimum=0)
        options["max_plate_nesting"] = max_plate_nesting
    return options


@objectives.register("trace", reference=True)
def trace(
    num_particles: int = 1, vectorize_particles: bool = False, max_plate_nesting: int | None = None
) -> ELBO:
    """Pyro's Trace_ELBO: the standard ELBO (reparameterised or score function); the baseline."""
    return Trace_ELBO(**particle_options(num_particles, vectorize_particles, max_plate_nesting))


@objectives.register("trace_mean_field")
def trace_mean_field(
    num_particles: int = 1, vectorize_particles: bool = False, max_plate_nesting: int | None = None
) -> ELBO:
    """Pyro's TraceMeanField_ELBO: E_q[log p(x|z)] - KL(q||p), the KL analytic where known."""
    return TraceMeanField_ELBO(
        **particle_options(num_particles, vectorize_particles, max_plate_nesting)
    )


@objectives.register("trace_graph")
def trace_graph(
    num_particles: int = 1, vectorize_particles: bool = False, max_plate_nesting: int | None = None
) -> ELBO:
    """Pyro's TraceGraph_ELBO: score-function terms with Rao-Blackwellisation and baselines."""
    return TraceGraph_ELBO(
        **particle_options(num_particles, vectorize_particles, max_plate_nesting)
    )


@objectives.register("trace_enum", enumerates=True)
def trace_enum(
    num_particles: int = 1, vectorize_particles: bool = False, max_plate_nesting: int | None = None
) -> ELBO:
    """Pyro's TraceEnum_ELBO: sums out discrete latents marked for enumeration."""
    return TraceEnum_ELBO(**particle_options(num_particles, vectorize_particles, max_plate_nesting))


@objectives.register("renyi")
def renyi(
    alpha: float = 0.0,
    num_particles: int = 2,
    vectorize_particles: bool = True,
    max_plate_nesting: int | None = None,
) -> ELBO:
    """Pyro's RenyiELBO: the VR-alpha bound (Li & Turner 2016); alpha=0 is IWAE."""
    if alpha == 1:
        raise ConfigError(
            "objective.alpha must differ from 1 (the Rényi bound at alpha=1 is the ELBO: "
            "use objective=trace)"
        )
    return RenyiELBO(
        alpha=alpha, **particle_options(num_particles, vectorize_particles, max_plate_nesting)
    )


@objectives.register("rws")
def rws(
    num_particles: int = 2,
    insomnia: float = 1.0,
    num_sleep_particles: int | None = None,
    vectorize_particles: bool = True,
    max_plate_nesting: int | None = None,
) -> ELBO:
    """Pyro's ReweightedWakeSleep (Bornschein & Bengio 2015): wake-theta and wake/sleep-phi."""
    require(0.0 <= insomnia <= 1.0, f"objective.insomnia must lie in [0, 1], got {insomnia!r}")
    if num_sleep_particles is not None:
        require_positive_int("objective.num_sleep_particles", num_sleep_particles)
    return ReweightedWakeSleep(
        insomnia=insomnia,
        num_sleep_particles=num_sleep_particles,
        **particle_options(num_particles, vectorize_particles, max_plate_nesting),
    )


@objectives.register("tail_adaptive", requires_reparam=True, reports_loss=False)
def tail_adaptive(
    num_particles: int = 8, tail_adaptive_beta: float = -1.0, max_plate_nesting: int | None = None
) -> ELBO:
    """Pyro's TraceTailAdaptive_ELBO (Wang et al. 2018): tail-adaptive f-divergence."""
    require_positive_int("objective.num_particles", num_particles, minimum=2)
    require(
        -1.0 <= tail_adaptive_beta < 0.0,
        f"objective.tail_adaptive_beta must lie in [-1, 0), got {tail_adaptive_beta!r}",
    )
    return TraceTailAdaptive_ELBO(
        tail_adaptive_beta=tail_adaptive_beta,
        **particle_options(num_particles, True, max_plate_nesting),
    )
