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
    ).reshape(num_repeats, num_particles)
    return Estimate.from_draws(log_mean_exp(log_weights, -1))
