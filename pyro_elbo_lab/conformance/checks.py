r"""Conformance checks: what every registered objective must do on every catalogue case.

A case ends in exactly one of two outcomes (:func:`check_case`):

- **agree**: ``loss``, ``differentiable_loss`` and ``loss_and_grads`` give the same value
  from the same random state, and the last two the same finite gradients;
- **refuse**: all three raise :class:`~pyro_elbo_lab.errors.ConfigError` before any
  gradient is written, with a one-line message that names the site or option at fault
  and the fix.

Anything else (another exception, NaN, values or gradients that differ) is a
:class:`ConformanceFailure`. Where theory says an objective *is* the ELBO (IWAE and VR
at K = 1, VR as α → 1, β-ELBO at β = 1, STL, IWAE-DReG at K = 1),
:func:`check_elbo_equivalence` compares its value and gradient with Pyro's reference
ELBO in expectation: M seed-paired differences :math:`d_m` (common random numbers, so
exact agreement shows as :math:`d_m = 0`) must have a mean within
:math:`t_{1-\alpha/2m,\,M-1}\, \hat\sigma_d / \sqrt M` plus float round-off of zero,
coordinate by coordinate: a paired t-test per coordinate, Bonferroni-corrected over the
m coordinates so that a correct objective fails a case with probability at most α.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO

from pyro_elbo_lab.conformance.catalogue import Case, Program
from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.objectives.pyro_builtin import scalar_loss
from pyro_elbo_lab.registry import objectives, parameter_names

#: Particles per step in the agreement check (>= 2: some objectives need two).
NUM_PARTICLES = 3
#: Seed-paired repeats of the expectation check, and its false-failure rate per case.
REPEATS = 32
FAMILY_ERROR_RATE = 1e-4
#: Float round-off allowed on top of the Monte Carlo tolerance (relative).
ROUND_OFF = 1e-4


class ConformanceFailure(AssertionError):
    """An objective crashed, returned NaN, or disagreed with itself or with the ELBO."""


@dataclass(frozen=True)
class Outcome:
    """How one objective ended on one case: ``agree`` (with its loss) or ``refuse``."""

    objective: str
    case: str
    verdict: Literal["agree", "refuse"]
    loss: float | None = None
    message: str = ""


@dataclass(frozen=True)
class ElboEquivalent:
    """An objective configuration that theory says equals the ELBO in expectation.

    :param value_only: only the value is the ELBO's (not the gradient).
    """

    label: str
    objective: str
    options: tuple[tuple[str, Any], ...]
    value_only: bool = False


ELBO_EQUIVALENTS = (
    ElboEquivalent("iwae_k1", "iwae", (("num_particles", 1),)),
    ElboEquivalent("iwae_dreg_k1", "iwae_dreg", (("num_particles", 1),)),
    ElboEquivalent("vr_k1", "vr", (("num_particles", 1), ("alpha", 0.5))),
    # VR_α − ELBO ≈ (1 − α) Var(log w) / 2: the flat-prior posteriordb regressions start with
    # sd(log w) ~ 10⁴, so α must be this close to 1 for the limit to be the ELBO
    ElboEquivalent("vr_alpha_to_1", "vr", (("num_particles", 4), ("alpha", 1.0 - 1e-7))),
    ElboEquivalent("beta_elbo_beta1", "beta_elbo", (("num_particles", 1), ("beta", 1.0))),
    ElboEquivalent("stl_k1", "stl", (("num_particles", 1),)),
)


#: How Pyro programs build their ELBO, keyword for keyword (the forms Pyro's own test
#: suite gives ``Trace_ELBO``): every objective must take each as Pyro would, or refuse it
#: in one line. ``num_particles``/``max_plate_nesting`` absent: the case's are used.
PYRO_KEYWORD_SETS: dict[str, dict[str, Any]] = {
    "vectorized": {"num_particles": 8, "vectorize_particles": True, "max_plate_nesting": 1},
    "not_vectorized": {"vectorize_particles": False},
    "one_particle_not_vectorized": {"num_particles": 1, "vectorize_particles": False},
    "strict_enumeration_warning": {"strict_enumeration_warning": False},
    "jit": {"ignore_jit_warnings": True, "jit_options": {"check_trace": False}},
    "retain_graph": {"retain_graph": True},
    "max_iarange_nesting": {"max_iarange_nesting": 1},
    "infinite_nesting": {"max_plate_nesting": math.inf},
}


def build_objective(name: str, program: Program, **options: Any) -> ELBO:
    """The registered objective ``name`` for ``program``'s plate depth (``options`` may
    give Pyro's spellings of it: ``max_iarange_nesting``, ``max_plate_nesting=inf``)."""
    options.setdefault("num_particles", NUM_PARTICLES)
    if "max_iarange_nesting" not in options:
        options.setdefault("max_plate_nesting", program.max_plate_nesting)
    return objectives.build(name, **options)


