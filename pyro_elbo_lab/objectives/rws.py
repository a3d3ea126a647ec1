r"""Reweighted wake-sleep on the shared engine, with its doubly-reparameterised wake-φ."""

from __future__ import annotations

import torch

from pyro_elbo_lab.objectives.base import ParticleBatch, path_surrogate
from pyro_elbo_lab.objectives.iwae import IWAE
from pyro_elbo_lab.registry import objectives


@objectives.register("rws_dreg")
class ReweightedWakeSleep(IWAE):
    r"""Reweighted wake-sleep (Bornschein & Bengio 2015), wake-φ by DReG (Tucker et al. 2019).

    The model follows the IWAE gradient (wake-θ),
    :math:`\sum_k \tilde w_k \nabla_\theta \log p_\theta(x, z_k)`; the guide follows the
    wake-φ update, a self-normalised estimate of the *inclusive* KL's gradient,

    .. math::

        -\nabla_\phi \mathrm{KL}(p(z\mid x)\,\|\,q_\phi)
            = \mathbb E_{p(z\mid x)}[\nabla_\phi \log q_\phi(z)]
            \approx \sum_k \tilde w_k \nabla_\phi \log q_\phi(z_k)\big|_{z_k},
        \qquad \tilde w_k = \frac{w_k}{\sum_j w_j},

    which fits q mass-covering (the inclusive-KL baseline for ``msc`` and the
    forward-KL ``fdiv``). With ``dreg=True`` the score term is replaced by its
    reparameterised equivalent,

    .. math::

        \sum_k \tilde w_k \nabla_\phi \log q_\phi(z_k)\big|_{z_k}
            \;\to\; \sum_k \big(\tilde w_k - \tilde w_k^2\big)
            \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial \phi},

    equal in expectation (it is the IWAE guide gradient's path part minus its DReG form)
    and of lower variance; it needs a reparameterisable guide. ``dreg=False`` is the
    classic score-form wake-φ and works with any guide, discrete sites included.
    The reported loss is −IWAE_K (Pyro's ``ReweightedWakeSleep`` reports the same).

    :param num_particles: K.
    :param dreg: doubly-reparameterised wake-φ (needs reparameterisable guide sites).

    References: [1] J. Bornschein, Y. Bengio, "Reweighted Wake-Sleep", ICLR 2015.
    [2] G. Tucker, D. Lawson, S. Gu, C. Maddison, "Doubly Reparameterized Gradient
    Estimators for Monte Carlo Objectives", ICLR 2019 (section 4, RWS).
    """

    needs_stopped_guide = True

    def __init__(
        self,
        num_particles: int = 8,
        max_plate_nesting: int | None = None,
        vectorize_particles: bool = True,
        per_datapoint: bool = False,
        data_plate: str = "data",
        dreg: bool = True,
        *,
        compile: bool = False,
        compile_options: dict | None = None,
    ) -> None:
        super().__init__(
            num_particles,
            max_plate_nesting,
            vectorize_particles,
            per_datapoint,
            data_plate,
            compile=compile,
            compile_options=compile_options,
        )
        self.dreg = dreg
        self.requires_reparam = dreg

    def surrogate(self, batch: ParticleBatch) -> torch.Tensor:
        normalized = torch.softmax(batch.groups.log_weights.detach(), 0)
        if self.dreg:
            return path_surrogate(batch, normalized - normalized**2, normalized)
        groups = batch.groups
        # log q_phi(z) - log q_stopped(z): value 0, gradient the score term only.
        score = groups.stopped_log_weights - groups.log_weights
        surrogate = groups.combine((normalized * score).sum(0))
        stopped = batch.stopped_latent_log_p()
        if stopped is not None:
            surrogate = surrogate + stopped.combine((normalized * stopped.log_weights).sum(0))
        return surrogate
