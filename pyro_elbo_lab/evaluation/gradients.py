r"""Variance and signal-to-noise ratio of an objective's gradient estimator.

From M independent estimates :math:`g^{(1..M)}` of each parameter coordinate's gradient
at the fitted parameters: :math:`\mathrm{SNR} = |\bar g| / \mathrm{sd}(g)`
(Rainforth et al. 2018), averaged over the coordinates of a group (guide / model
parameters), with the mean variance of the group beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import torch


def gradient_draws(
    objective: Any,
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    num_estimates: int,
) -> dict[str, torch.Tensor]:
    """``num_estimates`` independent gradient estimates of ``objective`` at the current
    parameters, per group (``guide``: φ, ``model``: θ), each ``[num_estimates,
    coordinates]`` in unconstrained space; parameters are left as they were.

    Works with any ``pyro.infer.ELBO`` (it calls ``loss_and_grads`` and reads ``.grad``),
    Pyro's own objectives included.
    """
    objective.loss_and_grads(model, guide, *args)  # make sure every parameter exists
    guide_ids = {id(p) for p in guide.parameters()} if isinstance(guide, torch.nn.Module) else set()
    store = pyro.get_param_store()
    params = {name: value.unconstrained() for name, value in store.items()}
    draws: dict[str, list[torch.Tensor]] = {name: [] for name in params}
    for _ in range(num_estimates):
        for value in params.values():
            value.grad = None
        objective.loss_and_grads(model, guide, *args)
        for name, value in params.items():
            grad = value.grad if value.grad is not None else torch.zeros_like(value)
            draws[name].append(grad.detach().reshape(-1).clone())
    for value in params.values():
        value.grad = None
    groups: dict[str, list[torch.Tensor]] = {"guide": [], "model": []}
    for name, value in params.items():
        group = (
            "guide" if id(value) in guide_ids or name.startswith(_guide_prefix(guide)) else "model"
        )
        groups[group].append(torch.stack(draws[name]))
    return {group: torch.cat(stacks, -1).double() for group, stacks in groups.items() if stacks}


def mean_snr(estimates: torch.Tensor) -> float:
    """:math:`|\bar g| / \\mathrm{sd}(g)` per coordinate of ``estimates`` ``[M, coordinates]``,
    averaged over the coordinates whose estimates vary (inf when none does)."""
    sd = estimates.std(0)
    snr = estimates.mean(0).abs() / sd.clamp_min(1e-30)
    return float(snr[sd > 0].mean()) if bool((sd > 0).any()) else float("inf")


def gradient_statistics(
    objective: Any,
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    num_estimates: int,
) -> dict[str, dict[str, float]]:
    """SNR and variance of ``objective``'s gradients per group, from ``num_estimates``
    draws (:func:`gradient_draws`)."""
    statistics = {}
    for group, estimates in gradient_draws(objective, model, guide, args, num_estimates).items():
        statistics[group] = {
            "snr": mean_snr(estimates),
            "variance": float(estimates.std(0).pow(2).mean()),
            "coordinates": int(estimates.shape[1]),
        }
    return statistics


def _guide_prefix(guide: Callable[..., Any]) -> str:
    return getattr(guide, "_pyro_name", "\0")
