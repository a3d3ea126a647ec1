r"""The β-weighted ELBO with KL annealing (warm-up)."""

from __future__ import annotations

from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask

from pyro_elbo_lab.engine import SiteReducer
from pyro_elbo_lab.errors import ConfigError, require, require_positive_int
from pyro_elbo_lab.objectives.base import ParticleBatch, ParticleObjective
from pyro_elbo_lab.registry import objectives


@objectives.register("beta_elbo")
class BetaELBO(ParticleObjective):
    r"""β-ELBO with a linear KL warm-up (Higgins et al. 2017; Bowman et al. 2016).

    .. math::

        \mathcal L_\beta = \mathbb E_q[\log p(x \mid z)] - \beta_t\, \mathrm{KL}(q(z)\,\|\,p(z)),
        \qquad
        \beta_t = \beta_0 + (\beta - \beta_0)\min(1, t / T),

    where t counts optimisation steps (calls of ``loss_and_grads``; ``loss`` and
    ``differentiable_loss`` do not advance it; :meth:`reset` starts over) and T is
    ``warmup_steps``. At β = 1 this is the ELBO; for β ≥ 1 it stays a lower bound on
    log p(x), for β < 1 (e.g. during warm-up) it is not. The likelihood term is every
    observed site, the KL every latent one. A latent's KL is analytic where Pyro has a
    closed form for the pair (guide distribution, prior) with matching shapes and the
    same ``poutine.scale``/``mask`` on both sides — as in ``TraceMeanField_ELBO``, exact
    for mean-field guides — and a Monte Carlo :math:`\log q - \log p` otherwise (e.g. for
    autoguides, whose sites are Deltas of an auxiliary latent carrying the
    unconstraining Jacobian as their log density); the sites that used the closed form
    are in ``analytic_kl_sites``.
    Gradient: reparameterised, by autodiff. With a stratified mixture guide the
    particle average is :math:`\sum_k \pi_k` (the stratified ELBO of Morningstar et al.
    2021, unbiased: :math:`\sum_c \alpha_c \mathbb E_{q_c}[\cdot] = \mathbb E_q[\cdot]`).

    :param beta: final β ≥ 0.  :param warmup_steps: T (0: no warm-up).
    :param beta_start: :math:`\beta_0`, β at step 0 of the warm-up.

    References: [1] I. Higgins et al., "β-VAE: Learning Basic Visual Concepts with a
    Constrained Variational Framework", ICLR 2017. [2] S. Bowman et al., "Generating
    Sentences from a Continuous Space", CoNLL 2016.
    """

    supports_per_datapoint = False
    supports_stratified = True

    def __init__(
        self,
        beta: float = 1.0,
        warmup_steps: int = 0,
        beta_start: float = 0.0,
        **options: Any,
    ) -> None:
        require(beta >= 0, f"objective.beta must be >= 0, got {beta!r}")
        require(beta_start >= 0, f"objective.beta_start must be >= 0, got {beta_start!r}")
        require_positive_int("objective.warmup_steps", warmup_steps, minimum=0)
        super().__init__(**options)
        require(
            not (self.options.compile and warmup_steps > 0),
            "objective.compile with a beta warm-up would trace a new step for every beta; "
            "set warmup_steps=0 or compile=false",
        )
        self.beta = float(beta)
        self.beta_start = float(beta_start)
        self.warmup_steps = warmup_steps
        self.steps_taken = 0
        self.analytic_kl_sites: tuple[str, ...] = ()

    @property
    def current_beta(self) -> float:
        """β at the current step of the schedule."""
        if self.warmup_steps == 0:
            return self.beta
        progress = min(1.0, self.steps_taken / self.warmup_steps)
        return self.beta_start + (self.beta - self.beta_start) * progress

    def on_step(self) -> None:
        self.steps_taken += 1

    def reset(self) -> None:
        """Start the warm-up schedule over."""
        self.steps_taken = 0

    def bound(self, batch: ParticleBatch) -> torch.Tensor:
        log_likelihood, kl = self.likelihood_and_kl(batch)
        values = (log_likelihood - self.current_beta * kl).unsqueeze(-1)
        return batch.groups.particle_mean(values).squeeze(-1)

    def likelihood_and_kl(self, batch: ParticleBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per particle: :math:`\\log p(x \\mid z_k)` and the KL estimate, both ``[K]``."""
        weights = batch.weights
        model_trace, guide_trace = weights.model_trace, weights.guide_trace
        reduce = SiteReducer(weights.num_particles, self.model_plate_nesting, None)
        observed = [
            reduce.per_particle(site["log_prob"])
            for site in model_trace.nodes.values()
            if site["type"] == "sample" and site["is_observed"]
        ]
        if not observed:
            raise ConfigError("beta_elbo needs a model with observed sites")
        log_likelihood = torch.stack(observed).sum(0)
        # log q - log p over all latents, then swap in closed forms where they exist.
        kl = weights.log_q - (weights.log_p - log_likelihood)
        analytic = []
        for name, guide_site in guide_trace.nodes.items():
            model_site = model_trace.nodes.get(name)
            if guide_site["type"] != "sample" or model_site is None or model_site["is_observed"]:
                continue
            closed_form = _analytic_kl(guide_site, model_site)
            if closed_form is None:
                continue
            kl = kl - reduce.per_particle(guide_site["log_prob"])
            kl = kl + reduce.per_particle(model_site["log_prob"])
            kl = kl + reduce.per_particle(closed_form)
            analytic.append(name)
        self.analytic_kl_sites = tuple(analytic)
        return log_likelihood, kl


def _analytic_kl(guide_site: dict, model_site: dict) -> torch.Tensor | None:
    """KL(q || p) of one latent in closed form, or None where the closed form is not this
    site's ELBO term: a guide ``Delta`` (an autoguide's constrained value: its
    ``log_density`` is the unconstraining Jacobian, which the Monte Carlo term keeps and
    Pyro's Delta KL drops), or a ``poutine.scale``/``poutine.mask`` that weighs the model
    and guide terms differently (the term is then no KL)."""
    guide_fn, model_fn = guide_site["fn"], model_site["fn"]
    if isinstance(guide_fn, dist.Delta) or guide_fn.event_shape != model_fn.event_shape:
        return None
    if not (
        _same_weighting(guide_site["scale"], model_site["scale"])
        and _same_weighting(guide_site["mask"], model_site["mask"])
    ):
        return None
    try:
        kl = kl_divergence(guide_fn, model_fn)
    except NotImplementedError:
        return None
    return scale_and_mask(kl, guide_site["scale"], guide_site["mask"])


def _same_weighting(guide_value: object, model_value: object) -> bool:
    """Whether two sites' ``scale`` (or ``mask``) values weigh every element alike."""
    if guide_value is None or model_value is None:
        return guide_value is model_value
    guide_tensor, model_tensor = torch.as_tensor(guide_value), torch.as_tensor(model_value)
    try:
        return bool(torch.equal(*torch.broadcast_tensors(guide_tensor, model_tensor)))
    except RuntimeError:
        return False
