r"""Gaussian score matching VI (GSM-VI; Modi et al., NeurIPS 2023).

GSM fits :math:`q = \mathcal N(\mu, \Sigma)` by making its score match the target's at
draws of q. For one draw :math:`z \sim q_t` with target score :math:`g = \nabla \log p(z)`,
the next Gaussian is the one closest to :math:`q_t` in KL whose score at z equals g,
:math:`-\Sigma^{-1}(z - \mu) = g`, which has the closed form (their Theorem 1)

.. math::

    \rho &= \tfrac12\sqrt{1 + 4\,(g^\top\Sigma g + ((\mu - z)^\top g)^2)} - \tfrac12, \qquad
    \varepsilon = \Sigma g - \mu + z, \\
    \Delta\mu &= \frac{1}{1+\rho}\Big(\varepsilon - (\mu - z)\,
        \frac{g^\top \varepsilon}{1 + \rho + (\mu - z)^\top g}\Big), \\
    \Delta\Sigma &= (\mu - z)(\mu - z)^\top - (\mu + \Delta\mu - z)(\mu + \Delta\mu - z)^\top .

A batch averages :math:`\Delta\mu` and :math:`\Delta\Sigma` over its B draws, computed for
all of them at once. On a Gaussian target the fixed point is the target itself, reached
after about D draws; there is no learning rate. Defaults as in the paper's experiments:
B = 2, q₀ centred at the initial point with identity covariance.

Reference: C. Modi, C. Margossian, Y. Yao, R. Gower, D. Blei, L. Saul, "Variational
Inference with Gaussian Score Matching", NeurIPS 2023.
"""

from __future__ import annotations

import torch
from pyro.infer.autoguide import AutoMultivariateNormal

from pyro_elbo_lab.fitters.gaussian import BatchScoreFitter, Gaussian
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.registry import fitters


def gsm_update(state: Gaussian, points: torch.Tensor, scores: torch.Tensor) -> Gaussian:
    """The GSM step from ``state`` with draws ``points`` ``[B, D]`` and their target scores."""
    mean, covariance = state.mean, state.covariance
    offset = mean - points  # μ − z, [B, D]
    covariance_score = scores @ covariance  # (Σ g)ᵀ per row (Σ symmetric)
    score_quadratic = (scores * covariance_score).sum(-1)  # gᵀ Σ g
    offset_score = (offset * scores).sum(-1)  # (μ − z)ᵀ g
    rho = 0.5 * torch.sqrt(1 + 4 * (score_quadratic + offset_score**2)) - 0.5
    epsilon = covariance_score + points - mean
    correction = (scores * epsilon).sum(-1) / (1 + rho + offset_score)
    mean_steps = (epsilon - offset * correction[:, None]) / (1 + rho)[:, None]
    moved = offset + mean_steps  # μ + Δμ − z per draw
    covariance_steps = offset.T @ offset - moved.T @ moved
    count = points.shape[0]
    return Gaussian(mean + mean_steps.mean(0), covariance + covariance_steps / count)


# the authors start from an L-BFGS/Pathfinder Gaussian (their ``initializers``), not the prior
@fitters.register("gsm", default_init="pathfinder")
class GaussianScoreMatching(BatchScoreFitter):
    """GSM-VI (Modi et al. 2023): closed-form score-matching updates of a full Gaussian."""

    name = "gsm"

    def __init__(
        self,
        model: LatentVariableModel,
        guide: AutoMultivariateNormal,
        *,
        batch_size: int = 2,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__(model, guide, batch_size, init_scale)

    def update(self, points: torch.Tensor, scores: torch.Tensor) -> Gaussian:
        return gsm_update(self.state, points, scores)
