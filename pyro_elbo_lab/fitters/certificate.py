r"""Did a fit reach the optimum of its own objective? A certificate in every record.

A stochastic fit that has arrived fluctuates around a fixed point: its iterates are
stationary. Following Dhaka et al. (2020) and Welandawe et al. (2024), the last half of a
run's iterates is split in two and compared as two chains with the potential scale
reduction factor per coordinate,

.. math::

    \hat R = \sqrt{\frac{\tfrac{n-1}{n} W + B/n}{W}},\quad
    W = \tfrac12(s_1^2 + s_2^2),\quad B = n\sum_{h=1,2}(\bar x_h - \bar x)^2,

on the variational parameters (up to :data:`MAX_COORDINATES` of them, a fixed random
subset for networks) and on the loss. A run whose iterates still drift shows a
between-half difference large against their within-half spread: :math:`\hat R` above
:data:`RHAT_THRESHOLD` (1.1, as those papers use). A coordinate whose half-means differ
by less than :data:`DRIFT_TOLERANCE` (relative to max(1, |mean|)) counts as arrived
whatever its :math:`\hat R`: where the gradient noise vanishes at the optimum, the
within-half spread does too, and round-off creep would read as drift. Iterates are
thinned to at most :data:`MAX_SNAPSHOTS`, so the check costs nothing against a step. Too short a run
(fewer than :data:`MIN_SNAPSHOTS` snapshots per half) gets "unknown". A deterministic
fitter certifies itself by its own stopping rule (a gradient-norm tolerance).

References: [1] A. K. Dhaka, A. Catalina, M. R. Andersen, M. Magnusson, J. H. Huggins,
A. Vehtari, "Robust, Accurate Stochastic Optimization for Variational Inference",
NeurIPS 2020. [2] M. Welandawe, M. R. Andersen, A. Vehtari, J. H. Huggins, "A Framework
for Improving the Reliability of Black-box Variational Inference", JMLR 25, 2024.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

RHAT_THRESHOLD = 1.1
#: a coordinate whose half-means differ by less than this (relative to max(1, |mean|))
#: has arrived whatever its R-hat: at an optimum where the gradient noise vanishes (STL,
#: DReG at the exact posterior) the iterates still creep at round-off scale, which the
#: scale-free R-hat reads as drift
DRIFT_TOLERANCE = 1e-3
MAX_COORDINATES = 1000
MAX_SNAPSHOTS = 400
MIN_SNAPSHOTS = 10
#: parameter vectors up to this size are kept whole, so their window average can be taken
MAX_AVERAGED = 10_000


@dataclass(frozen=True)
class Certificate:
    """``converged``: True, False, or None (unknown); the statistic and how it was read."""

    converged: bool | None
    statistic: float
    rule: str
    message: str

    def summary(self) -> dict[str, object]:
        return {
            "converged": self.converged,
            "statistic": self.statistic,
            "rule": self.rule,
            "message": self.message,
        }


def split_rhat(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """:math:`\\hat R` per column of two equally long chains ``[n, P]`` (float64)."""
    n = first.shape[0]
    means = torch.stack([first.mean(0), second.mean(0)])
    within = (first.var(0) + second.var(0)) / 2
    between = n * means.var(0)
    pooled = (n - 1) / n * within + between / n
    return torch.where(
        within > 0, (pooled / within).sqrt(), torch.where(between > 0, math.inf, 1.0)
    )


def _rhat_beyond_drift(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """:func:`split_rhat`, with 1 for columns whose half-means differ by less than
    :data:`DRIFT_TOLERANCE` relative to max(1, |mean|): stationary for every purpose."""
    drift = (first.mean(0) - second.mean(0)).abs()
    scale = torch.cat([first, second]).mean(0).abs().clamp(min=1.0)
    return torch.where(drift < DRIFT_TOLERANCE * scale, 1.0, split_rhat(first, second))


class IterateCertificate:
    """Watches a stochastic fit's parameters and losses; :meth:`verdict` at the end."""

    def __init__(self) -> None:
        self.snapshots: list[torch.Tensor] = []
        self.losses: list[float] = []
        self.every = 1
        self.seen = 0
        #: whether the whole parameter vector is kept (else a fixed random subset)
        self.whole = False
        self._columns: torch.Tensor | None = None

    def observe(self, parameters: list[torch.Tensor], loss: float) -> None:
        """One step's parameters (any shapes) and loss; kept every ``self.every`` steps."""
        self.seen += 1
        if (self.seen - 1) % self.every:
            return
        flat = torch.cat([p.detach().reshape(-1) for p in parameters]).double().cpu()
        if self._columns is None:
            generator = torch.Generator().manual_seed(0)  # apart from the fit's streams
            count = flat.numel()
            self.whole = count <= MAX_AVERAGED
            self._columns = (
                torch.arange(count)
                if self.whole
                else torch.randperm(count, generator=generator)[:MAX_COORDINATES]
            )
        self.snapshots.append(flat[self._columns])
        self.losses.append(loss)
        if len(self.snapshots) >= MAX_SNAPSHOTS:  # thin: keep every other, observe half as often
            self.snapshots, self.losses = self.snapshots[::2], self.losses[::2]
            self.every *= 2

    def window_average(self) -> torch.Tensor | None:
        """The Polyak–Ruppert average of the whole parameter vector over the last half of
        the kept iterates (None for vectors above :data:`MAX_AVERAGED`, kept in part)."""
        if not self.snapshots or not self.whole:
            return None
        return torch.stack(self.snapshots[len(self.snapshots) // 2 :]).mean(0)

    def verdict(self) -> Certificate:
        """Split-:math:`\\hat R` over the last half of the kept iterates."""
        window = len(self.snapshots) // 2
        half = window // 2
        rule = f"split R-hat of the last half of the iterates < {RHAT_THRESHOLD}"
        if half < MIN_SNAPSHOTS:
            return Certificate(
                None, math.nan, rule, f"{self.seen} steps: too few to judge stationarity"
            )
        iterates = torch.stack(self.snapshots[-2 * half :])
        if iterates.shape[1] > MAX_COORDINATES:  # a large kept vector: judge a fixed subset
            generator = torch.Generator().manual_seed(0)
            iterates = iterates[:, torch.randperm(iterates.shape[1], generator=generator)]
            iterates = iterates[:, :MAX_COORDINATES]
        losses = torch.tensor(self.losses[-2 * half :], dtype=torch.float64)[:, None]
        finite = losses.isfinite().all()
        parameter_rhat = float(_rhat_beyond_drift(iterates[:half], iterates[half:]).max())
        loss_rhat = float(_rhat_beyond_drift(losses[:half], losses[half:]).max()) if finite else 1.0
        statistic = max(parameter_rhat, loss_rhat)
        converged = statistic < RHAT_THRESHOLD
        message = (
            f"max R-hat {parameter_rhat:.3g} over {iterates.shape[1]} parameters, "
            f"{loss_rhat:.3g} for the loss, over the last {2 * half * self.every} steps"
        )
        return Certificate(converged, statistic, rule, message)


def deterministic_certificate(stopped_by_rule: str | None, arrived: bool = True) -> Certificate:
    """A deterministic fitter's own rule (a tolerance on its gradient or objective);
    ``arrived`` False where it stopped without meeting it (a collapsed trust region)."""
    if stopped_by_rule and arrived:
        return Certificate(True, 0.0, "the fitter's own tolerance", stopped_by_rule)
    message = stopped_by_rule or "stopped before it"
    return Certificate(False, math.nan, "the fitter's own tolerance", message)
