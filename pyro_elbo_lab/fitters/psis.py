r"""Pareto-smoothed importance weights (Vehtari, Simpson, Gelman, Yao & Gabry 2024).

The largest :math:`M = \lfloor\min(S/5, 3\sqrt S)\rfloor` of S importance weights are
replaced by the expected order statistics of a generalised Pareto distribution fitted to
their exceedances over the next largest weight (Pyro's ``fit_generalized_pareto``,
Zhang & Stephens 2009), :math:`F^{-1}\big((z - \tfrac12)/M\big)`, :math:`z = 1..M`,
truncated at the largest raw weight. The fitted shape :math:`\hat k` says how far the
weights can be trusted: above 0.7 the estimate is unreliable.
"""

from __future__ import annotations

import math

import torch
from pyro.ops.stats import fit_generalized_pareto


def pareto_smoothed_log_weights(log_weights: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Smoothed log weights (same order) and :math:`\\hat k` (inf with too few draws)."""
    count = log_weights.numel()
    tail = int(min(count / 5, 3 * math.sqrt(count)))
    if tail < 5:
        return log_weights, math.inf
    shifted = log_weights.double() - log_weights.max()
    order = torch.argsort(shifted)
    threshold = float(shifted[order[-tail - 1]].exp())
    largest = shifted[order[-tail:]].exp()
    exceedances = largest - threshold
    # ties with the threshold (equal weights, as at the exact posterior, or a few
    # discrete states) are no tail: the fit takes the positive exceedances, and where
    # fewer than 5 are left k̂ cannot be estimated, as with few draws
    exceedances = exceedances[exceedances > 0]
    if exceedances.numel() < 5:
        return log_weights, math.inf
    k, sigma = fit_generalized_pareto(exceedances)
    probabilities = (torch.arange(1, tail + 1, dtype=torch.float64) - 0.5) / tail
    if abs(k) > 1e-8:
        quantiles = threshold + sigma / k * ((1 - probabilities) ** (-k) - 1)
    else:
        quantiles = threshold - sigma * torch.log1p(-probabilities)
    smoothed = shifted.clone()
    smoothed[order[-tail:]] = quantiles.clamp(max=float(largest.max())).log()
    return (smoothed + log_weights.max()).to(log_weights.dtype), float(k)
