r"""Diagnostics of the importance weights: CUBO (an upper estimate) and PSIS k̂.

CUBO (Dieng et al. 2017, "Variational Inference via χ Upper Bound Minimization"):
:math:`\mathrm{CUBO}_n = \frac1n \log \mathbb E_q[w^n] \ge \log p(x)` for n ≥ 1. Its Monte
Carlo estimate :math:`\frac1n \log \frac1S \sum_s w_s^n` is biased *low* (Jensen on the
log), so with few samples it can fall below log p(x): the sample size is recorded and
small ones are flagged.

PSIS k̂ (Vehtari et al. 2015, "Pareto Smoothed Importance Sampling"): the shape of a
generalised Pareto fitted to the largest weights; k̂ > 0.7 says importance sampling
with q cannot be trusted. It does not detect a mode that q misses entirely: weights
never sampled there cannot reveal it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from pyro.infer.importance import psis_diagnostic

from pyro_elbo_lab.engine import log_mean_exp

#: Below this many samples the CUBO estimate is flagged as likely biased low.
CUBO_MIN_SAMPLES = 10_000


def cubo_from_log_weights(log_weights: torch.Tensor, order: float = 2.0) -> float:
    """:math:`\\frac1n \\log \\frac1S \\sum_s w_s^n`, in log space (weights never exponentiated)."""
    return float(log_mean_exp(order * log_weights.double().flatten(), 0)) / order


def psis_khat(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    *,
    num_particles: int,
    max_plate_nesting: int,
    particle_batch: int = 1000,
) -> float:
    """Pyro's PSIS diagnostic (``pyro.infer.importance.psis_diagnostic``) for ``guide``."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not enough tail samples": k̂ = inf says it
        return float(
            psis_diagnostic(
                model,
                guide,
                *args,
                num_particles=num_particles,
                # Pyro draws in equal batches: the largest divisor within the batch
                max_simultaneous_particles=max(
                    size
                    for size in range(1, min(num_particles, particle_batch) + 1)
                    if num_particles % size == 0
                ),
                max_plate_nesting=max_plate_nesting,
            )
        )
