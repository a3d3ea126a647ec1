r"""How far a fitted guide's marginals are from the true (or reference) posterior.

For each latent coordinate i with reference mean :math:`m_i` and sd :math:`s_i`, and
guide draws with mean :math:`\hat m_i` and sd :math:`\hat s_i`:
standardised mean error :math:`(\hat m_i - m_i)/s_i` and sd error
:math:`\hat s_i / s_i - 1`, reported per site as the largest absolute value and the
root mean square over its coordinates. Where guide and posterior are both Gaussian,
:func:`gaussian_kl` gives KL(q ‖ p) per site exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import constraints, kl_divergence

from pyro_elbo_lab.engine import sample_log_weights


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


def importance_resampled_draws(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    sites: list[str],
    num_samples: int,
    *,
    num_particles: int,
    max_plate_nesting: int,
    stratify: bool = False,
    particle_batch: int = 100_000,
) -> dict[str, torch.Tensor]:
    r"""``num_samples`` draws of ``sites`` from the importance-resampled guide, ``[S, -1]``.

    Each draw is sampling-importance-resampling with K particles: draw
    :math:`z_{1:K}` from the guide (one per stratum with ``stratify``), keep
    :math:`z_k` with probability :math:`\propto \pi_k w_k`. This distribution
    :math:`q_{IW}` is the posterior that importance-weighted objectives fit: their bound
    is the ELBO of its augmentation, so
    :math:`\mathrm{KL}(q_{IW} \,\|\, p(z \mid x)) \le \log p(x) - \mathcal L_K`
    (also for the stratified estimator, whose selection by :math:`\pi_k w_k` couples to
    the same joint), while the guide q itself can keep directions the bound barely
    weighs (Rainforth et al. 2018), or none at all: SIWAE is tight with a mixture
    component that proposes nothing. Particles go through vectorised passes of at most
    ``particle_batch`` (whole rows of K).

    References: [1] C. Cremer, Q. Morris, D. Duvenaud, "Reinterpreting
    Importance-Weighted Autoencoders", ICLR workshop 2017. [2] J. Domke, D. Sheldon,
    "Importance Weighting and Variational Inference", NeurIPS 2018. [3] J. Domke,
    D. Sheldon, "Divide and Couple: Using Monte Carlo Variational Objectives for
    Posterior Approximation", NeurIPS 2019.
    """
    rows_per_pass = max(1, particle_batch // num_particles)
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in sites}
    for first in range(0, num_samples, rows_per_pass):
        rows = min(rows_per_pass, num_samples - first)
        for name, values in _resample(
            model, guide, args, sites, rows, num_particles, max_plate_nesting, stratify
        ).items():
            chunks[name].append(values)
    return {name: torch.cat(values) for name, values in chunks.items()}


@torch.no_grad()
def _resample(model, guide, args, sites, rows, num_particles, max_plate_nesting, stratify):
    r"""One vectorised pass: ``rows`` × K particles, one kept per row by :math:`\pi_k w_k`."""
    total = rows * num_particles
    weights = sample_log_weights(
        model, guide, args, {}, num_particles=total, max_plate_nesting=max_plate_nesting,
        stratify=stratify, strata_group=num_particles,
    )  # fmt: skip
    log_weights = weights.log_weights
    if weights.log_particle_weights is not None:
        log_weights = log_weights + weights.log_particle_weights
    kept = dist.Categorical(logits=log_weights.reshape(rows, num_particles)).sample()
    index = torch.arange(rows, device=kept.device) * num_particles + kept
    return {
        name: _per_draw(weights.model_trace.nodes[name]["value"], total)[index] for name in sites
    }


def reference_draws(model: Any, num_samples: int) -> dict[str, torch.Tensor] | None:
    """The model's posterior reference draws: its MCMC draws, else ``num_samples`` from its
    exact posterior, else None."""
    reference = model.reference_posterior_draws()
    if reference is not None:
        return reference
    exact = model.exact_posterior()
    if exact is None:
        return None
    with torch.no_grad():
        return {name: d.sample((num_samples,)) for name, d in exact.items()}


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


def gaussian_kl(
    guide: Callable[..., Any], args: tuple, exact: dict[str, dist.Distribution]
) -> dict[str, float]:
    """Exact KL(q(z_s) ‖ p(z_s | x)) for sites where both are Gaussian on the real line.

    The guide's distribution of a site is read from one trace: the site's own
    distribution, or for autoguides that emit a Delta, the Normal of the auxiliary
    ``{site}_unconstrained`` latent (the same variable when the support is real).
    """
    with torch.no_grad():
        trace = poutine.trace(guide).get_trace(*args)
    divergences = {}
    for name, posterior in exact.items():
        if _unwrap(posterior.support) is not constraints.real:
            continue
        site = trace.nodes.get(name)
        if site is not None and isinstance(site["fn"], dist.Delta):
            site = trace.nodes.get(f"{name}_unconstrained")
        if site is None:
            continue
        q, p = _as_multivariate(site["fn"]), _as_multivariate(posterior)
        if q is None or p is None or q.event_shape != p.event_shape:
            continue
        divergences[name] = float(kl_divergence(q, p).sum().detach())
    return divergences


def _unwrap(constraint: constraints.Constraint) -> constraints.Constraint:
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    return constraint


def _as_multivariate(distribution: dist.Distribution) -> dist.MultivariateNormal | None:
    base, event_dims = distribution, 0
    while isinstance(base, dist.Independent):
        event_dims += base.reinterpreted_batch_ndims
        base = base.base_dist
    if isinstance(base, dist.MultivariateNormal) and event_dims == 0:
        return base
    if isinstance(base, dist.Normal) and event_dims == 1:
        return dist.MultivariateNormal(base.loc, scale_tril=torch.diag_embed(base.scale))
    return None
