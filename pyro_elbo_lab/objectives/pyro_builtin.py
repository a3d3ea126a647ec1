"""Pyro's own objectives, registered under short names so the lab compares against them.

Each is Pyro's class with what the lab's contract adds: the facts the lab checks
(``requires_reparam``, ``enumerates``, ``reports_loss``) as instance attributes, like
the engine's objectives, and a one-line refusal before any gradient instead of a crash or
a silently different number for programs the class cannot handle (an enumerated site it
would sample from the prior, a non-reparameterisable site it needs to differentiate
through, a guide without a density for RWS's wake-φ, a model that does not broadcast
over its vectorised particles). The checks watch the sites as Pyro's own pass draws
them (:class:`~pyro_elbo_lab.engine.checks.SiteChecks`): they draw nothing, so a valid
program gives exactly the numbers Pyro's class gives.
"""

from __future__ import annotations

from collections.abc import Callable
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

from pyro_elbo_lab.engine import (
    SiteChecks,
    guess_max_plate_nesting,
    not_vectorisable,
    particle_plate,
)
from pyro_elbo_lab.errors import ConfigError, first_line, require, require_positive_int
from pyro_elbo_lab.registry import objectives


class CheckedPyroObjective:
    """Mixin for a Pyro ELBO class: refuse, as the sites are drawn, what it cannot do."""

    name: str = "pyro"
    requires_reparam: bool = False
    enumerates: bool = False
    reports_loss: bool = True
    #: whether the guide must draw latents with a density (RWS's wake-φ scores them)
    needs_guide_density: bool = False
    #: what trains the model's parameters θ: ``bound`` (the gradient of the bound the
    #: objective states), ``iwae`` (wake-θ: the IWAE bound's), or None (it refuses θ)
    model_gradient: str | None = "bound"

    def _checked(self, method: Callable, model: Callable, guide: Callable, args, kwargs):
        objective = f"objective '{self.name}'"
        checked_model = SiteChecks(
            objective, enumerates=self.enumerates, refuse_params=self.model_gradient is None
        )(model)
        checked_guide = SiteChecks(
            objective,
            enumerates=self.enumerates,
            require_reparam=self.requires_reparam,
            require_density=self.needs_guide_density,
        )(guide)
        try:
            return method(checked_model, checked_guide, *args, **kwargs)
        except ConfigError as error:
            # Pyro's trace appends the trace's shapes to errors raised inside it: one line
            raise ConfigError(first_line(error)) from error
        except (RuntimeError, ValueError, IndexError) as error:
            if not getattr(self, "vectorize_particles", False):
                raise
            nesting = guess_max_plate_nesting(model, guide, args, kwargs)
            plate = particle_plate(self.num_particles, nesting)
            raise not_vectorisable(model, guide, args, kwargs, plate, error) from error


def scalar_loss(loss: Any) -> float:
    """A loss method's value as one number: Pyro's ReweightedWakeSleep returns the pair
    (wake-θ loss, φ loss), whose first is −IWAE_K like every other objective's loss."""
    return float(loss[0]) if isinstance(loss, tuple) else float(loss)


def _checked_class(base: type, name: str, **facts: Any) -> type:
    """``base`` with every loss method it has (Pyro's RenyiELBO, ReweightedWakeSleep and
    TraceGraph_ELBO have no ``differentiable_loss``) run through the checks first."""

    def checked(method_name: str) -> Callable:
        method = getattr(base, method_name)

        def run(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> Any:
            return self._checked(method.__get__(self), model, guide, args, kwargs)

        run.__name__ = method_name
        run.__doc__ = method.__doc__
        return run

    methods = {
        method_name: checked(method_name)
        for method_name in ("loss", "loss_and_grads", "differentiable_loss")
        if hasattr(base, method_name)
    }
    return type(base.__name__, (CheckedPyroObjective, base), {"name": name, **facts, **methods})


CheckedTrace = _checked_class(Trace_ELBO, "trace")
CheckedTraceMeanField = _checked_class(
    TraceMeanField_ELBO, "trace_mean_field", requires_reparam=True
)
CheckedTraceGraph = _checked_class(TraceGraph_ELBO, "trace_graph")
CheckedTraceEnum = _checked_class(TraceEnum_ELBO, "trace_enum", enumerates=True)
CheckedRenyi = _checked_class(RenyiELBO, "renyi")
CheckedRWS = _checked_class(
    ReweightedWakeSleep, "rws", needs_guide_density=True, model_gradient="iwae"
)
# Its θ-gradient is the tail-adaptive f-divergence's surrogate, not a bound's.
CheckedTailAdaptive = _checked_class(
    TraceTailAdaptive_ELBO,
    "tail_adaptive",
    requires_reparam=True,
    reports_loss=False,
    model_gradient=None,
)


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


@objectives.register("trace")
def trace(
    num_particles: int = 1, vectorize_particles: bool = False, max_plate_nesting: int | None = None
) -> ELBO:
    """Pyro's Trace_ELBO: the standard ELBO (reparameterised or score function); the baseline."""
    return CheckedTrace(**particle_options(num_particles, vectorize_particles, max_plate_nesting))


@objectives.register("trace_mean_field")
def trace_mean_field(
    num_particles: int = 1, vectorize_particles: bool = False, max_plate_nesting: int | None = None
) -> ELBO:
    """Pyro's TraceMeanField_ELBO: E_q[log p(x|z)] - KL(q||p), the KL analytic where known."""
    return CheckedTraceMeanField(
        **particle_options(num_particles, vectorize_particles, max_plate_nesting)
    )


@objectives.register("trace_graph")
def trace_graph(
    num_particles: int = 1, vectorize_particles: bool = False, max_plate_nesting: int | None = None
) -> ELBO:
    """Pyro's TraceGraph_ELBO: score-function terms with Rao-Blackwellisation and baselines."""
    return CheckedTraceGraph(
        **particle_options(num_particles, vectorize_particles, max_plate_nesting)
    )


@objectives.register("trace_enum")
def trace_enum(
    num_particles: int = 1, vectorize_particles: bool = False, max_plate_nesting: int | None = None
) -> ELBO:
    """Pyro's TraceEnum_ELBO: sums out discrete latents marked for enumeration."""
    return CheckedTraceEnum(
        **particle_options(num_particles, vectorize_particles, max_plate_nesting)
    )


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
    return CheckedRenyi(
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
    require_positive_int("objective.num_particles", num_particles, minimum=2)  # Pyro asserts it
    require(0.0 <= insomnia <= 1.0, f"objective.insomnia must lie in [0, 1], got {insomnia!r}")
    if num_sleep_particles is not None:
        require_positive_int("objective.num_sleep_particles", num_sleep_particles)
    return CheckedRWS(
        insomnia=insomnia,
        num_sleep_particles=num_sleep_particles,
        **particle_options(num_particles, vectorize_particles, max_plate_nesting),
    )


@objectives.register("tail_adaptive")
def tail_adaptive(
    num_particles: int = 8, tail_adaptive_beta: float = -1.0, max_plate_nesting: int | None = None
) -> ELBO:
    """Pyro's TraceTailAdaptive_ELBO (Wang et al. 2018): tail-adaptive f-divergence."""
    require_positive_int("objective.num_particles", num_particles, minimum=2)
    require(
        -1.0 <= tail_adaptive_beta < 0.0,
        f"objective.tail_adaptive_beta must lie in [-1, 0), got {tail_adaptive_beta!r}",
    )
    return CheckedTailAdaptive(
        tail_adaptive_beta=tail_adaptive_beta,
        **particle_options(num_particles, True, max_plate_nesting),
    )
