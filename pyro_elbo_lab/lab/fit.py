"""The fit loop: step a fitter (SVI by default) until a budget is spent or it converges;
stop on divergence."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI
from tqdm.auto import tqdm

from pyro_elbo_lab.engine import CompiledSVI, CountedModel
from pyro_elbo_lab.errors import ConfigError, require
from pyro_elbo_lab.fitters import Fitter
from pyro_elbo_lab.fitters.certificate import (
    Certificate,
    IterateCertificate,
    deterministic_certificate,
)
from pyro_elbo_lab.fitters.start import INIT_METHODS, StartingGaussian, starting_gaussian
from pyro_elbo_lab.guides.coordinates import PRECONDITIONING
from pyro_elbo_lab.guides.marginals import guide_marginals
from pyro_elbo_lab.guides.start import start_guide, start_support
from pyro_elbo_lab.lab.budget import BudgetSettings, Spending, checkpoint_fractions
from pyro_elbo_lab.lab.components import Components
from pyro_elbo_lab.lab.console import interactive
from pyro_elbo_lab.lab.convergence import ConvergenceSettings, RelativeChangeRule
from pyro_elbo_lab.lab.robust_schedule import RobustSchedule, ScheduleSettings
from pyro_elbo_lab.lab.step_size import BudgetDecay
from pyro_elbo_lab.objectives.pyro_builtin import scalar_loss
from pyro_elbo_lab.optim import FusedAdam
from pyro_elbo_lab.registry import fitters

PARAMETER_CHECK_EVERY = 25


@dataclass(frozen=True)
class FitPlan:
    """How long a fit may run: the step cap, the budget, the stopping rule, the checkpoints."""

    steps: int
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    convergence: ConvergenceSettings = field(default_factory=ConvergenceSettings)
    checkpoints: int = 0
    #: the learning rates end at this fraction of their start, geometric in the budget spent
    final_lr_fraction: float = 1.0
    #: the optimiser's own learning rate, or RAABBVI-style phases (:mod:`.robust_schedule`)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    #: the starting Gaussian (:data:`~pyro_elbo_lab.fitters.start.INIT_METHODS`) and the
    #: coordinates the fit moves in (:data:`~pyro_elbo_lab.guides.coordinates.PRECONDITIONING`)
    init: str = "median"
    precondition: str = "none"
    #: the start's scale where the method gives none (median, map)
    init_scale: float = 0.1
    #: whether ``init`` is a default (the model's or the fitter's), which a guide that
    #: takes no start passes over, where a named one is refused
    init_is_default: bool = False

    def __post_init__(self) -> None:
        fraction = self.final_lr_fraction
        require(
            isinstance(fraction, int | float) and 0 < fraction <= 1,
            f"final_lr_fraction must be in (0, 1], got {fraction!r}",
        )
        require(
            self.init in INIT_METHODS,
            f"init must be one of {', '.join(INIT_METHODS)}, got {self.init!r}",
        )
        require(
            self.precondition in PRECONDITIONING,
            f"precondition must be one of {', '.join(PRECONDITIONING)}, got {self.precondition!r}",
        )

    @property
    def starts_elsewhere(self) -> bool:
        """Whether the fit starts from a computed Gaussian (else each guide's own start)."""
        return self.init != "median" or self.precondition != "none"

    def for_guide(self, guide: Any, own_state: bool) -> FitPlan:
        """``precondition=auto`` and a default ``init`` resolved for ``guide`` (a fitter
        with its own state, such as GSM, moves in no coordinates of the guide's)."""
        takes, whitening = start_support(guide)
        precondition = self.precondition
        if precondition == "auto":
            precondition = "none" if own_state or not takes else whitening
        init = self.init if takes or not self.init_is_default else "median"
        return dataclasses.replace(self, init=init, precondition=precondition)


@dataclass
class FitResult:
    """What the loop did: losses per step, what it spent, why it stopped, its checkpoints."""

    losses: list[float] = field(default_factory=list)
    diverged: bool = False
    #: fitting time, checkpoint evaluations excluded
    wall_time_s: float = 0.0
    #: time of the fitter's set-up steps (guide prototype, tracing, compiling: the first
    #: one, two for a compiled update), and of the steps after them
    setup_time_s: float = 0.0
    steady_time_s: float = 0.0
    setup_steps: int = 1
    model_evals: int = 0
    #: log-density gradient evaluations (SVI: one per model evaluation)
    gradient_evals: int = 0
    #: ``steps``, ``model_evals`` or ``seconds`` (a budget), ``converged`` or ``diverged``
    stopped_by: str = ""
    convergence_message: str | None = None
    checkpoint_time_s: float = 0.0
    #: per checkpoint: ``step``, ``model_evals``, ``seconds`` and the anytime metric
    checkpoints: list[dict[str, float]] = field(default_factory=list)
    #: how the fit started (:meth:`StartingGaussian.summary`, and its coordinates)
    start: dict[str, Any] = field(default_factory=lambda: {"method": "median"})
    #: did it arrive (:mod:`~pyro_elbo_lab.fitters.certificate`)
    certificate: Certificate | None = None
    #: whether the guide ends at its iterates' window average (convergence.average_iterates)
    averaged: bool = False
    #: what the fitter says of its own solve (draws, iterations, linear response, paths)
    fitter_details: dict[str, Any] = field(default_factory=dict)

    @property
    def steps_completed(self) -> int:
        return len(self.losses)

    @property
    def steps_per_second(self) -> float:
        """Steps per second after the set-up steps."""
        steady_steps = self.steps_completed - self.setup_steps
        return steady_steps / self.steady_time_s if steady_steps > 0 else math.nan

    def final_loss(self) -> float:
        """Mean loss over the last 10% of steps (at least one), less noisy than the last."""
        finite = [loss for loss in self.losses if math.isfinite(loss)]
        if not finite:
            return math.nan
        tail = max(1, len(finite) // 10)
        return sum(finite[-tail:]) / tail

    def history(self, num_points: int) -> dict[str, list[float]]:
        """The finite losses averaged into at most ``num_points`` consecutive bins."""
        count = len(self.losses)
        if count == 0:
            return {"step": [], "loss": []}
        bins = min(num_points, count)
        losses = torch.tensor(self.losses, dtype=torch.float64)
        edges = torch.linspace(0, count, bins + 1).round().long().tolist()
        steps, means = [], []
        for start, stop in itertools.pairwise(edges):
            window = losses[start:stop]
            window = window[window.isfinite()]
            if len(window):  # objectives that report no loss leave no points
                steps.append((start + stop - 1) / 2)
                means.append(float(window.mean()))
        return {"step": steps, "loss": means}


def _parameters_finite() -> bool:
    values = [value.detach() for value in pyro.get_param_store().values()]
    return not values or bool(torch.stack([value.isfinite().all() for value in values]).all())


def _svi(components: Components, model: CountedModel) -> SVI:
    """SVI, or :class:`CompiledSVI` (the Adam step compiled with the loss) when the
    objective is compiled and the optimiser is ``fused_adam``."""
    objective, optim = components.objective, components.optim
    compiled = getattr(objective, "compiled", None) is not None
    if compiled and isinstance(optim, FusedAdam) and not objective.carries_state:
        return CompiledSVI(model, components.guide, optim, objective)
    return SVI(model, components.guide, optim, loss=objective)


class SVIFitter(Fitter):
    """``fitter=svi``: Pyro's SVI with the run's objective and optimiser.

    Model evaluations are counted by :class:`~pyro_elbo_lab.engine.CountedModel`; a
    compiled step, which replays a traced pass without calling the model, costs what
    the last eager step cost. Every evaluation carries a gradient.
    """

    def __init__(self, components: Components) -> None:
        self.counted = CountedModel(components.model)
        self.objective = components.objective
        self.svi = _svi(components, self.counted)
        self.step_data = components.model.step_data
        self.reports_loss = getattr(components.objective, "reports_loss", True)
        # CompiledSVI: the first step traces the loss, the second compiles the update
        self.setup_steps = 2 if isinstance(self.svi, CompiledSVI) else 1
        self._evals_per_step = 0
        self._evals = 0

    def step(self) -> float:
        before = self.counted.count
        value = self.svi.step(self.step_data())
        if self.counted.count > before:
            self._evals_per_step = self.counted.count - before
        self._evals += self._evals_per_step
        return scalar_loss(value) if self.reports_loss else math.nan

    @property
    def model_evals(self) -> int:
        return self._evals

    def details(self) -> dict[str, Any]:
        """``compiled_threads``: the threads of each graph that ran compiled on the CPU
        (:mod:`~pyro_elbo_lab.engine.graph_threads`), where any did."""
        if isinstance(self.svi, CompiledSVI):
            graphs = self.svi.compiled_graphs()
        else:
            compiled = getattr(self.objective, "compiled", None)
            graphs = compiled.compiled_graphs() if compiled is not None else []
        threads = [graph.threads for graph in graphs if graph.threads is not None]
        return {"compiled_threads": threads} if threads else {}


def make_fitter(components: Components) -> Fitter:
    """The run's fitter: :class:`SVIFitter`, or the registered method ``fitter.name``."""
    if components.fitter_name == "svi":
        return SVIFitter(components)
    return fitters.build(
        components.fitter_name, components.model, components.guide, **components.fitter_params
    )


def fit(
    components: Components,
    plan: FitPlan,
    progress_bar: bool = True,
    label: str = "",
    on_step: Callable[[int, float], None] | None = None,
    measure: Callable[[], dict[str, Any]] | None = None,
) -> FitResult:
    """Step the run's fitter (:func:`make_fitter`) until ``plan``'s budget is spent, the
    loss converges (``plan.convergence``) or the fitter's own rule stops it, or the fit
    diverges. ``on_step(step, loss)`` sees every step's loss (e.g. a tracker);
    ``measure()``, the anytime metric, runs at ``plan.checkpoints`` log-spaced fractions
    of the budget with the clock stopped.

    Cost is what the fitter counts (:attr:`Fitter.model_evals`, K particles = K).
    Divergence: a non-finite loss (objectives whose registry entry says
    ``reports_loss=False``, such as tail-adaptive, record NaN instead) or non-finite
    parameters, checked every ``PARAMETER_CHECK_EVERY`` steps and at the end.
    """
    own_state = components.fitter_name != "svi" and not fitters.get(components.fitter_name).trait(
        "any_reparameterised_guide", False
    )
    plan = plan.for_guide(components.guide, own_state)
    starting = _start(components, plan)
    # Gaussian fitters (gsm, bam, pathfinder) keep their own state and take the start
    # as q0; the others fit the guide's parameters, which take it before they begin
    own_state = components.fitter_name != "svi" and not fitters.get(components.fitter_name).trait(
        "any_reparameterised_guide", False
    )
    if starting is not None and not own_state:
        start_guide(components.guide, starting, plan.precondition)
    fitter = make_fitter(components)
    if starting is not None and own_state:
        if plan.precondition != "none":
            raise ConfigError(
                f"fitter={components.fitter_name} is affine invariant and has no gradient "
                "steps to precondition; use precondition=none (init= still applies)"
            )
        fitter.start_from(starting)
    start_cost = (starting.model_evals, starting.gradient_evals) if starting else (0, 0)
    decay = None
    if plan.final_lr_fraction < 1:
        if not isinstance(fitter, SVIFitter):
            raise ConfigError(
                f"final_lr_fraction < 1 decays the optimiser's learning rate, which "
                f"fitter={components.fitter_name} has none of; use final_lr_fraction=1"
            )
        if isinstance(fitter.svi, CompiledSVI):
            raise ConfigError(
                "final_lr_fraction < 1 changes the learning rate every step, which the "
                "compiled Adam update (optim=fused_adam with a compiled objective) holds "
                "fixed; use optim=adam, or final_lr_fraction=1"
            )
        decay = BudgetDecay(components.optim, plan.final_lr_fraction)
    reports_loss = fitter.reports_loss
    schedule = _robust_schedule(components, fitter, plan)
    rule = (
        RelativeChangeRule(plan.convergence)
        if plan.convergence.tol_rel_obj is not None and reports_loss and schedule is None
        else None
    )
    checkpoints = checkpoint_fractions(plan.checkpoints) if measure is not None else []
    result = FitResult(setup_steps=fitter.setup_steps)
    watch = (
        None
        if fitter.deterministic
        else IterateCertificate(functools.partial(guide_marginals, components.guide))
    )
    store = pyro.get_param_store()
    spent = Spending()
    show = progress_bar and interactive()
    with tqdm(total=100, disable=not show, desc=label, leave=False) as bar:
        while True:
            start = time.perf_counter()
            loss = fitter.step()
            spent.steps += 1
            spent.model_evals = fitter.model_evals + start_cost[0]
            finite = math.isfinite(loss) if reports_loss else True
            if finite and spent.steps % PARAMETER_CHECK_EVERY == 1:
                finite = _parameters_finite()
            elapsed = time.perf_counter() - start
            spent.seconds += elapsed
            if spent.steps > fitter.setup_steps:
                result.steady_time_s += elapsed
            else:
                result.setup_time_s += elapsed
            result.losses.append(loss)
            if watch is not None:
                watch.observe([p for _, p in store.named_parameters()], loss)
            if on_step is not None:
                on_step(spent.steps - 1, loss)
            if not finite:
                break
            if rule is not None:
                result.convergence_message = rule.update(loss)
            if schedule is not None and finite:
                result.convergence_message = schedule.update(loss)
            result.convergence_message = result.convergence_message or fitter.converged
            result.stopped_by = spent.exhausted_limit(plan.budget, plan.steps) or (
                "converged" if result.convergence_message else ""
            )
            fraction = spent.fraction_of(plan.budget, plan.steps)
            if decay is not None:
                decay.update(fraction)
            if checkpoints and (fraction >= checkpoints[0] or result.stopped_by):
                # one measurement for every checkpoint this step passed; the last at the stop
                checkpoints = [] if result.stopped_by else [f for f in checkpoints if f > fraction]
                _record_checkpoint(result, spent, fitter.gradient_evals + start_cost[1], measure)
            if show:
                bar.n = min(100, int(100 * fraction))
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                bar.refresh()
            if result.stopped_by:
                break
    if result.stopped_by == "" or not _parameters_finite():
        result.diverged, result.stopped_by = True, "diverged"
    result.wall_time_s = spent.seconds
    result.model_evals = spent.model_evals
    result.gradient_evals = fitter.gradient_evals + start_cost[1]
    if starting is not None:
        result.start = {**starting.summary(), "precondition": plan.precondition}
    result.fitter_details = fitter.details()
    if schedule is not None:
        result.certificate = schedule.certificate()
    elif fitter.uncertifiable:
        result.certificate = Certificate(None, math.nan, "none", fitter.uncertifiable)
    elif watch is None:
        result.certificate = deterministic_certificate(
            fitter.converged, getattr(fitter, "arrived", True)
        )
    else:
        result.certificate = watch.verdict(averaged=plan.convergence.average_iterates)
    if plan.convergence.average_iterates and result.certificate.converged and watch is not None:
        result.averaged = _write_average(watch, store)
    return result


def _write_average(watch: IterateCertificate, store: Any) -> bool:
    """Set every parameter to its window average (in the optimiser's unconstrained
    coordinates); False where the vector was too large to keep whole."""
    average = watch.window_average()
    if average is None:
        return False
    offset = 0
    with torch.no_grad():
        for _, parameter in store.named_parameters():
            size = parameter.numel()
            parameter.copy_(average[offset : offset + size].reshape(parameter.shape))
            offset += size
    return True


def _robust_schedule(
    components: Components, fitter: Fitter, plan: FitPlan
) -> RobustSchedule | None:
    """The RAABBVI phases for an SVI fit with ``schedule.kind=raabbvi`` (None otherwise)."""
    if plan.schedule.kind != "raabbvi":
        return None
    if not isinstance(fitter, SVIFitter) or isinstance(fitter.svi, CompiledSVI):
        raise ConfigError(
            "schedule.kind=raabbvi changes an SVI optimiser's learning rate between phases; "
            "use fitter=svi with an eager optimiser (optim=adam), or schedule.kind=constant"
        )
    if plan.final_lr_fraction < 1:
        raise ConfigError(
            "schedule.kind=raabbvi sets the learning rate itself; use final_lr_fraction=1"
        )
    guide = components.guide
    with poutine.block(), torch.no_grad():
        guide(components.model.train_data)
    sites = [name for name, _ in guide.prototype_trace.iter_stochastic_nodes()]
    return RobustSchedule(plan.schedule, components.optim, guide, sites)


def _start(components: Components, plan: FitPlan) -> StartingGaussian | None:
    """The run's starting Gaussian, with the guide's prototype set up to take it; None
    where every guide keeps its own start (init=median, no preconditioning)."""
    if not plan.starts_elsewhere:
        return None
    model = components.model
    with poutine.block(), torch.no_grad():
        components.guide(model.train_data)
    return starting_gaussian(model, plan.init, init_scale=plan.init_scale)


def _record_checkpoint(
    result: FitResult,
    spent: Spending,
    gradient_evals: int,
    measure: Callable[[], dict[str, Any]],
) -> None:
    start = time.perf_counter()
    metrics = measure()
    result.checkpoint_time_s += time.perf_counter() - start
    cost = {"model_evals": spent.model_evals, "gradient_evals": gradient_evals}
    result.checkpoints.append({"step": spent.steps, **cost, "seconds": spent.seconds, **metrics})
