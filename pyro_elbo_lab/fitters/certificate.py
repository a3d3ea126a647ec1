r"""Did a fit reach the optimum of its own objective? A certificate in every record.

A stochastic fit that has arrived fluctuates around a fixed point: its iterates are
stationary. Following Dhaka et al. (2020) and Welandawe et al. (2024), a window at the end
of the run (the last quarter of its kept iterates: under a decaying step size the quietest
stretch, the one the final iterate belongs to) is split in two and the halves' averages
are compared.

For a guide with closed-form marginals (every Gaussian family, and the whitened image of
any guide that has them: :func:`~pyro_elbo_lab.guides.marginals.guide_marginals`), the
comparison is made in the posterior's own units. The *marginal drift* is

.. math::

    d = \max_i \frac{\max\big(|\bar\mu_i^{(2)} - \bar\mu_i^{(1)}| - 2\epsilon_{\mu_i},\
    |\bar\sigma_i^{(2)} - \bar\sigma_i^{(1)}| - 2\epsilon_{\sigma_i},\ 0\big)}
    {\tfrac12(\bar\sigma_i^{(1)} + \bar\sigma_i^{(2)})},

the largest move of a marginal mean or sd between the half-averages beyond twice its
Monte Carlo standard error (:math:`\epsilon_i`, from batch means: the iterates "no longer
move beyond their Monte Carlo error"), in that marginal's sd; the *spread* :math:`s` is
the same distance from the final iterate to the window's average. The fit the record
keeps is the final iterate, at most about :math:`s` from the window's centre, which is
at most about :math:`d` from where the iterates are heading, so a fit is certified when
:math:`\max(d, s) <` :data:`ARRIVAL_TOLERANCE_SD` (the 0.05 sd of mean W1 the studies
judge arrival by) and its loss has :math:`\hat R <` :data:`RHAT_THRESHOLD`. With
``convergence.average_iterates`` the window's average is kept instead, and :math:`d`
alone decides. Why not :math:`\hat R` of the raw parameters (below): Adam's iterates are
strongly autocorrelated, so their split :math:`\hat R` exceeded 1.1 on every default-
start ADVI run of the converged-fits study that ended within 0.05 sd of its optimum (28
of 28), and it weighs a Cholesky entry that barely moves the distribution like a mean.
Adam's step is about the learning rate whatever the gradient's size, so a consistent
gradient moves the marginals by hundreds of steps × the learning rate across a window; a
small :math:`d` means the gradient's sign has become noise. The resolution is the
iterates' own noise: at the end of the default schedule (Adam 0.1 → 0.001 over 10,000
steps) :math:`s` is 0.02 to 0.07 sd on the posteriordb regressions, the size of the
tolerance, so runs ending between 0.04 and 0.06 sd are called either way. Measured on 32
such runs (kidiq, eight schools, earnings, diamonds, sblrc, arma11; mvn and mean-field;
3 seeds): 19 of the 22 within 0.05 sd of the optimum certified, 4 of the 10 beyond it
certified, those 4 ending 0.051 to 0.066 sd off.

Other guides (flows, amortised networks) fall back to the potential scale reduction
factor of the raw parameters between the halves, per coordinate,

.. math::

    \hat R = \sqrt{\frac{\tfrac{n-1}{n} W + B/n}{W}},\quad
    W = \tfrac12(s_1^2 + s_2^2),\quad B = n\sum_{h=1,2}(\bar x_h - \bar x)^2,

on the variational parameters (up to :data:`MAX_COORDINATES` of them, a fixed random
subset for networks) and on the loss: :math:`\hat R` above :data:`RHAT_THRESHOLD` (1.1,
as those papers use) is drift. A coordinate whose half-means differ by less than
:data:`DRIFT_TOLERANCE` (relative to max(1, |mean|)) counts as arrived whatever its
:math:`\hat R`: where the gradient noise vanishes at the optimum, the within-half spread
does too, and round-off creep would read as drift. Iterates are thinned to at most
:data:`MAX_SNAPSHOTS`, so the check costs nothing against a step. Too short a run (fewer
than :data:`MIN_SNAPSHOTS` snapshots per half) gets "unknown". A deterministic fitter
certifies itself by its own stopping rule (a gradient-norm tolerance).

References: [1] A. K. Dhaka, A. Catalina, M. R. Andersen, M. Magnusson, J. H. Huggins,
A. Vehtari, "Robust, Accurate Stochastic Optimization for Variational Inference",
NeurIPS 2020. [2] M. Welandawe, M. R. Andersen, A. Vehtari, J. H. Huggins, "A Framework
for Improving the Reliability of Black-box Variational Inference", JMLR 25, 2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

RHAT_THRESHOLD = 1.1
#: a coordinate whose half-means differ by less than this (relative to max(1, |mean|))
#: has arrived whatever its R-hat: at an optimum where the gradient noise vanishes (STL,
#: DReG at the exact posterior) the iterates still creep at round-off scale, which the
#: scale-free R-hat reads as drift
DRIFT_TOLERANCE = 1e-3
#: a certified fit's largest marginal drift and spread, in the marginal's sd: the
#: studies' tolerance on mean W1 to the optimum
ARRIVAL_TOLERANCE_SD = 0.05
#: the window judged: this fraction of the kept iterates, at their end
WINDOW_FRACTION = 4
#: batches per half-window for the Monte Carlo error of a half's average
BATCHES = 5
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


def marginal_distance(before: torch.Tensor, after: torch.Tensor) -> float:
    """The largest difference of a marginal mean or sd between two ``[2, D]`` (means, sds),
    in units of that marginal's mean sd (the spread :math:`s`)."""
    scale = (before[1] + after[1]) / 2
    move = (after - before).abs().amax(0)
    return float(torch.where(move > 0, move / scale, 0.0).max())