def fresh_program(case: Case, seed: int = 0) -> Program:
    """A new program of ``case`` with its parameters initialised (empty store, fixed seed)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    program = case.build()
    with poutine.block():
        program.guide(*program.args, **program.kwargs)
    return program


def check_case(objective_name: str, case: Case, seed: int = 0, **options: Any) -> Outcome:
    """Run ``objective_name`` (built with ``options``) on ``case``: agree or refuse, else
    :class:`ConformanceFailure`. An objective that refuses the options themselves refuses
    the case, with its constructor's one line."""
    program = fresh_program(case, seed)
    try:
        objective = build_objective(objective_name, program, **options)
    except ConfigError as error:
        where = f"{objective_name}({options}) on {case.name}"
        _require_actionable(where, str(error), _option_names(objective_name))
        return Outcome(objective_name, case.name, "refuse", message=str(error))
    calls = _calls(objective, program)
    if getattr(objective, "max_plate_nesting", 0) == math.inf:
        # Pyro's classes guess the depth on their first call, drawing from the random
        # streams: guess it now, so that the seeded calls below see the same draws
        with contextlib.suppress(ConfigError):
            next(iter(calls.values()))()
    before = _parameter_values()
    results: dict[str, tuple[float, dict[str, torch.Tensor] | None]] = {}
    refusals: dict[str, ConfigError] = {}
    for method, call in calls.items():
        _reset(objective)
        pyro.set_rng_seed(seed)
        try:
            results[method] = call()
        except ConfigError as error:
            refusals[method] = error
        except Exception as error:  # a crash is what the suite exists to catch
            raise ConformanceFailure(
                f"{objective_name} on {case.name}: {method} crashed with "
                f"{type(error).__name__}: {error}"
            ) from error
    if refusals:
        return _refusal(objective_name, case, program, refusals, results, before)
    return _agreement(objective_name, case, results, getattr(objective, "reports_loss", True))


def _calls(objective: ELBO, program: Program) -> dict[str, Callable[[], tuple]]:
    model, guide, args, kwargs = program.model, program.guide, program.args, program.kwargs

    def loss() -> tuple[float, None]:
        return scalar_loss(objective.loss(model, guide, *args, **kwargs)), None

    def loss_and_grads() -> tuple[float, dict[str, torch.Tensor]]:
        with _captured_parameters() as parameters:
            value = objective.loss_and_grads(model, guide, *args, **kwargs)
        named = parameters()
        grads = [parameter.grad for parameter in named.values()]
        for parameter in named.values():
            parameter.grad = None
        return scalar_loss(value), dict(
            zip(named, _zero_missing(grads, named.values()), strict=True)
        )

    calls: dict[str, Callable[[], tuple]] = {}
    if getattr(objective, "reports_loss", True):
        calls["loss"] = loss
    if _implements(objective, "differentiable_loss"):
        calls["differentiable_loss"] = lambda: _differentiable_value(objective, program)
    calls["loss_and_grads"] = loss_and_grads
    return calls


def _implements(objective: ELBO, method: str) -> bool:
    """Whether ``objective`` has ``method`` of its own (Pyro's RenyiELBO, RWS and
    TraceGraph_ELBO have no ``differentiable_loss``)."""
    implementation = getattr(type(objective), method, None)
    return implementation is not None and implementation is not getattr(ELBO, method, None)


def _zero_missing(grads: Any, parameters: Any) -> list[torch.Tensor]:
    return [
        torch.zeros_like(parameter) if grad is None else grad.detach().clone()
        for grad, parameter in zip(grads, parameters, strict=True)
    ]


@contextlib.contextmanager
def _captured_parameters() -> Iterator[Callable[[], dict[str, torch.Tensor]]]:
    """The unconstrained parameters a call touched, by name (as ``SVI`` collects them)."""
    with poutine.trace(param_only=True) as capture:
        yield lambda: {
            name: site["value"].unconstrained()
            for name, site in capture.trace.nodes.items()
            if site["value"].unconstrained().requires_grad
        }


