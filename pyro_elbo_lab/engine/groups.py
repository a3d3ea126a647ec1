r"""Log-weights arranged for a bound: jointly per particle, or per particle and datapoint."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyro_elbo_lab.engine.logmath import log_mean_exp
from pyro_elbo_lab.engine.particles import LogWeights
from pyro_elbo_lab.errors import ConfigError


@dataclass
class WeightGroups:
    r"""Log-weights arranged as ``[K, G]``: G groups, each reduced over its K particles.

    Joint form (G = 1): :math:`\log w_k` of the whole program. Per-datapoint form
    (G = N): :math:`\log w_{kn} = \log p(x_n, z_{kn}) - \log q(z_{kn})` for models whose
    latents are all local, scaled by ``scale`` (N / batch size under subsampling), with
    the remaining terms (observed sites outside the plate) in ``offset`` (``[K]``).
    A bound built from a per-group reduction :math:`r` is
    :math:`\bar{\mathrm{offset}} + \mathrm{scale}\sum_g r(\log w_{\cdot g})`.
    """

    log_weights: torch.Tensor
    stopped_log_weights: torch.Tensor | None
    offset: torch.Tensor
    #: a scalar, or ``[G]`` per datapoint under a tensor-valued ``poutine.scale``
    scale: torch.Tensor | float
    per_datapoint: bool
    #: :math:`\log q(z_{kg})` of each group's latents (score-function estimators need it)
    log_q: torch.Tensor | None = None
    #: :math:`\log \pi_k` ``[K, 1]`` of stratified particles; None: iid, :math:`\pi_k = 1/K`
    log_particle_weights: torch.Tensor | None = None

    def particle_mean(self, values: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_k \pi_k v_{kg}`: the mean over particles, stratum-weighted."""
        if self.log_particle_weights is None:
            return values.mean(0)
        return (self.log_particle_weights.exp() * values).sum(0)

    def particle_log_mean_exp(self, values: torch.Tensor) -> torch.Tensor:
        r""":math:`\log \sum_k \pi_k e^{v_{kg}}`: log-mean-exp over particles, stratum-weighted."""
        if self.log_particle_weights is None:
            return log_mean_exp(values, 0)
        return (self.log_particle_weights + values).logsumexp(0)

    def scaled_sum(self, values: torch.Tensor) -> torch.Tensor:
        """:math:`\\sum \\mathrm{scale}_g v_{\\cdot g}`: every entry of ``values``
        (last dim: groups), each group at its scale."""
        return (self.scale * values).sum()

    def combine(self, per_group: torch.Tensor) -> torch.Tensor:
        """:math:`\\bar{\\mathrm{offset}} + \\sum_g \\mathrm{scale}_g` ``per_group``."""
        return self.offset.mean() + self.scaled_sum(per_group)


def group_weights(weights: LogWeights, per_datapoint: bool) -> WeightGroups:
    """Arrange ``weights`` jointly (``[K, 1]``) or per datapoint (``[K, N]``)."""
    stopped = weights.log_q_stopped is not None
    strata = weights.log_particle_weights
    if not per_datapoint:
        return WeightGroups(
            log_weights=weights.log_weights.unsqueeze(-1),
            stopped_log_weights=weights.stopped_log_weights().unsqueeze(-1) if stopped else None,
            offset=torch.zeros_like(weights.log_p),
            scale=1.0,
            per_datapoint=False,
            log_q=weights.log_q.unsqueeze(-1),
            log_particle_weights=None if strata is None else strata.unsqueeze(-1),
        )
    if strata is not None:
        raise ConfigError(
            "per_datapoint bounds need iid particles per datapoint, but the guide drew its "
            "particles by strata (a mixture over all latents); use per_datapoint=false"
        )
    if weights.global_latent_sites:
        raise ConfigError(
            "per_datapoint bounds are valid only when every latent is local to the data plate, "
            f"but {list(weights.global_latent_sites)} are global (a per-datapoint bound would "
            "count them once per point); use per_datapoint=false"
        )
    if weights.local_scale is None:
        raise ConfigError(
            "per_datapoint bounds need one scale per datapoint, shared by every site in the "
            "data plate, but a poutine.scale varies within a datapoint or between its sites; "
            "use per_datapoint=false"
        )
    local = weights.local_log_weights()
    offset = weights.log_weights - (weights.local_scale * local).sum(-1)
    return WeightGroups(
        log_weights=local,
        stopped_log_weights=weights.local_log_weights(stopped=True) if stopped else None,
        offset=offset,
        scale=weights.local_scale,
        per_datapoint=True,
        log_q=torch.zeros_like(local) if weights.local_log_q is None else weights.local_log_q,
    )
