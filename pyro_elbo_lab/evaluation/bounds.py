r"""Monte Carlo estimates of lower bounds on the log evidence of a fitted guide.

For :math:`z_k \sim q`, :math:`w_k = p(x, z_k)/q(z_k)`:

.. math::

    \mathrm{ELBO} = \mathbb E_q[\log w] \;\le\;
    \mathcal L_K = \mathbb E\Big[\log \tfrac1K \textstyle\sum_{k=1}^K w_k\Big] \;\le\; \log p(x),

and :math:`\mathcal L_K` increases with K towards :math:`\log p(x)` (Burda et al. 2016,
"Importance Weighted Autoencoders", Theorem 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pyro_elbo_lab.engine import log_mean_exp, sample_log_weights
from pyro_elbo_lab.evaluation.estimate import Estimate

#: particles × data elements that one vectorised evaluation pass holds at once: a
#: particle's log density touches every data element (with a K-component mixture, K
#: times), so a fixed particle batch that suits 50 points needs gigabytes at 10⁵ points
MAX_BATCH_ELEMENTS = 20_000_000


#: the fewest particles an estimate is cut to by :func:`particles_within`
MIN_PARTICLES = 10


def particles_within(requested: int, num_points: int, max_point_evals: int) -> int:
    """``requested`` particles, or fewer where each particle's pass over ``num_points``
    data points would take the estimate past ``max_point_evals`` point evaluations (at
    least :data:`MIN_PARTICLES`, and never more than requested). At 50 points a
    1,000-particle ELBO is 5·10⁴ evaluations; at 10⁵ points it is 10⁸, minutes on a CPU."""
    affordable = max(MIN_PARTICLES, max_point_evals // max(1, num_points))
    return min(requested, affordable)


def particle_batch_for(particle_batch: int, data: torch.Tensor) -> int:
    """The particles per evaluation pass on ``data``: ``particle_batch``, fewer where
    ``particle_batch × data.numel()`` would exceed :data:`MAX_BATCH_ELEMENTS` (at least
    one). Small models keep ``particle_batch``; the estimates do not depend on it beyond
    the order in which their draws are made."""
    return max(1, min(particle_batch, MAX_BATCH_ELEMENTS // max(1, data.numel())))


def draw_log_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    *,
    num_particles: int,
    max_plate_nesting: int,
    particle_batch: int = 1000,
) -> torch.Tensor:
    """``num_particles`` log importance weights, drawn in vectorised batches (no gradients)."""
    chunks = []
    with torch.no_grad():
        remaining = num_particles
        while remaining > 0:
            size = min(remaining, particle_batch)
            weights = sample_log_weights(
                model, guide, args, {}, num_particles=size, max_plate_nesting=max_plate_nesting
            )
            chunks.append(weights.log_weights.detach())
            remaining -= size
    return torch.cat(chunks)


def estimate_elbo(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    *,
    num_particles: int,
    max_plate_nesting: int,
    particle_batch: int = 1000,
) -> Estimate:
    """The ELBO, :math:`\\frac1S\\sum_s \\log w_s`, with its Monte Carlo standard error."""
    log_weights = draw_log_weights(
        model,
        guide,
        args,
        num_particles=num_particles,
        max_plate_nesting=max_plate_nesting,
        particle_batch=particle_batch,
    )
    return Estimate.from_draws(log_weights)


def estimate_iwae(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    *,
    num_particles: int,
    num_repeats: int,
    max_plate_nesting: int,
    particle_batch: int = 1000,
) -> Estimate:
    """:math:`\\mathcal L_K` averaged over ``num_repeats`` independent K-particle estimates."""
    log_weights = draw_log_weights(
        model,
        guide,
        args,
        num_particles=num_particles * num_repeats,
        max_plate_nesting=max_plate_nesting,
        particle_batch=particle_batch,
    )
    return iwae_from_log_weights(log_weights, num_particles, num_repeats)


def iwae_from_log_weights(
    log_weights: torch.Tensor, num_particles: int, num_repeats: int
) -> Estimate:
    """:math:`\\mathcal L_K` (K = ``num_particles``) averaged over ``num_repeats`` disjoint
    groups of the first K × ``num_repeats`` of ``log_weights``."""
    groups = log_weights[: num_particles * num_repeats].reshape(num_repeats, num_particles)
    return Estimate.from_draws(log_mean_exp(groups, -1))
