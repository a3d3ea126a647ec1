"""What a run may spend: a budget of steps, model evaluations or seconds.

Comparing objectives at an equal number of *steps* favours the expensive ones: an
objective with K particles evaluates the model K times per step. An equal budget of
``model_evals`` (gradient evaluations of log p(x, z), see
:mod:`pyro_elbo_lab.engine.counting`) or of fitting ``seconds`` compares them at equal
cost (Agrawal, Sheldon & Domke 2020 compare black-box VI methods the same way).
``steps`` always caps a run, whatever its budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyro_elbo_lab.errors import ConfigError, require_positive_float, require_positive_int

BUDGET_KINDS = ("steps", "model_evals", "seconds")


@dataclass
class BudgetSettings:
    """The ``budget`` node of the lab's config: which limit stops a run, and its size.

    ``kind=steps`` stops after the top-level ``steps``; ``kind=model_evals`` after
    ``model_evals`` model evaluations; ``kind=seconds`` after ``seconds`` of fitting
    (checkpoint evaluations excluded). ``steps`` caps the other two.
    """

    kind: str = "steps"
    model_evals: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise ConfigError(
                f"budget.kind must be one of {', '.join(BUDGET_KINDS)}, got {self.kind!r}"
            )
        if self.kind == "model_evals":
            require_positive_int(
                "budget.model_evals (with budget.kind=model_evals)", self.model_evals
            )
        if self.kind == "seconds":
            require_positive_float("budget.seconds (with budget.kind=seconds)", self.seconds)


@dataclass
class Spending:
    """What a fit has spent so far, in every unit a budget can be counted in."""

    steps: int = 0
    model_evals: int = 0
    seconds: float = 0.0

    def fraction_of(self, settings: BudgetSettings, max_steps: int) -> float:
        """How much of the budget is spent (1.0: exhausted); the step cap counts too."""
        spent = self.steps / max_steps
        if settings.kind == "model_evals":
            spent = max(spent, self.model_evals / settings.model_evals)
        elif settings.kind == "seconds":
            spent = max(spent, self.seconds / settings.seconds)
        return spent

    def exhausted_limit(self, settings: BudgetSettings, max_steps: int) -> str | None:
        """The name of the limit this spending has reached (``steps`` for the cap), or None."""
        if settings.kind == "model_evals" and self.model_evals >= settings.model_evals:
            return "model_evals"
        if settings.kind == "seconds" and self.seconds >= settings.seconds:
            return "seconds"
        return "steps" if self.steps >= max_steps else None


def checkpoint_fractions(count: int, first: float = 0.01) -> list[float]:
    """``count`` log-spaced fractions of a budget from ``first`` to 1 (the last is the end)."""
    if count <= 1:
        return [1.0][:count]
    ratio = math.log(first) / (count - 1)
    return [math.exp(ratio * (count - 1 - i)) for i in range(count)]
