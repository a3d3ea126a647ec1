r"""The χ upper bound CUBO_n (CHIVI), minimised in log space."""

from __future__ import annotations

import math
from typing import Any

import torch

from pyro_elbo_lab.engine import log_sum_exp_without_each
from pyro_elbo_lab.errors import ConfigError, require_positive_int
from pyro_elbo_lab.objectives.base import ParticleBatch
from pyro_elbo_lab.objectives.renyi import RenyiBound
from pyro_elbo_lab.registry import objectives

#: Largest exponent of a gradient coefficient before the batch's coefficients are rescaled.
MAX_EXPONENT = 30.0


@objectives.register("cubo")
class CUBO(RenyiBound):
    r"""The χ upper bound of CHIVI (Dieng et al. 2017), minimised.

    .. math::

        \mathrm{CUBO}_n = \frac1n \log \mathbb E_q\big[w^n\big] \;\ge\; \log p(x),
        \qquad w = \frac{p(x, z)}{q(z)},\ n > 1,

    an upper bound by Jensen (:math:`\log` of the n-th moment over n exceeds the log of
    the first), with gap :math:`\frac1n \log(1 + D_{\chi^n}(p(z\mid x)\,\|\,q))`, so
    minimising it fits q by a χ-divergence: mass-covering, like forward KL.
    Its value is the Rényi bound's at :math:`\alpha = 1 - n` (:class:`RenyiBound`).

    The estimate is computed in log space:
    :math:`\widehat{\mathrm{CUBO}}_n = \frac1n \operatorname{logmeanexp}_k(n \log w_k)`.
    Its gradient is *not* the gradient of that estimate: the self-normalised
    :math:`\sum_k \hat w_k \nabla\log w_k`, :math:`\hat w_k \propto w_k^n`, is so biased at
    small K when q is wider than the posterior that its mean points the wrong way (we
    measured it on Normal–Normal at K = 16). Dieng et al. instead minimise
    :math:`\mathbb E_q[w^n]`, whose reparameterised gradient
    :math:`n\,\mathbb E[w^n \nabla \log w]` has an unbiased estimate; we use it scaled by
    the leave-one-out mean of the other particles' :math:`w^n`,

    .. math::

        g = \frac1K \sum_k \frac{w_k^n}{\frac{1}{K-1}\sum_{j\ne k} w_j^n}\,\nabla \log w_k,

    whose normaliser is independent of :math:`z_k`, so :math:`\mathbb E[g]` is a positive
    multiple of :math:`\nabla \mathrm{CUBO}_n` (unbiased direction), computed from log
    weights (no raw :math:`w^n` is formed). The coefficients are rescaled together only
    if one exceeds :math:`e^{30}`.

    **The bound needs q wider than the posterior in places**: :math:`\mathbb E_q[w^2]` is
    infinite when q's tails are lighter than the posterior's (for Gaussians, any
    direction with :math:`\sigma_q < \sigma_p/\sqrt2`), and then no estimate means
    anything. And even where it is finite, a q far from the posterior is pushed *away*:
    its K draws rarely reach the region where :math:`w^n q` concentrates (beyond the
    posterior mode, seen from q), and the best-weighted draw sits between the two, where
    :math:`\nabla_z \log p` points the other way (measured: a Gaussian guide 9 posterior
    standard deviations off runs away). ``warmup_steps`` therefore follows the ELBO's
    gradient for the first steps (reverse KL brings q onto the posterior's bulk) before
    switching to CUBO; the reported loss is the CUBO estimate throughout.

    **The K-sample estimate is biased low** (a log of a mean, by Jensen) and heavy-tailed
    in :math:`w^n`: with few samples it falls *below* log p(x) — on a Gaussian toy, 41%
    of 10-sample estimates did. Treat the training loss as a heuristic; the lab's
    evaluation reports CUBO with its sample size and warns below 10 000 samples.

    :param n: the moment, n > 1 (2 is the χ² bound of the paper).
    :param num_particles: K >= 2 per step; larger K reduces the low bias.
    :param warmup_steps: optimisation steps that follow the ELBO gradient first.

    References: A. B. Dieng, D. Tran, R. Ranganath, J. Paisley, D. M. Blei, "Variational
    Inference via χ Upper Bound Minimization", NeurIPS 2017.
    """

    minimized = True
    #: refuses a model with parameters: minimising an upper
    #: bound in θ would lower log p(x), not fit it
    model_gradient = None
    supports_per_datapoint = False

    default_num_particles = 16
    min_particles = 2

    def __init__(
        self,
        n: float = 2.0,
        warmup_steps: int = 100,
        **options: Any,
    ) -> None:
        if not (isinstance(n, int | float) and math.isfinite(n) and n > 1):
            raise ConfigError(
                f"objective.n must be a finite number > 1, got {n!r}: CUBO_n bounds log p(x) "
                "from above only for n > 1 (n=2 is CHIVI's chi-square bound)"
            )
        super().__init__(1.0 - n, **options)
        require_positive_int("objective.warmup_steps", warmup_steps, minimum=0)
        self.n = float(n)
        self.supports_stratified = False  # its LOO-normalised gradient assumes iid draws
        self.warmup_steps = warmup_steps
        self.steps_taken = 0

    def on_step(self) -> None:
        self.steps_taken += 1

    def compile_state(self) -> tuple:
        return (self.steps_taken < self.warmup_steps,)  # ELBO warm-up or CUBO

    def reset(self) -> None:
        """Start the ELBO warm-up over (before fitting another guide)."""
        self.steps_taken = 0

    def surrogate(self, batch: ParticleBatch) -> torch.Tensor:
        log_weights = batch.groups.log_weights
        if self.steps_taken < self.warmup_steps:
            return -batch.groups.combine(log_weights.mean(0))  # minimised: -ELBO
        powered = self.n * log_weights.detach()
        log_others = log_sum_exp_without_each(powered, 0) - math.log(powered.shape[0] - 1)
        exponents = powered - log_others
        # Only a particle dominating by e^30 trips this; the direction is then degenerate anyway.
        excess = (exponents.max() - MAX_EXPONENT).clamp(min=0.0)
        coefficients = torch.exp(exponents - excess)
        return batch.groups.combine((coefficients * log_weights).mean(0))
