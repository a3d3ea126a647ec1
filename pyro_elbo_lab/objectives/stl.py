r"""Sticking the landing: the ELBO with the score term of its gradient removed."""

from __future__ import annotations

import torch

from pyro_elbo_lab.objectives.base import ParticleBatch, ParticleObjective
from pyro_elbo_lab.registry import objectives


@objectives.register("stl")
class StickingTheLanding(ParticleObjective):
    r"""The ELBO with the path-derivative gradient (Roeder, Wu & Duvenaud 2017).

    Value: :math:`\mathrm{ELBO} = \frac1K\sum_k \log p(x, z_k) - \log q_\phi(z_k)`. The
    reparameterised gradient splits into a path term and a score term,

    .. math::

        \nabla_\phi \log w = \underbrace{\Big(\nabla_z \log p(x,z) - \nabla_z \log q_\phi(z)\Big)
            \frac{\partial z}{\partial \phi}}_{\text{path}}
            \;-\; \underbrace{\nabla_\phi \log q_\phi(z)\big|_{z}}_{\text{score, mean } 0},

    and STL keeps only the path term: unbiased, and exactly zero when
    :math:`q = p(z \mid x)` (then :math:`\log w` is constant in z), so the gradient
    variance vanishes at the optimum while the plain ELBO's does not. Model parameters
    keep the ordinary gradient. The ELBO is linear in the weights, so there is no
    per-datapoint form.

    References: G. Roeder, Y. Wu, D. Duvenaud, "Sticking the Landing: Simple,
    Lower-Variance Gradient Estimators for Variational Inference", NeurIPS 2017.
    """

    needs_stopped_guide = True
    supports_per_datapoint = False

    def bound(self, batch: ParticleBatch) -> torch.Tensor:
        return batch.groups.combine(batch.groups.log_weights.mean(0))

    def surrogate(self, batch: ParticleBatch) -> torch.Tensor:
        return batch.groups.combine(batch.groups.stopped_log_weights.mean(0))
