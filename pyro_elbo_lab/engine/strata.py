r"""Stratified particles: a mixture guide draws particle k from component k mod C.

A guide marks a mixture site ``infer={"stratifiable": True}`` (a
:class:`~pyro.distributions.MixtureSameFamily` over the site's event). Inside
:class:`StratifiedParticles`, a Pyro :class:`~pyro.poutine.messenger.Messenger` the
engine applies just inside its particle plate, such a site is drawn by strata: the K
particles are consecutive groups of ``group_size``, and within each group particle k
comes from component :math:`c(k) = k \bmod C`, reparameterised, with stratum weight

.. math::

    \pi_k = \frac{\alpha_{c(k)}}{K / C}, \qquad \sum_k \pi_k = 1,

so that :math:`\sum_k \pi_k f(z_k)` is an unbiased estimate of
:math:`\mathbb E_q[f]` (:math:`\sum_c \alpha_c \mathbb E_{q_c}[f] = \mathbb E_q[f]`)
and :math:`\log \sum_k \pi_k w_k` the SIWAE bound (Morningstar et al. 2021). The
weights are left on the messenger (:attr:`StratifiedParticles.log_weights`); outside
it the site is an ordinary mixture draw. The guide needs to know nothing of it.

References: W. Morningstar, S. Vikram, C. Ham, A. Gallagher, J. Dillon, "Automatic
Differentiation Variational Inference with Mixtures", AISTATS 2021.
"""

from __future__ import annotations

import math
from typing import ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.poutine.messenger import Messenger

from pyro_elbo_lab.errors import ConfigError


class StratifiedDraw(dist.TorchDistribution):
    r"""Particle k drawn, reparameterised, from component :math:`c(k) = k \bmod C` of
    ``mixture``; densities are the whole mixture's. Batch ``[K, 1, ...]``, event ``[D]``."""

    arg_constraints: ClassVar[dict] = {}
    has_rsample = True

    def __init__(self, mixture: dist.MixtureSameFamily, batch_shape: torch.Size) -> None:
        self.mixture = mixture
        super().__init__(batch_shape, mixture.event_shape, validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, 1)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        if sample_shape:
            raise ValueError("a stratified draw is one particle batch (no sample_shape)")
        components = self.mixture.component_distribution
        per_component = self.batch_shape[0] // components.batch_shape[-1]
        # [M, C, D] -> [M*C, D]: particle m*C + c comes from component c.
        draws = components.rsample((per_component,))
        return draws.reshape(self.batch_shape + self.event_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.mixture.log_prob(value)


class StratifiedParticles(Messenger):
    """Draw ``stratifiable`` mixture sites by strata over ``num_particles`` particles.

    :param num_particles: K, the size of the particle plate this handler sits inside.
    :param batch_dims: the particle plate's depth from the right (plate nesting + 1).
    :param group_size: particles per estimate (None: one group of all K); every group
        holds a complete stratified set, so it must be a multiple of C.

    After the pass, :attr:`log_weights` holds :math:`\\log \\pi_k` (``[K]``), or None
    if no site was stratified.
    """

    def __init__(self, num_particles: int, batch_dims: int, group_size: int | None = None):
        super().__init__()
        self.num_particles = num_particles
        self.batch_dims = batch_dims
        self.group_size = group_size
        self.log_weights: torch.Tensor | None = None

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or not msg["infer"].get("stratifiable"):
            return
        mixture = msg["fn"]
        components = mixture.mixture_distribution.logits.shape[-1]
        group = self.group_size or self.num_particles
        if group % components:
            raise ConfigError(
                f"stratified sampling draws every component of site '{msg['name']}' equally "
                f"often: the particles of each estimate ({group}: objective.num_particles, or "
                f"evaluation.resample_particles) must be a multiple of guide.num_components "
                f"({components}); set one of them so"
            )
        per_component = self.num_particles // components
        logits = mixture.mixture_distribution.logits
        self.log_weights = torch.log_softmax(logits, -1).repeat(per_component) - math.log(
            per_component
        )
        batch_shape = torch.Size((self.num_particles,) + (1,) * (self.batch_dims - 1))
        msg["fn"] = StratifiedDraw(mixture, batch_shape)
        msg["infer"] = {key: value for key, value in msg["infer"].items() if key != "stratifiable"}
