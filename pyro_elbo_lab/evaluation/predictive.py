r"""Held-out log-likelihood of a fitted guide, by importance sampling.

For held-out points :math:`x_n^\star` and draws :math:`z_s \sim q(z)` standing in for the
posterior :math:`p(z \mid x)`, the log pointwise predictive density is

.. math::

    \widehat{\mathrm{lppd}}_n = \log \frac1S \sum_{s=1}^S p(x_n^\star \mid z_s),

reported as its mean over points (nats per point). Valid for models whose guided latents
are global; local latents would need their own inference on the held-out points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from pyro_elbo_lab.engine import sample_observed_log_likelihood
from pyro_elbo_lab.evaluation.estimate import Estimate


def heldout_log_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    train_data: torch.Tensor,
    heldout_data: torch.Tensor,
    *,
    num_particles: int,
    max_plate_nesting: int,
    data_plate: str = "data",
    particle_batch: int = 1000,
) -> Estimate:
    """Mean over held-out points of :math:`\\widehat{\\mathrm{lppd}}_n`; error over points."""
    running = None
    with torch.no_grad():
        remaining = num_particles
        while remaining > 0:
            size = min(remaining, particle_batch)
            log_likelihood = sample_observed_log_likelihood(
                model,
                guide,
                (heldout_data,),
                (train_data,),
                num_particles=size,
                max_plate_nesting=max_plate_nesting,
                data_plate=data_plate,
            ).logsumexp(0)
            running = (
                log_likelihood if running is None else torch.logaddexp(running, log_likelihood)
            )
            remaining -= size
    pointwise = running - math.log(num_particles)
    return Estimate.from_draws(pointwise)
