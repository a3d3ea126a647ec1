r"""Trust-region Newton–CG (Steihaug 1983; Nocedal & Wright 2006, Alg. 7.2) for a
deterministic objective with exact Hessian-vector products.

Each iteration solves :math:`\min_p\, g^\top p + \tfrac12 p^\top H p` within
:math:`\|p\| \le \Delta` by conjugate gradients on Hessian-vector products, stopping at
negative curvature or the boundary, and accepts the step by the ratio of actual to
predicted decrease, :math:`\rho`, growing or shrinking :math:`\Delta`. Objectives here
are sums of float32 log densities: a decrease smaller than :data:`ROUND_OFF` × |f| is not
resolved, so such a step is judged by whether it shrinks the gradient instead. The caller
stops when an accepted step's predicted decrease (:attr:`NewtonState.predicted`) falls
below its tolerance: the distance to the minimum in f's units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: relative size of a change in f that float32 sums resolve
ROUND_OFF = 1e-6


@dataclass
class NewtonState:
    """Where the solver is: the point, f, its gradient and the trust radius."""

    point: torch.Tensor
    value: float
    gradient: torch.Tensor
    radius: float = 1.0
    iterations: int = 0
    hessian_vector_products: int = 0
    #: the decrease of f the last step's quadratic model predicted (its Newton decrement
    #: squared over two when the step is the full Newton step): how far f is from its
    #: minimum, in f's units, however finely f itself is resolved
    predicted: float = float("inf")


def newton_cg_step(
    state: NewtonState,
    value_and_gradient: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    hessian_vector: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    max_cg: int,
) -> NewtonState:
    """One trust-region Newton–CG iteration from ``state`` (a new state)."""
    step, predicted, products = _steihaug(state, hessian_vector, max_cg)
    trial = state.point + step
    value, gradient = value_and_gradient(trial)
    actual = state.value - value
    resolved = abs(predicted) > ROUND_OFF * max(abs(state.value), 1.0)
    if resolved:
        ratio = actual / predicted if predicted > 0 else -1.0
        accept = ratio > 0.1
    else:  # below f's resolution: the gradient says whether the step helped
        accept = bool(torch.isfinite(gradient).all()) and gradient.norm() < state.gradient.norm()
        ratio = 1.0 if accept else 0.0
    if not torch.isfinite(torch.tensor(value)):
        accept, ratio = False, -1.0
    radius = state.radius
    step_norm = float(step.norm())
    if ratio < 0.25:
        radius = step_norm / 4
    elif ratio > 0.75 and step_norm >= 0.99 * radius:
        radius = 2 * radius
    products += state.hessian_vector_products
    if accept:
        return NewtonState(
            trial, value, gradient, radius, state.iterations + 1, products, predicted
        )
    return NewtonState(
        state.point, state.value, state.gradient, radius, state.iterations + 1, products,
        state.predicted,
    )  # fmt: skip


def _steihaug(
    state: NewtonState,
    hessian_vector: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    max_cg: int,
) -> tuple[torch.Tensor, float, int]:
    """CG on :math:`Hp = -g` within the trust region: the step, its predicted decrease
    :math:`-(g^\\top p + \\tfrac12 p^\\top Hp)` and the products it used."""
    g = state.gradient
    p = torch.zeros_like(g)
    r = g.clone()
    d = -r
    tolerance = min(0.5, float(g.norm()) ** 0.5) * float(g.norm())
    products = 0
    for _ in range(max_cg):
        hd = hessian_vector(state.point, d)
        products += 1
        curvature = float(d @ hd)
        if curvature <= 0:
            p = p + _to_boundary(p, d, state.radius) * d
            break
        alpha = float(r @ r) / curvature
        if float((p + alpha * d).norm()) >= state.radius:
            p = p + _to_boundary(p, d, state.radius) * d
            break
        p = p + alpha * d
        r_next = r + alpha * hd
        if float(r_next.norm()) < tolerance:
            break
        d = -r_next + float(r_next @ r_next) / float(r @ r) * d
        r = r_next
    hp = hessian_vector(state.point, p)
    products += 1
    predicted = -float(g @ p + 0.5 * (p @ hp))
    return p, predicted, products


def _to_boundary(p: torch.Tensor, d: torch.Tensor, radius: float) -> float:
    """τ ≥ 0 with ‖p + τd‖ = radius."""
    a, b, c = float(d @ d), 2 * float(p @ d), float(p @ p) - radius**2
    return (-b + (b * b - 4 * a * c) ** 0.5) / (2 * a)
