r"""The Csiszár f-divergence family as one objective, f chosen by name."""

from __future__ import annotations

from typing import Any

import torch

from pyro_elbo_lab.engine import leave_one_out_mean, log_mean_exp
from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.objectives.base import ParticleBatch, ParticleObjective
from pyro_elbo_lab.objectives.csiszar import FAMILY_PARAMETERS, csiszar_function
from pyro_elbo_lab.registry import objectives

GRADIENTS = ("auto", "reparam", "score")
#: f whose reparameterised gradient survives the self-normalised target (see below).
REPARAM_SAFE = frozenset({"kl_reverse"})


@objectives.register("fdiv")
class FDivergence(ParticleObjective):
    r"""Minimise a Csiszár f-divergence D_f[p, q] = E_q[f(p/q)], f named as in tfp.vi.

    ``f`` is one of TensorFlow Probability's ``tfp.vi`` Csiszár functions
    (:mod:`~pyro_elbo_lab.objectives.csiszar`): ``kl_reverse`` gives KL(q‖p), the
    ELBO's divergence (mode seeking); ``kl_forward`` KL(p‖q) (mode covering);
    ``amari_alpha`` the α-family between them; ``chi_square``/``pearson``,
    ``squared_hellinger``, ``jensen_shannon``, ``total_variation``, ``triangular``,
    ``jeffreys``, ``t_power``, ``log1p_abs``, ``modified_gan``, ``arithmetic_geometric``.

    The estimate is :math:`\frac1K \sum_k f(u_k)`, :math:`\log u_k = \log w_k - c`. With
    ``normalize_target=True`` (default) :math:`c = \log \frac1K\sum_j w_j` (held fixed),
    so :math:`u_k = K \tilde w_k` targets the *posterior* and the estimate is a
    consistent (biased at finite K) estimate of :math:`D_f[p(z\mid x), q]`. With
    ``False``, c = 0 and u is the unnormalised ratio :math:`p(x, z)/q(z)`, exactly what
    TFP's ``monte_carlo_variational_loss`` minimises — fine for normalised targets, but
    for data models :math:`w` is astronomically small or large and most f's underflow or
    overflow.

    Gradients: ``reparam`` differentiates the estimate through the draws; ``score``
    holds the draws fixed, :math:`\nabla \mathbb E_q[f] = \mathbb E_q[\nabla f +
    (f - b)\nabla \log q]`, with the leave-one-out mean of the other particles' f as the
    baseline b (K >= 2), so it needs no reparameterisation. ``auto`` (default) picks
    ``reparam`` for ``kl_reverse`` and ``score`` for every other f: with the
    self-normalised target, the reparameterised gradient of a mass-covering f drives q
    to collapse (all K draws alike make every :math:`u_k = 1`, so the estimate reads 0
    however far q is), measured on Normal–Normal for ``kl_forward`` and
    ``squared_hellinger``, while the score form fits both. ``kl_reverse`` is immune
    (its f is linear in log u, so the normaliser drops out of the gradient).

    :param f: the Csiszár function's TFP name.
    :param alpha: α of ``amari_alpha`` (TFP's default 1.0).
    :param t: t of ``t_power`` (TFP's default 0.5).
    :param self_normalized: TFP's flag: add the linear term making :math:`f'(1) = 0`.
    :param normalize_target: divide the weights by their batch mean (see above).
    :param gradient: ``auto``, ``reparam`` or ``score``.

    References: [1] I. Csiszár, "Information-type measures of difference of probability
    distributions", 1967. [2] TensorFlow Probability, ``tfp.vi.csiszar_divergence``.
    [3] D. Wang, H. Liu, Q. Liu, "Variational Inference with Tail-adaptive
    f-Divergence", NeurIPS 2018.
    """

    minimized = True
    #: refuses a model with parameters: a divergence's gradient in θ is not a bound's
    model_gradient = None

    default_num_particles = 8

    def __init__(
        self,
        f: str = "kl_reverse",
        alpha: float | None = None,
        t: float | None = None,
        self_normalized: bool = False,
        normalize_target: bool = True,
        gradient: str = "auto",
        **options: Any,
    ) -> None:
        if gradient not in GRADIENTS:
            raise ConfigError(f"objective.gradient must be one of {GRADIENTS}, got {gradient!r}")
        given = {key: value for key, value in (("alpha", alpha), ("t", t)) if value is not None}
        wanted = FAMILY_PARAMETERS.get(f, (None, None))[0]
        if set(given) - {wanted}:
            raise ConfigError(
                f"objective.{next(iter(set(given) - {wanted}))} does not apply to f={f!r} "
                f"(alpha is amari_alpha's, t is t_power's); leave it null"
            )
        self.f = csiszar_function(f, given.get(wanted), self_normalized)
        super().__init__(**options)
        self.name = f
        self.normalize_target = normalize_target
        if gradient == "auto":
            gradient = "reparam" if f in REPARAM_SAFE else "score"
        self.gradient = gradient
        self.requires_reparam = gradient == "reparam"
        self.detach_draws = gradient == "score"

    def _values(self, log_weights: torch.Tensor) -> torch.Tensor:
        """:math:`f(u_k)` per particle and group, ``[K, G]``."""
        if self.normalize_target:
            log_weights = log_weights - log_mean_exp(log_weights.detach(), 0)
        return self.f(log_weights)

    def bound(self, batch: ParticleBatch) -> torch.Tensor:
        return batch.groups.combine(self._values(batch.groups.log_weights).mean(0))

    def surrogate(self, batch: ParticleBatch) -> torch.Tensor | None:
        if self.gradient == "reparam":
            return None
        groups = batch.groups
        values = self._values(groups.log_weights)
        num = values.shape[0]
        signals = values.detach()
        if num > 1:
            signals = signals - leave_one_out_mean(signals, 0)
        score = groups.scaled_sum(signals * groups.log_q) / num
        return groups.combine(values.mean(0)) + score
