"""What the lab's fit loop drives: a method that fits a guide one iteration at a time."""

from __future__ import annotations

import abc
from typing import Any, ClassVar


class Fitter(abc.ABC):
    """Fits a guide to a model one :meth:`step` at a time, counting what it spends.

    The lab's loop owns budgets, checkpoints and stopping; a fitter only iterates and
    says what one iteration cost: :attr:`model_evals` (log densities at one point each,
    K particles = K) and :attr:`gradient_evals` (those with a gradient), cumulative, and
    :attr:`converged` (a message) once its own stopping rule fires. After every step the
    guide holds the fitter's current approximation, so any evaluation can measure it.
    """

    #: whether :meth:`step` returns a loss worth recording (else NaN)
    reports_loss: ClassVar[bool] = True
    converged: str | None = None
    #: how many leading steps pay one-off set-up (guide prototype, tracing, compiling)
    setup_steps: int = 1
    #: whether the fitter's path is deterministic, so that its own stopping rule (a
    #: tolerance) certifies arrival; else the iterates' stationarity does
    deterministic: ClassVar[bool] = False
    #: why no certificate can say the fit arrived, for a fitter that optimises no
    #: objective to a fixed point (Pathfinder keeps the best of its path's Gaussians):
    #: the record's certificate is then "unknown" with this reason; None otherwise
    uncertifiable: ClassVar[str | None] = None

    @abc.abstractmethod
    def step(self) -> float:
        """One iteration; its loss (NaN where the method has none)."""

    @property
    @abc.abstractmethod
    def model_evals(self) -> int:
        """Log-density evaluations so far (one per point)."""

    @property
    def gradient_evals(self) -> int:
        """Log-density gradient evaluations so far (one per point)."""
        return self.model_evals

    def details(self) -> dict[str, Any]:
        """What the run record says about this fitter's own solve (none by default)."""
        return {}