def _parameter_values() -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {name: store.get_param(name).detach().clone() for name in store}


def _reset(objective: ELBO) -> None:
    """Start stateful objectives (chains, warm-up schedules) from the same state."""
    reset = getattr(objective, "reset", None)
    if callable(reset):
        reset()


def _refusal(
    objective_name: str,
    case: Case,
    program: Program,
    refusals: dict[str, ConfigError],
    results: dict[str, tuple],
    before: dict[str, torch.Tensor],
) -> Outcome:
    where = f"{objective_name} on {case.name}"
    if results:
        raise ConformanceFailure(
            f"{where}: {sorted(refusals)} refused but {sorted(results)} ran: refusals must "
            "be the same for every method"
        )
    messages = {str(error) for error in refusals.values()}
    message = next(iter(messages))
    if len(messages) > 1:
        raise ConformanceFailure(f"{where}: the methods refuse differently: {messages}")
    _require_actionable(
        where, message, _program_site_names(program) | _option_names(objective_name)
    )
    after = _parameter_values()
    changed = [
        name for name in before if not torch.equal(before[name], after.get(name, before[name]))
    ]
    if changed:
        raise ConformanceFailure(f"{where}: refused after changing parameters {changed}")
    return Outcome(objective_name, case.name, "refuse", message=message)


def _require_actionable(where: str, message: str, names: set[str]) -> None:
    """A refusal is one line that names a fix and the site or option at fault."""
    if "\n" in message:
        raise ConformanceFailure(f"{where}: refusal is not one line: {message!r}")
    if not any(word in message for word in ("use ", "set ", "pass ", "give ", " must be ")):
        raise ConformanceFailure(f"{where}: refusal names no fix: {message!r}")
    forms = ("'{}'", "{}=", ".{} must be")
    if not any(form.format(name) in message for name in names for form in forms):
        raise ConformanceFailure(f"{where}: refusal names no site or option: {message!r}")


def _program_site_names(program: Program) -> set[str]:
    with poutine.block(), poutine.trace() as capture, contextlib.suppress(Exception):
        program.guide(*program.args, **program.kwargs)
    names = set(capture.trace.nodes)
    with poutine.block(), poutine.trace() as capture, contextlib.suppress(Exception):
        program.model(*program.args, **program.kwargs)
    return names | set(capture.trace.nodes)


def _option_names(objective_name: str) -> set[str]:
    factory = objectives.get(objective_name).factory
    return set(parameter_names(factory)) | {"objective", "guide", "model"}


def _agreement(
    objective_name: str, case: Case, results: dict[str, tuple], reports_loss: bool
) -> Outcome:
    """Same values (unless the objective reports no loss, like tail-adaptive, whose
    surrogate's value means nothing) and the same finite gradients from the same draws."""
    where = f"{objective_name} on {case.name}"
    values = {method: value for method, (value, _) in results.items() if reports_loss}
    for method, value in values.items():
        if not math.isfinite(value):
            raise ConformanceFailure(f"{where}: {method} returned {value}")
    first_method, reference = next(iter(values.items()), ("", math.nan))
    for method, value in values.items():
        if not math.isclose(value, reference, rel_tol=ROUND_OFF, abs_tol=ROUND_OFF):
            raise ConformanceFailure(
                f"{where}: {method} = {value} but {first_method} = {reference} from the same draws"
            )
    gradients = [grads for _, grads in results.values() if grads is not None]
    for grads in gradients:
        for name, grad in grads.items():
            if not bool(torch.isfinite(grad).all()):
                raise ConformanceFailure(f"{where}: gradient of '{name}' is not finite")
    if len(gradients) == 2:
        first, second = gradients
        if set(first) != set(second):
            raise ConformanceFailure(f"{where}: the methods touch different parameters")
        for name in first:
            if not torch.allclose(first[name], second[name], rtol=1e-3, atol=1e-4):
                raise ConformanceFailure(
                    f"{where}: differentiable_loss and loss_and_grads differ on '{name}'"
                )
    return Outcome(objective_name, case.name, "agree", loss=reference)


def reference_elbo(case: Case, program: Program, num_particles: int) -> ELBO:
    """Pyro's ELBO that accepts ``case`` as it is: Trace_ELBO, or TraceEnum_ELBO."""
    if case.reference == "trace_enum":
        return TraceEnum_ELBO(
            num_particles=num_particles, max_plate_nesting=program.max_plate_nesting
        )
    return Trace_ELBO(num_particles=num_particles)


