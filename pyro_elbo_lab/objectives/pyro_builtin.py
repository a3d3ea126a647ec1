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

import inspect
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
    PyroELBOOptions,
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


#: ELBO keywords that only the classes taking them read (Pyro's JIT and tail-adaptive ELBOs)
READ_BY_OTHER_CLASSES = frozenset(
    {"strict_enumeration_warning", "ignore_jit_warnings", "jit_options", "tail_adaptive_beta"}
)


def _pyro_objective(
    checked: type, defaults: dict[str, Any], given: dict[str, Any], **own: Any
) -> ELBO:
    """``checked`` (a Pyro class, checked) built from Pyro's ELBO keywords
    (:class:`~pyro_elbo_lab.engine.PyroELBOOptions`, over the lab's ``defaults``) and the
    class's ``own`` parameters. A keyword of ``pyro.infer.ELBO`` that the Pyro class's
    constructor lacks is dropped where only other classes read it (the JIT options, the
    tail-adaptive β: ``Trace_ELBO`` too takes and ignores them), and otherwise taken at
    Pyro's default and refused at another value (``retain_graph`` for RenyiELBO and
    ReweightedWakeSleep, whose backward never retains the graph)."""
    options = PyroELBOOptions.of(checked.name, defaults, given)
    pyro_class = checked.__mro__[2]  # (Checked..., CheckedPyroObjective, the Pyro class)
    accepted = inspect.signature(pyro_class.__init__).parameters
    pyro_defaults = PyroELBOOptions()
    keywords = {}
    for name, value in options.pyro_keywords().items():
        if name in accepted:
            keywords[name] = value
        elif name not in READ_BY_OTHER_CLASSES and value != getattr(pyro_defaults, name):
            raise ConfigError(
                f"objective '{checked.name}' is Pyro's {pyro_class.__name__}, which takes no "
                f"{name}; drop {name}={value!r} (or use an objective of the lab's engine)"
            )
    return checked(**own, **keywords)


def _takes_pyro_keywords(factory: Callable) -> Callable:
    """The registry checks a factory's ``**options`` against Pyro's ELBO keywords."""
    factory.options_type = PyroELBOOptions
    return factory


@objectives.register("trace")
@_takes_pyro_keywords
def trace(**options: Any) -> ELBO:
    """Pyro's Trace_ELBO: the standard ELBO (reparameterised or score function); the baseline."""
    return _pyro_objective(CheckedTrace, {}, options)


@objectives.register("trace_mean_field")
@_takes_pyro_keywords
def trace_mean_field(**options: Any) -> ELBO:
    """Pyro's TraceMeanField_ELBO: E_q[log p(x|z)] - KL(q||p), the KL analytic where known."""
    return _pyro_objective(CheckedTraceMeanField, {}, options)


@objectives.register("trace_graph")
@_takes_pyro_keywords
def trace_graph(**options: Any) -> ELBO:
    """Pyro's TraceGraph_ELBO: score-function terms with Rao-Blackwellisation and baselines."""
    return _pyro_objective(CheckedTraceGraph, {}, options)


@objectives.register("trace_enum")
@_takes_pyro_keywords
def trace_enum(**options: Any) -> ELBO:
    """Pyro's TraceEnum_ELBO: sums out discrete latents marked for enumeration."""
    return _pyro_objective(CheckedTraceEnum, {}, options)


@objectives.register("renyi")
@_takes_pyro_keywords
def renyi(alpha: float = 0.0, **options: Any) -> ELBO:
    """Pyro's RenyiELBO: the VR-alpha bound (Li & Turner 2016); alpha=0 is IWAE."""
    if alpha == 1:
        raise ConfigError(
            "objective.alpha must differ from 1 (the Rényi bound at alpha=1 is the ELBO: "
            "use objective=trace)"
        )
    defaults = {"num_particles": 2, "vectorize_particles": True}
    return _pyro_objective(CheckedRenyi, defaults, options, alpha=alpha)


@objectives.register("rws")
@_takes_pyro_keywords
def rws(insomnia: float = 1.0, num_sleep_particles: int | None = None, **options: Any) -> ELBO:
    """Pyro's ReweightedWakeSleep (Bornschein & Bengio 2015): wake-theta and wake/sleep-phi."""
    require(0.0 <= insomnia <= 1.0, f"objective.insomnia must lie in [0, 1], got {insomnia!r}")
    if num_sleep_particles is not None:
        require_positive_int("objective.num_sleep_particles", num_sleep_particles)
    require_positive_int(  # Pyro asserts it
        "objective.num_particles", options.get("num_particles", 2), minimum=2
    )
    defaults = {"num_particles": 2, "vectorize_particles": True}
    return _pyro_objective(
        CheckedRWS, defaults, options, insomnia=insomnia, num_sleep_particles=num_sleep_particles
    )


@objectives.register("tail_adaptive")
@_takes_pyro_keywords
def tail_adaptive(**options: Any) -> ELBO:
    """Pyro's TraceTailAdaptive_ELBO (Wang et al. 2018): tail-adaptive f-divergence."""
    checked = PyroELBOOptions.of(
        "tail_adaptive", {"num_particles": 8, "vectorize_particles": True}, options
    )
    require_positive_int("objective.num_particles", checked.num_particles, minimum=2)
    require(  # Pyro asserts both
        checked.vectorize_particles,
        "objective 'tail_adaptive' draws its particles in one vectorised pass (Pyro's class "
        "asserts it): use vectorize_particles=True",
    )
    beta = checked.tail_adaptive_beta
    require(-1.0 <= beta < 0.0, f"objective.tail_adaptive_beta must lie in [-1, 0), got {beta!r}")
    return _pyro_objective(
        CheckedTailAdaptive, {"num_particles": 8, "vectorize_particles": True}, options
    )
