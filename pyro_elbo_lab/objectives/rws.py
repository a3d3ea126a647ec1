r"""Reweighted wake-sleep on the shared engine: wake-φ by DReG or by the score form."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from pyro_elbo_lab.objectives.base import ParticleBatch, path_surrogate
from pyro_elbo_lab.objectives.iwae import IWAE
from pyro_elbo_lab.registry import objectives


class ParticleRWS(IWAE):
    r"""Reweighted wake-sleep (Bornschein & Bengio 2015) on K vectorised particles.

    The model follows the IWAE gradient (wake-θ),
    :math:`\sum_k \tilde w_k \nabla_\theta \log p_\theta(x, z_k)`; the guide follows the
    wake-φ update, a self-normalised estimate of the *inclusive* KL's gradient,

    .. math::

        -\nabla_\phi \mathrm{KL}(p(z\mid x)\,\|\,q_\phi)
            = \mathbb E_{p(z\mid x)}[\nabla_\phi \log q_\phi(z)]
            \approx \sum_k \tilde w_k \nabla_\phi \log q_\phi(z_k)\big|_{z_k},
        \qquad \tilde w_k = \frac{w_k}{\sum_j w_j},

    which fits q mass-covering (the inclusive-KL baseline for ``msc`` and the
    forward-KL ``fdiv``). Two estimators of wake-φ, one registered name each:

    - ``rws_dreg`` (:class:`RWSDReG`): the score term replaced by its reparameterised
      equivalent (Tucker et al. 2019, section 4),

      .. math::

          \sum_k \tilde w_k \nabla_\phi \log q_\phi(z_k)\big|_{z_k}
              \;\to\; \sum_k \big(\tilde w_k - \tilde w_k^2\big)
              \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial \phi},

      equal in expectation (the IWAE guide gradient's path part minus its DReG form) and
      of lower variance; it needs a reparameterisable guide;
    - ``rws_score`` (:class:`RWSScore`): the classic score form, any guide, discrete
      sites included.

    The reported loss is −IWAE_K (Pyro's ``ReweightedWakeSleep``, registered as ``rws``,
    reports the same; it runs wake-φ in score form with a sleep phase option, and
    cannot weigh the per-datapoint form).

    References: [1] J. Bornschein, Y. Bengio, "Reweighted Wake-Sleep", ICLR 2015.
    [2] G. Tucker, D. Lawson, S. Gu, C. Maddison, "Doubly Reparameterized Gradient
    Estimators for Monte Carlo Objectives", ICLR 2019 (section 4, RWS).
    """

    default_num_particles = 8
    needs_stopped_guide = True
    model_gradient = "iwae"  # wake-θ
    #: how wake-φ is estimated
    wake_phi: ClassVar[Literal["dreg", "score"]]

    def surrogate(self, batch: ParticleBatch) -> torch.Tensor:
        normalized = torch.softmax(batch.groups.log_weights.detach(), 0)
        if self.wake_phi == "dreg":
            return path_surrogate(batch, normalized - normalized**2, normalized)
        groups = batch.groups
        # log q_phi(z) - log q_stopped(z): value 0, gradient the score term only.
        score = groups.stopped_log_weights - groups.log_weights
        surrogate = groups.combine((normalized * score).sum(0))
        stopped = batch.stopped_latent_log_p()
        if stopped is not None:
            surrogate = surrogate + stopped.combine((normalized * stopped.log_weights).sum(0))
        return surrogate


@objectives.register("rws_dreg")
class RWSDReG(ParticleRWS):
    """Reweighted wake-sleep with the doubly-reparameterised wake-φ (reparameterised guides).

    Tucker et al. 2019, section 4; see :class:`ParticleRWS`.
    """

    wake_phi = "dreg"
    scales_latent_gradients = True


@objectives.register("rws_score")
class RWSScore(ParticleRWS):
    """Reweighted wake-sleep with the score-form wake-φ (any guide, discrete sites too).

    Bornschein & Bengio 2015; see :class:`ParticleRWS`.
    """

    wake_phi = "score"
    requires_reparam = False
