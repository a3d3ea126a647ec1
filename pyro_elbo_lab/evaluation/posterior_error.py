r"""How far a fitted guide's marginals are from the true (or reference) posterior.

For each latent coordinate i with reference mean :math:`m_i` and sd :math:`s_i`, and
guide draws with mean :math:`\hat m_i` and sd :math:`\hat s_i`:
standardised mean error :math:`(\hat m_i - m_i)/s_i` and sd error
:math:`\hat s_i / s_i - 1`, reported per site as the largest absolute value and the
root mean square over its coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pyro_elbo_lab.objectives.particles import sample_log_weights


def guide_draws(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    sites: list[str],
    num_samples: int,
    max_plate_nesting: int,
) -> dict[str, torch.Tensor]:
    """``num_samples`` draws of ``sites`` (latent or deterministic) under the guide, ``[S, -1]``.

    One vectorised pass of the engine: the guide's draws replayed through the model, so
    deterministic sites (e.g. eight schools' ``theta``) come out too.
    """
    with torch.no_grad():
        trace = sample_log_weights(
            model, guide, args, {}, num_particles=num_samples, max_plate_nesting=max_plate_nesting
        ).model_trace
    return {name: _per_draw(trace.nodes[name]["value"], num_samples) for name in sites}


def _per_draw(value: torch.Tensor, num_samples: int) -> torch.Tensor:
    # Point-estimate guides hand back their parameters themselves: detach.
    return value.detach().expand((num_samples, *value.shape[1:])).reshape(num_samples, -1)


def standardized_errors(
    draws: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """Per site: max and RMS of the standardised mean and sd errors (see module doc)."""
    errors = {}
    for name, reference_draws in reference.items():
        reference_draws = _per_draw(reference_draws, reference_draws.shape[0]).double()
        guide_values = draws[name].double().to(reference_draws.device)
        ref_mean, ref_sd = reference_draws.mean(0), reference_draws.std(0)
        mean_error = (guide_values.mean(0) - ref_mean) / ref_sd
        sd_error = guide_values.std(0) / ref_sd - 1
        errors[name] = {
            "mean_error_max": float(mean_error.abs().max()),
            "mean_error_rms": float(mean_error.pow(2).mean().sqrt()),
            "sd_error_max": float(sd_error.abs().max()),
            "sd_error_rms": float(sd_error.pow(2).mean().sqrt()),
        }
    return errors
