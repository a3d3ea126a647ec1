r"""A fitted guide's posterior as named arrays: latent draws, observed data, per-point
log-likelihoods, each with the dims the model's plates give it.

This is the content of an ArviZ ``InferenceData`` (groups ``posterior``,
``observed_data``, ``log_likelihood``), computed in one vectorised pass: S draws of the
guide, the model replayed on them, :math:`\log p(x_n \mid z_s)` of every observed site
per point. Deterministic sites (``pyro.deterministic``) are posterior quantities. A batch
dim that a plate declares is named after the plate (``theta[school]``); other dims are
``{site}_dim_{i}``, ArviZ's convention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

from pyro_elbo_lab.engine import unbatched_traces, weighed_particles
from pyro_elbo_lab.models.base import LatentVariableModel


@dataclass(frozen=True)
class NamedArray:
    """Values with one name per dim (draw dims first, where there are any)."""

    values: torch.Tensor
    dims: tuple[str, ...]


@dataclass(frozen=True)
class PosteriorDraws:
    """``posterior`` ``[S, ...]``, ``log_likelihood`` ``[S, ...]`` and ``observed_data``,
    by site name."""

    posterior: dict[str, NamedArray]
    log_likelihood: dict[str, NamedArray]
    observed_data: dict[str, NamedArray]


def site_dims(name: str, site: dict[str, Any]) -> tuple[str, ...]:
    """Dim names of an unvectorised site's value: plate names for its plate dims,
    ``{name}_dim_{i}`` for the rest (broadcast batch dims and event dims)."""
    shape = site["value"].shape
    plates = {frame.dim: frame.name for frame in site["cond_indep_stack"] if frame.vectorized}
    event_dim = site["fn"].event_dim
    if site["infer"].get("_deterministic"):  # pyro.deterministic counts every dim as event
        event_dim = max(len(shape) - max((-dim for dim in plates), default=0), 0)
    batch_dims = len(shape) - event_dim
    return tuple(
        plates.get(index - batch_dims, f"{name}_dim_{index}") if index < batch_dims
        else f"{name}_dim_{index}"
        for index in range(len(shape))
    )  # fmt: skip


def guide_posterior(
    model: LatentVariableModel, guide: Callable[..., Any], num_draws: int
) -> PosteriorDraws:
    """``num_draws`` draws of ``guide`` on ``model``'s training data, as named arrays."""
    args = (model.train_data,)
    with poutine.block(), torch.no_grad():
        single, _ = unbatched_traces(model.evaluation_model, guide, args, {})
        batched = weighed_particles(
            model.evaluation_model,
            guide,
            args,
            args,
            num_particles=num_draws,
            max_plate_nesting=model.max_plate_nesting,
        )
    single = prune_subsample_sites(single)
    posterior, log_likelihood, observed = {}, {}, {}
    for name, site in single.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        dims = site_dims(name, site)
        shape = tuple(site["value"].shape)
        deterministic = site["infer"].get("_deterministic", False)
        value = batched.nodes[name]["value"]
        if not site["is_observed"] or deterministic:
            draws_of = value.expand(_leading(value, num_draws, shape))
            posterior[name] = NamedArray(draws_of.reshape(num_draws, *shape).cpu(), dims)
            continue
        observed[name] = NamedArray(site["value"].cpu(), dims)
        batch = shape[: len(shape) - site["fn"].event_dim]
        log_prob = batched.nodes[name]["unscaled_log_prob"]
        log_prob = log_prob.expand(_leading(log_prob, num_draws, batch))
        log_likelihood[name] = NamedArray(
            log_prob.reshape(num_draws, *batch).cpu(), dims[: len(batch)]
        )
    return PosteriorDraws(posterior, log_likelihood, observed)


def _leading(tensor: torch.Tensor, num_draws: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a particle-batched tensor broadcasts to: draws first, padded to the
    site's own shape (a global site's draws carry size-1 plate dims)."""
    pad = tensor.dim() - len(shape) - 1
    return (num_draws, *([1] * pad), *shape) if pad >= 0 else tensor.shape
