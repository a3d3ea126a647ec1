r"""Stopping on convergence: the relative change of a running mean of the loss.

In the spirit of Stan ADVI's ``tol_rel_obj`` (Kucukelbir et al. 2017, §3.2): every
``check_every`` steps take the mean loss :math:`\bar L_j` of those steps and its
relative change :math:`r_j = |\bar L_j - \bar L_{j-1}| / |\bar L_j|`; stop when the
mean or the median of the last ``history`` changes falls below ``tol_rel_obj``. Stan
checks from its second evaluation; waiting for ``history`` changes keeps a noisy
start from stopping the run. The relative change is undefined for a loss near zero,
as in Stan: choose a budget then, or an absolute scale in the model.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

from pyro_elbo_lab.errors import require, require_positive_float, require_positive_int


@dataclass
class ConvergenceSettings:
    """The ``convergence`` node of the lab's config; ``tol_rel_obj: null`` turns it off."""

    tol_rel_obj: float | None = None
    check_every: int = 100
    history: int = 5
    #: a fit certified stationary ends at its iterates' average over the certificate's window
    #: (Polyak–Ruppert), which sits at the optimum where the last iterate only circles it
    average_iterates: bool = False

    def __post_init__(self) -> None:
        if self.tol_rel_obj is not None:
            require_positive_float("convergence.tol_rel_obj", self.tol_rel_obj)
        require_positive_int("convergence.check_every", self.check_every)
        require_positive_int("convergence.history", self.history, minimum=1)
        require(
            isinstance(self.average_iterates, bool),
            f"convergence.average_iterates must be true or false, got {self.average_iterates!r}",
        )


class RelativeChangeRule:
    """Feeds on the losses of a fit; :meth:`update` returns the reason once converged."""

    def __init__(self, settings: ConvergenceSettings) -> None:
        self.settings = settings
        self.window: list[float] = []
        self.previous_mean: float | None = None
        self.changes: deque[float] = deque(maxlen=settings.history)

    def update(self, loss: float) -> str | None:
        """Take one step's loss; every ``check_every`` steps check the rule."""
        if math.isfinite(loss):
            self.window.append(loss)
        if len(self.window) < self.settings.check_every:
            return None
        mean = statistics.fmean(self.window)
        self.window = []
        if self.previous_mean is not None:
            self.changes.append(abs(mean - self.previous_mean) / max(abs(mean), 1e-12))
        self.previous_mean = mean
        if len(self.changes) < self.settings.history:
            return None
        tolerance = self.settings.tol_rel_obj
        mean_change = statistics.fmean(self.changes)
        median_change = statistics.median(self.changes)
        if min(mean_change, median_change) >= tolerance:
            return None
        return (
            f"relative change of the mean loss over the last {len(self.changes)} checks "
            f"(every {self.settings.check_every} steps): mean {mean_change:.2g}, median "
            f"{median_change:.2g} < tol_rel_obj {tolerance:g}"
        )
