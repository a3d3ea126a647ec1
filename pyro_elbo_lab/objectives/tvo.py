r"""The thermodynamic variational objective: Riemann sums of the thermodynamic integral."""

from __future__ import annotations

import math
from typing import Any

import torch

from pyro_elbo_lab.errors import ConfigError, require, require_positive_int
from pyro_elbo_lab.objectives.base import ParticleBatch, ParticleObjective
from pyro_elbo_lab.registry import objectives

PARTITIONS = ("linear", "log")
SUMS = ("left", "right")


def beta_partition(num_intervals: int, kind: str, beta_min: float) -> torch.Tensor:
    """:math:`0 = \\beta_0 < \\beta_1 < \\dots < \\beta_S = 1`: evenly spaced (``linear``),
    or 0 followed by S points evenly spaced in log10 from ``beta_min`` to 1 (``log``)."""
    if kind == "linear":
        return torch.linspace(0.0, 1.0, num_intervals + 1, dtype=torch.float64)
    if num_intervals == 1:
        return torch.tensor([0.0, 1.0], dtype=torch.float64)
    log_points = torch.linspace(math.log10(beta_min), 0.0, num_intervals, dtype=torch.float64)
    return torch.cat([torch.zeros(1, dtype=torch.float64), 10.0**log_points])


@objectives.register("tvo")
class ThermodynamicVariationalObjective(ParticleObjective):
    r"""The thermodynamic variational objective (Masrani, Le & Wood 2019).

    Along the geometric path :math:`\pi_\beta(z) \propto q(z)^{1-\beta} p(x, z)^\beta`
    (q at β = 0, the posterior at β = 1), thermodynamic integration gives

    .. math::

        \log p(x) = \int_0^1 \mathbb E_{\pi_\beta}[\log w]\, d\beta,
        \qquad w = \frac{p(x, z)}{q(z)},

    and the integrand is non-decreasing in β (its derivative is a variance). So over a
    partition :math:`0 = \beta_0 < \dots < \beta_S = 1` the left Riemann sum
    :math:`\sum_{s<S} (\beta_{s+1}-\beta_s)\,\mathbb E_{\pi_{\beta_s}}[\log w]` is a
    lower bound (the TVO; S = 1 is the ELBO) and the right sum
    :math:`\sum_{s\ge1}(\beta_s - \beta_{s-1})\,\mathbb E_{\pi_{\beta_s}}[\log w]` an
    upper bound. Each expectation is a self-normalised importance estimate from the K
    draws of q, :math:`\sum_k \pi_{sk} \log w_k` with
    :math:`\pi_{sk} \propto w_k^{\beta_s}` (consistent, biased at finite K).

    Gradient: the covariance estimator, with draws held fixed (no reparameterisation
    needed, so discrete guides work),

    .. math::

        \nabla \mathbb E_{\pi_\beta}[f] = \mathbb E_{\pi_\beta}[\nabla f]
            + \operatorname{Cov}_{\pi_\beta}\big[f,\ \nabla \log \tilde\pi_\beta\big],
        \qquad f = \log w,\quad \log\tilde\pi_\beta = \log q + \beta \log w,

    both terms estimated with the same normalised weights :math:`\pi_{sk}` (the paper's
    estimator: consistent, biased at finite K; at β = 0 the sample covariance scales the
    score term by (K − 1)/K).

    :param num_particles: K.
    :param num_intervals: S, the number of partition intervals.
    :param partition: ``linear`` or ``log`` (denser near β = 0, where the integrand
        changes fastest; the paper's choice).
    :param beta_min: β_1 of the ``log`` partition.
    :param sum: ``left`` maximises the lower bound (the TVO); ``right`` minimises the
        upper bound.

    References: V. Masrani, T. A. Le, F. Wood, "The Thermodynamic Variational
    Objective", NeurIPS 2019.
    """

    requires_reparam = False
    detach_draws = True

    default_num_particles = 16

    def __init__(
        self,
        num_intervals: int = 5,
        partition: str = "log",
        beta_min: float = 0.01,
        sum: str = "left",
        **options: Any,
    ) -> None:
        require_positive_int("objective.num_intervals", num_intervals)
        if partition not in PARTITIONS:
            raise ConfigError(f"objective.partition must be one of {PARTITIONS}, got {partition!r}")
        if sum not in SUMS:
            raise ConfigError(f"objective.sum must be one of {SUMS}, got {sum!r}")
        require(0.0 < beta_min < 1.0, f"objective.beta_min must lie in (0, 1), got {beta_min!r}")
        super().__init__(**options)
        self.betas = beta_partition(num_intervals, partition, beta_min)
        self.sum = sum
        self.minimized = sum == "right"

    def _terms(self, log_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Interval widths ``[S]`` and the β of each used point, as ``[S, 1, 1]``."""
        betas = self.betas.to(log_weights)
        widths = betas[1:] - betas[:-1]
        points = betas[:-1] if self.sum == "left" else betas[1:]
        return widths, points.reshape(-1, 1, 1)

    def _path_weights(self, log_weights: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """:math:`\\pi_{sk}` for every used β: ``[S, K, G]``, detached."""
        return torch.softmax(points * log_weights.detach().unsqueeze(0), 1)

    def bound(self, batch: ParticleBatch) -> torch.Tensor:
        log_weights = batch.groups.log_weights
        widths, points = self._terms(log_weights)
        expectations = (self._path_weights(log_weights, points) * log_weights).sum(1)
        return batch.groups.combine((widths.unsqueeze(-1) * expectations).sum(0))

    def surrogate(self, batch: ParticleBatch) -> torch.Tensor:
        groups = batch.groups
        log_weights = groups.log_weights
        widths, points = self._terms(log_weights)
        path = self._path_weights(log_weights, points)
        centred = log_weights.detach() - (path * log_weights.detach()).sum(1, keepdim=True)
        log_target = groups.log_q + points * log_weights
        per_beta = (path * (log_weights + centred * log_target)).sum(1)
        return groups.combine((widths.unsqueeze(-1) * per_beta).sum(0))