def check_elbo_equivalence(
    equivalent: ElboEquivalent, case: Case, repeats: int | None = None
) -> Outcome:
    """Value and gradient of ``equivalent`` against Pyro's ELBO on ``case``, in expectation.

    Each repeat m draws both estimates from the same seed; the M differences must average
    to zero within ``Z_SCORE`` standard errors (plus round-off) for the value and for every
    gradient coordinate. A refusal (e.g. STL on a score-function guide) is an outcome too.
    """
    program = fresh_program(case)
    options = dict(equivalent.options)
    ours = build_objective(equivalent.objective, program, **options)
    reference = reference_elbo(case, program, options["num_particles"])
    our_values, their_values = [], []
    our_grads: list[torch.Tensor] = []
    their_grads: list[torch.Tensor] = []
    for repeat in range(repeats or case.repeats or REPEATS):
        try:
            value, grads = _value_and_gradient(ours, program, repeat)
        except ConfigError as error:
            return Outcome(equivalent.label, case.name, "refuse", message=str(error))
        reference_value, reference_grads = _value_and_gradient(reference, program, repeat)
        our_values.append(value)
        their_values.append(reference_value)
        names = sorted(set(grads) | set(reference_grads))
        our_grads.append(_flatten(grads, names, reference_grads))
        their_grads.append(_flatten(reference_grads, names, grads))
    where = f"{equivalent.label} on {case.name}"
    _paired_mean_is_zero(where, "value", torch.tensor(our_values), torch.tensor(their_values))
    if not equivalent.value_only:
        _paired_mean_is_zero(where, "gradient", torch.stack(our_grads), torch.stack(their_grads))
    return Outcome(
        equivalent.label, case.name, "agree", loss=float(torch.tensor(our_values).mean())
    )


def _value_and_gradient(
    objective: ELBO, program: Program, seed: int
) -> tuple[float, dict[str, torch.Tensor]]:
    _reset(objective)
    pyro.set_rng_seed(seed)
    return _differentiable_value(objective, program)


def _differentiable_value(
    objective: ELBO, program: Program
) -> tuple[float, dict[str, torch.Tensor]]:
    """``differentiable_loss``'s value and its gradient in every parameter it read."""
    with _captured_parameters() as parameters:
        value = objective.differentiable_loss(
            program.model, program.guide, *program.args, **program.kwargs
        )
    named = parameters()
    grads = (
        torch.autograd.grad(value, list(named.values()), allow_unused=True)
        if value.requires_grad and named
        else [None] * len(named)
    )
    return float(value.detach()), dict(
        zip(named, _zero_missing(grads, named.values()), strict=True)
    )


def _flatten(
    grads: dict[str, torch.Tensor], names: list[str], other: dict[str, torch.Tensor]
) -> torch.Tensor:
    parts = [grads[name] if name in grads else torch.zeros_like(other[name]) for name in names]
    return torch.cat([part.reshape(-1) for part in parts]) if parts else torch.zeros(0)


def t_quantile(probability: float, degrees_of_freedom: int) -> float:
    r"""Student-t quantile by its Cornish-Fisher expansion in :math:`1/\nu` (two terms;
    within 1% of the exact value for :math:`\nu \ge 20` up to 6 standard errors)."""
    z = float(torch.special.ndtri(torch.tensor(probability, dtype=torch.float64)))
    nu = degrees_of_freedom
    return z + (z**3 + z) / (4 * nu) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2)


def _paired_mean_is_zero(where: str, what: str, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    differences = (ours - theirs).double()
    mean = differences.mean(0)
    standard_error = differences.std(0) / math.sqrt(differences.shape[0])
    scale = theirs.double().abs().mean(0)
    quantile = t_quantile(1.0 - FAMILY_ERROR_RATE / (2 * mean.numel()), differences.shape[0] - 1)
    tolerance = quantile * standard_error + ROUND_OFF * (1.0 + scale)
    bad = (mean.abs() > tolerance).nonzero().flatten()
    if bad.numel():
        index = int(bad[0])
        raise ConformanceFailure(
            f"{where}: {what}[{index}] differs from the ELBO's by "
            f"{float(mean.reshape(-1)[index]):.4g} (tolerance "
            f"{float(tolerance.reshape(-1)[index]):.3g}, {differences.shape[0]} seed-paired draws)"
        )