def marginal_drift(first: torch.Tensor, second: torch.Tensor) -> float:
    """The drift :math:`d` between two halves' ``[n, 2, D]`` snapshots of (means, sds): the
    move of each half-average beyond twice its Monte Carlo standard error (from
    :data:`BATCHES` batch means per half, which absorb the iterates' autocorrelation up to
    a batch's length), in that marginal's sd, largest over the marginals."""
    before, after = first.mean(0), second.mean(0)
    error = (_batch_mean_error(first) ** 2 + _batch_mean_error(second) ** 2).sqrt()
    move = ((after - before).abs() - 2 * error).clamp(min=0).amax(0)
    scale = (before[1] + after[1]) / 2
    return float(torch.where(move > 0, move / scale, 0.0).max())


def _batch_mean_error(chain: torch.Tensor) -> torch.Tensor:
    """The standard error of ``chain``'s mean over its first axis, by batch means."""
    length = chain.shape[0] // BATCHES
    batches = chain[-length * BATCHES :].reshape(BATCHES, length, *chain.shape[1:]).mean(1)
    return batches.std(0) / math.sqrt(BATCHES)


class IterateCertificate:
    r"""Watches a stochastic fit's parameters and losses; :meth:`verdict` at the end.

    ``marginals`` (e.g. ``lambda: guide_marginals(guide)``) gives the guide's ``[2, D]``
    marginal means and sds, or None: where it gives them, the verdict is the marginal
    drift's; elsewhere the raw parameters' :math:`\hat R`."""

    def __init__(self, marginals: Callable[[], torch.Tensor | None] | None = None) -> None:
        self.marginals = marginals
        self.marginal_snapshots: list[torch.Tensor] = []
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
        marginals = self.marginals() if self.marginals is not None else None
        if marginals is None:
            self.marginals = None  # a guide without closed-form marginals: R-hat only
            self.marginal_snapshots.clear()
        else:
            self.marginal_snapshots.append(marginals)
        if len(self.snapshots) >= MAX_SNAPSHOTS:  # thin: keep every other, observe half as often
            self.snapshots, self.losses = self.snapshots[::2], self.losses[::2]
            self.marginal_snapshots = self.marginal_snapshots[::2]
            self.every *= 2

    def window_average(self) -> torch.Tensor | None:
        """The Polyak–Ruppert average of the whole parameter vector over the judged window
        (None for vectors above :data:`MAX_AVERAGED`, kept in part)."""
        half = len(self.snapshots) // WINDOW_FRACTION // 2
        if not half or not self.whole:
            return None
        return torch.stack(self.snapshots[-2 * half :]).mean(0)

    def verdict(self, averaged: bool = False) -> Certificate:
        """The marginal drift and spread (or the parameters' split-:math:`\\hat R`) and the
        loss's :math:`\\hat R` over the window; ``averaged``: the window's average is what
        the fit keeps, so the final iterate's spread does not count."""
        half = len(self.snapshots) // WINDOW_FRACTION // 2
        marginal = self.marginals is not None and len(self.marginal_snapshots) == len(
            self.snapshots
        )
        measured = "drift" if averaged else "drift and spread"
        rule = (
            f"marginal {measured} over the last quarter of the iterates < "
            f"{ARRIVAL_TOLERANCE_SD} sd and the loss's split R-hat < {RHAT_THRESHOLD}"
            if marginal
            else f"split R-hat of the last quarter of the iterates < {RHAT_THRESHOLD}"
        )
        if half < MIN_SNAPSHOTS:
            return Certificate(
                None, math.nan, rule, f"{self.seen} steps: too few to judge stationarity"
            )
        losses = torch.tensor(self.losses[-2 * half :], dtype=torch.float64)[:, None]
        finite = losses.isfinite().all()
        loss_rhat = float(_rhat_beyond_drift(losses[:half], losses[half:]).max()) if finite else 1.0
        steps = 2 * half * self.every
        if marginal:
            kept = torch.stack(self.marginal_snapshots[-2 * half :])
            drift = marginal_drift(kept[:half], kept[half:])
            spread = 0.0 if averaged else marginal_distance(kept.mean(0), kept[-1])
            statistic = max(drift, spread)
            converged = statistic < ARRIVAL_TOLERANCE_SD and loss_rhat < RHAT_THRESHOLD
            message = (
                f"marginal drift {drift:.3g} sd"
                + ("" if averaged else f", final iterate {spread:.3g} sd from the average")
                + f" over {kept.shape[-1]} latents, loss R-hat {loss_rhat:.3g}, over the "
                f"last {steps} steps"
            )
            return Certificate(converged, statistic, rule, message)
        iterates = torch.stack(self.snapshots[-2 * half :])
        if iterates.shape[1] > MAX_COORDINATES:  # a large kept vector: judge a fixed subset
            generator = torch.Generator().manual_seed(0)
            iterates = iterates[:, torch.randperm(iterates.shape[1], generator=generator)]
            iterates = iterates[:, :MAX_COORDINATES]
        parameter_rhat = float(_rhat_beyond_drift(iterates[:half], iterates[half:]).max())
        statistic = max(parameter_rhat, loss_rhat)
        converged = statistic < RHAT_THRESHOLD
        message = (
            f"max R-hat {parameter_rhat:.3g} over {iterates.shape[1]} parameters, "
            f"{loss_rhat:.3g} for the loss, over the last {steps} steps"
        )
        return Certificate(converged, statistic, rule, message)


def deterministic_certificate(stopped_by_rule: str | None, arrived: bool = True) -> Certificate:
    """A deterministic fitter's own rule (a tolerance on its gradient or objective);
    ``arrived`` False where it stopped without meeting it (a collapsed trust region)."""
    if stopped_by_rule and arrived:
        return Certificate(True, 0.0, "the fitter's own tolerance", stopped_by_rule)
    message = stopped_by_rule or "stopped before it"
    return Certificate(False, math.nan, "the fitter's own tolerance", message)
