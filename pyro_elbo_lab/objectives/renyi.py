r"""The variational Rényi bound VR-α, vectorised, with an optional DReG-style gradient."""

from __future__ import annotations

import math
from typing import Any

import torch

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.objectives.base import ParticleBatch, ParticleObjective, path_surrogate
from pyro_elbo_lab.registry import objectives


@objectives.register("vr")
class RenyiBound(ParticleObjective):
    r"""The variational Rényi bound (Li & Turner 2016).

    .. math::

        \mathcal L_\alpha = \frac{1}{1-\alpha}\,
            \mathbb E\Big[\log \frac1K \sum_{k=1}^K w_k^{1-\alpha}\Big], \qquad \alpha \ne 1.

    :math:`\mathcal L_\alpha` is non-increasing in α: α = 0 is IWAE, α → 1 the ELBO, and
    for α in [0, 1) it is a lower bound on log p(x); α < 0 aims above log p(x) (mode
    covering), though its K-sample estimate is biased low. α = −∞ (``vr_max``) keeps the
    largest weight: :math:`\max_k \log w_k`.

    Gradient (reparameterised): :math:`\sum_k \hat w_k \nabla \log w_k` with
    :math:`\hat w_k \propto w_k^{1-\alpha}`. With ``dreg=True`` the guide's score term is
    replaced by its reparameterised equivalent (the identity
    :math:`\mathbb E[g\,\nabla_\phi \log q] = \mathbb E[\nabla_z g\, \partial z/\partial\phi]`
    applied to :math:`g = \hat w_k`, whose log-derivative is
    :math:`(1-\alpha)(\hat w_k - \hat w_k^2)`), giving guide coefficients
    :math:`\alpha \hat w_k + (1-\alpha)\hat w_k^2` on the path derivative: IWAE-DReG at
    α = 0 and STL as α → 1. Not defined for α = −∞.

    With a stratified mixture guide, :math:`\frac1K\sum_k` becomes
    :math:`\sum_k \pi_k` (stratified sampling; not with ``dreg`` or α = −∞).

    :param alpha: α, any value but 1 (``-inf`` allowed).
    :param dreg: use the doubly-reparameterised guide gradient.

    References: [1] Y. Li, R. E. Turner, "Rényi Divergence Variational Inference",
    NeurIPS 2016. [2] G. Tucker et al., "Doubly Reparameterized Gradient Estimators for
    Monte Carlo Objectives", ICLR 2019.
    """

    default_num_particles = 8

    def __init__(self, alpha: float = 0.5, dreg: bool = False, **options: Any) -> None:
        if alpha == 1 or math.isnan(alpha) or alpha == math.inf:
            raise ConfigError(
                f"objective.alpha must be a number other than 1 (got {alpha!r}): alpha=1 is the "
                "ELBO, use objective=trace or objective=stl"
            )
        if dreg and alpha == -math.inf:
            raise ConfigError(
                "objective.dreg is not defined for alpha=-inf (vr_max): its weights are "
                "piecewise constant in z; use dreg=false"
            )
        super().__init__(**options)
        self.alpha = float(alpha)
        self.dreg = dreg
        self.needs_stopped_guide = dreg
        self.scales_latent_gradients = dreg
        self.supports_stratified = not dreg and math.isfinite(alpha)

    def bound(self, batch: ParticleBatch) -> torch.Tensor:
        log_weights = batch.groups.log_weights
        if self.alpha == -math.inf:
            return batch.groups.combine(log_weights.max(0).values)
        power = 1.0 - self.alpha
        return batch.groups.combine(batch.groups.particle_log_mean_exp(power * log_weights) / power)

    def surrogate(self, batch: ParticleBatch) -> torch.Tensor | None:
        if not self.dreg:
            return None
        normalized = torch.softmax((1.0 - self.alpha) * batch.groups.log_weights.detach(), 0)
        guide_coefficients = self.alpha * normalized + (1.0 - self.alpha) * normalized**2
        return path_surrogate(batch, guide_coefficients, normalized)


@objectives.register("vr_max")
class VRMax(RenyiBound):
    """VR-max (Li & Turner 2016): the VR bound at alpha=-inf, max_k log w_k."""

    def __init__(self, **options: Any) -> None:
        super().__init__(-math.inf, **options)
