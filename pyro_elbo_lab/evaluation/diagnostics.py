r"""Diagnostics of the importance weights: CUBO (an upper estimate) and PSIS k̂.

CUBO (Dieng et al. 2017, "Variational Inference via χ Upper Bound Minimization"):
:math:`\mathrm{CUBO}_n = \frac1n \log \mathbb E_q[w^n] \ge \log p(x)` for n ≥ 1. Its Monte
Carlo estimate :math:`\frac1n \log \frac1S \sum_s w_s^n` is biased *low* (Jensen on the
log), so with few samples it can fall below log p(x): the sample size is recorded and
small ones are flagged.

PSIS k̂ (Vehtari et al. 2024, "Pareto Smoothed Importance Sampling"): the shape of a
generalised Pareto fitted to the largest weights
(:func:`~pyro_elbo_lab.fitters.psis.pareto_smoothed_log_weights`, on the evaluation's
ELBO draws); k̂ > 0.7 says importance sampling with q cannot be trusted. It does not
detect a mode that q misses entirely: weights never sampled there cannot reveal it.
"""

from __future__ import annotations

import torch

from pyro_elbo_lab.engine import log_mean_exp

#: Below this many samples the CUBO estimate is flagged as likely biased low.
CUBO_MIN_SAMPLES = 10_000


def cubo_from_log_weights(log_weights: torch.Tensor, order: float = 2.0) -> float:
    """:math:`\\frac1n \\log \\frac1S \\sum_s w_s^n`, in log space (weights never exponentiated)."""
    return float(log_mean_exp(order * log_weights.double().flatten(), 0)) / order
