r"""VIMCO: the IWAE bound with a score-function gradient and leave-one-out baselines."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from pyro_elbo_lab.engine import leave_one_out_mean, log_mean_exp, log_sum_exp_without_each
from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.objectives.base import ParticleBatch
from pyro_elbo_lab.objectives.iwae import IWAE
from pyro_elbo_lab.registry import objectives

Baseline = Literal["leave_one_out", "none"]
BASELINES = ("leave_one_out", "none")


def leave_one_out_bounds(log_weights: torch.Tensor) -> torch.Tensor:
    r""":math:`\hat L_{-k}`: the K-sample bound with :math:`w_k` replaced by the geometric
    mean of the others, :math:`\log \frac1K\big(\sum_{j\ne k} w_j
    + \exp\frac{1}{K-1}\sum_{j\ne k}\log w_j\big)`, for ``log_weights`` of shape ``[K, G]``.
    """
    num = log_weights.shape[0]
    others_mean = leave_one_out_mean(log_weights, 0)
    others = log_sum_exp_without_each(log_weights, 0)
    return torch.logaddexp(others, others_mean) - math.log(num)


@objectives.register("vimco")
class VIMCO(IWAE):
    r"""Variational inference for Monte Carlo objectives (Mnih & Rezende 2016).

    The bound is IWAE's, :math:`\hat L = \log \frac1K \sum_k w_k`; the gradient is the
    score-function estimator of it, with draws held fixed and one baseline per particle:

    .. math::

        \nabla \hat L = \sum_k \big(\hat L - \hat L_{-k}\big)\,\nabla_\phi \log q_\phi(z_k)
            + \sum_k \tilde w_k \nabla \log w_k, \qquad \tilde w_k = \frac{w_k}{\sum_j w_j},

    where :math:`\hat L_{-k}` replaces :math:`w_k` by the geometric mean of the other
    weights (:func:`leave_one_out_bounds`), so each learning signal is "how much did
    particle k add", not the whole (large, noisy) bound. Unbiased because
    :math:`\hat L_{-k}` does not depend on :math:`z_k`. Needs no reparameterisation: it
    is the objective for guides with discrete sites (every site's gradient here is the
    score form, continuous ones included; use ``iwae`` / ``iwae_dreg`` for fully
    reparameterisable guides). Each draw costs one more guide pass (detached draws).

    :param num_particles: K >= 2 (the baselines need other particles).
    :param baseline: ``leave_one_out`` (VIMCO) or ``none``: every particle's learning
        signal is the whole bound :math:`\hat L`, the plain score-function (REINFORCE)
        gradient of the IWAE bound, the "IWAE with REINFORCE" that Mnih & Rezende and
        Le et al. 2019 compare VIMCO and RWS against.

    References: A. Mnih, D. J. Rezende, "Variational Inference for Monte Carlo
    Objectives", ICML 2016.
    """

    requires_reparam = False
    detach_draws = True

    default_num_particles = 8
    min_particles = 2

    def __init__(self, baseline: Baseline = "leave_one_out", **options: Any) -> None:
        if baseline not in BASELINES:
            raise ConfigError(
                f"objective.baseline must be one of {', '.join(BASELINES)}, got {baseline!r}"
            )
        super().__init__(**options)
        self.baseline = baseline

    def surrogate(self, batch: ParticleBatch) -> torch.Tensor:
        groups = batch.groups
        log_weights = groups.log_weights
        signals = log_mean_exp(log_weights, 0).expand_as(log_weights).detach()
        if self.baseline == "leave_one_out":
            signals = signals - leave_one_out_bounds(log_weights).detach()
        # The bound itself, at fixed draws, carries sum_k w~_k grad log w_k.
        return self.bound(batch) + groups.scaled_sum(signals * groups.log_q)
