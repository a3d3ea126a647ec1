r"""Importance weighted bound (IWAE) and its doubly-reparameterised gradient (DReG)."""

from __future__ import annotations

import torch

from pyro_elbo_lab.objectives.base import ParticleBatch, ParticleObjective, path_surrogate
from pyro_elbo_lab.registry import objectives


@objectives.register("iwae")
class IWAE(ParticleObjective):
    r"""The importance weighted bound (Burda et al. 2016).

    .. math::

        \mathcal L_K = \mathbb E_{z_{1:K} \sim q}\Big[\log \frac1K \sum_{k=1}^K w_k\Big],
        \qquad w_k = \frac{p(x, z_k)}{q(z_k)},

    with :math:`\mathrm{ELBO} = \mathcal L_1 \le \mathcal L_K \le \mathcal L_{K+1} \le \log p(x)`.
    Gradient (reparameterised): :math:`\sum_k \tilde w_k \nabla \log w_k`,
    :math:`\tilde w_k = w_k / \sum_j w_j`, for model and guide alike; its signal-to-noise
    ratio for the guide falls as :math:`O(1/\sqrt K)` (Rainforth et al. 2018) — see
    :class:`IWAEDReG` for the fix.

    ``per_datapoint=True`` forms :math:`\sum_n \log \frac1K \sum_k w_{kn}` over the data
    plate, a bound on :math:`\sum_n \log p(x_n)` with K particles per point (the usual VAE
    form). It is valid only when every latent is local to the data plate: a global latent
    would enter every point's weight and be counted N times, which is why Pyro's
    ``RenyiELBO`` keeps one joint weight (Pyro issue #3104). We refuse that case.

    With a stratified mixture guide (``guide=mixture``) this is SIWAE,
    :math:`\log \sum_k \pi_k w_k` with :math:`\pi_k` the mixture weight of particle k's
    component over its count (Morningstar et al. 2021).

    :param num_particles: K.

    References: [1] Y. Burda, R. Grosse, R. Salakhutdinov, "Importance Weighted
    Autoencoders", ICLR 2016. [2] T. Rainforth et al., "Tighter Variational Bounds are
    Not Necessarily Better", ICML 2018. [3] W. Morningstar, S. Vikram, C. Ham,
    A. Gallagher, J. Dillon, "Automatic Differentiation Variational Inference with
    Mixtures", AISTATS 2021.
    """

    supports_stratified = True

    def bound(self, batch: ParticleBatch) -> torch.Tensor:
        return batch.groups.combine(batch.groups.particle_log_mean_exp(batch.groups.log_weights))


@objectives.register("iwae_dreg")
class IWAEDReG(IWAE):
    r"""IWAE with the doubly-reparameterised guide gradient (Tucker et al. 2019).

    Same bound as :class:`IWAE`. The guide's score-function term is replaced by its
    reparameterised equivalent, which leaves the estimator unbiased and removes the
    :math:`O(1/\sqrt K)` decay of its signal-to-noise ratio:

    .. math::

        \nabla_\phi \mathcal L_K \approx \sum_k \tilde w_k^2\,
            \frac{\partial \log w_k}{\partial z_k} \frac{\partial z_k}{\partial \phi},
        \qquad
        \nabla_\theta \mathcal L_K \approx \sum_k \tilde w_k \nabla_\theta \log p_\theta(x, z_k),

    with :math:`\partial \log w_k/\partial z_k` taken with the variational parameters
    stopped in :math:`\log q`. The model keeps the standard IWAE gradient, in the same
    model pass: the latents reach the model with their gradient path scaled by
    :math:`\tilde w_k` (:mod:`~pyro_elbo_lab.engine.gradient_scale`), so a step costs
    what an IWAE step costs plus the stopped guide's log density.

    References: G. Tucker, D. Lawson, S. Gu, C. Maddison, "Doubly Reparameterized
    Gradient Estimators for Monte Carlo Objectives", ICLR 2019.
    """

    needs_stopped_guide = True
    scales_latent_gradients = True
    supports_stratified = False

    def surrogate(self, batch: ParticleBatch) -> torch.Tensor:
        normalized = torch.softmax(batch.groups.log_weights.detach(), 0)
        return path_surrogate(batch, normalized**2, normalized)
