r"""The base every engine-built objective shares: Pyro's ``ELBO`` contract over log-weights.

A subclass states two things about a batch of K particles: the value of its bound
(a differentiable tensor) and, optionally, a surrogate whose gradient is its gradient
estimator. The base turns that into Pyro's interface:

- ``loss`` = −bound (a float, no gradients),
- ``differentiable_loss`` = a tensor whose value is −bound and whose gradient is the
  estimator's (so ``elbo(model, guide)`` modules and ``SVI`` both work),
- ``loss_and_grads`` = ``differentiable_loss(...).backward()`` and the loss.

Bounds can be formed over the joint weight of each particle, or per datapoint when every
latent is local to the data plate (see :class:`WeightGroups`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pyro import poutine
from pyro.infer import ELBO

from pyro_elbo_lab.errors import ConfigError, require_positive_int
from pyro_elbo_lab.objectives.compiled import CompiledPath
from pyro_elbo_lab.objectives.particles import (
    LogWeights,
    guess_max_plate_nesting,
    model_has_params,
    model_log_density_at_stopped_latents,
    sample_log_weights,
)


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


def log_mean_exp(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """:math:`\\log \\frac1K \\sum_k e^{v_k}`, stable."""
    return values.logsumexp(dim) - math.log(values.shape[dim])


def leave_one_out_mean(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    r""":math:`\frac{1}{K-1}\sum_{j \ne k} v_j` for every k along ``dim`` (K >= 2)."""
    return (values.sum(dim, keepdim=True) - values) / (values.shape[dim] - 1)


def log_sum_exp_without_each(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    r""":math:`\log \sum_{j \ne k} e^{v_j}` for every k along ``dim``, in O(K).

    From the full sum, :math:`\log S + \log(1 - e^{v_k - \log S})`, which is exact
    except for a term that dominates S; that one (the maximum) is summed directly.
    """
    total = values.logsumexp(dim, keepdim=True)
    without = total + torch.log(-torch.expm1((values - total).clamp(max=0.0)))
    top = values.argmax(dim, keepdim=True)
    rest = values.scatter(dim, top, -math.inf).logsumexp(dim, keepdim=True)
    return without.scatter(dim, top, rest)


class ParticleBatch:
    """One pass of K particles, as an objective sees it: the raw weights and their groups."""

    def __init__(self, weights: LogWeights, per_datapoint: bool, stopped_latent_log_p: Callable):
        self.weights = weights
        self.groups = group_weights(weights, per_datapoint)
        self._stopped_latent_log_p = stopped_latent_log_p

    def stopped_latent_log_p(self) -> WeightGroups | None:
        """:math:`\\log p_\\theta(x, \\bar z)` grouped like the weights (one more model pass);
        None when the model has no parameters (nothing to differentiate)."""
        return self._stopped_latent_log_p()


class ParticleObjective(ELBO):
    """Base for objectives computed from K vectorised particles of the shared engine.

    :param num_particles: K, the number of particles per step.
    :param max_plate_nesting: plate depth of the model (guessed on first use if omitted).
    :param vectorize_particles: must be True: particles are always one vectorised pass,
        which needs a model and guide of static structure.
    :param per_datapoint: form the bound per datapoint (see :class:`WeightGroups`).
    :param data_plate: name of the model's data plate, for ``per_datapoint``.
    :param compile: trace model and guide once into a pure step (parameters, data,
        noise) -> (loss, gradients) and run it through ``torch.compile``
        (:mod:`~pyro_elbo_lab.objectives.compiled`); models that are not static fall
        back to the eager engine with a warning saying why.
    :param compile_options: keyword arguments for ``torch.compile`` (e.g.
        ``{"mode": "reduce-overhead"}`` for CUDA graphs on a GPU).
    """

    #: Whether the estimator needs log q with the variational parameters stopped.
    needs_stopped_guide: bool = False
    #: Whether every guide site must be reparameterisable (path-derivative estimators).
    requires_reparam: bool = True
    #: Whether the particles are detached draws (score-function estimators): gradients
    #: then reach the parameters only through the log densities.
    detach_draws: bool = False
    #: Whether the objective weighs stratified particles (a mixture guide drawing one
    #: particle per component, Morningstar et al. 2021) by their stratum weights.
    supports_stratified: bool = False
    #: Whether the objective's value is minimised (loss = +value: an upper bound, a
    #: divergence) instead of maximised (loss = −value: a lower bound).
    minimized: bool = False
    #: Whether ``per_datapoint`` is meaningful for this objective.
    supports_per_datapoint: ClassVar[bool] = True

    def __init__(
        self,
        num_particles: int = 1,
        max_plate_nesting: int | None = None,
        vectorize_particles: bool = True,
        per_datapoint: bool = False,
        data_plate: str = "data",
        *,
        compile: bool = False,
        compile_options: dict | None = None,
    ) -> None:
        require_positive_int("objective.num_particles", num_particles)
        if not vectorize_particles:
            raise ConfigError(
                f"{type(self).__name__} always vectorises its particles (one pass for all K, "
                "which needs static model structure); set vectorize_particles=true, or use "
                "one of Pyro's objectives for a model whose structure changes between runs"
            )
        if per_datapoint and not self.supports_per_datapoint:
            raise ConfigError(
                f"{type(self).__name__} has no per-datapoint form; use per_datapoint=false"
            )
        if max_plate_nesting is not None:
            require_positive_int("objective.max_plate_nesting", max_plate_nesting, minimum=0)
        self.model_plate_nesting = max_plate_nesting
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=math.inf if max_plate_nesting is None else max_plate_nesting,
            vectorize_particles=True,
        )
        self.per_datapoint = per_datapoint
        self.data_plate = data_plate
        self.compiled = CompiledPath(compile_options) if compile else None

    # -- what subclasses define -------------------------------------------------------
    def bound(self, batch: ParticleBatch) -> torch.Tensor:
        """The bound's Monte Carlo estimate, differentiable (autodiff gives its gradient)."""
        raise NotImplementedError

    def surrogate(self, batch: ParticleBatch) -> torch.Tensor | None:
        """A tensor whose gradient is the estimator's, or None to differentiate the bound."""
        return None

    def on_step(self) -> None:
        """Called once per optimisation step (``loss_and_grads``), e.g. for schedules."""

    def compile_state(self) -> tuple:
        """The objective's own state that its traced step bakes in (e.g. a warm-up
        phase): a compiled step is built per distinct value."""
        return ()

    #: Whether a step reads and replaces tensors of the objective's own state (e.g.
    #: MCMC chain states): a compiled step then takes them in and hands them back.
    carries_state: ClassVar[bool] = False

    def compile_carry(self) -> list[torch.Tensor]:
        """The state tensors a step reads (before it) or leaves (after it)."""
        return []

    def load_compile_carry(self, values: list[torch.Tensor]) -> None:
        """Take ``values`` (as :meth:`compile_carry` lists them) as the state."""

    def guide_values(self, guide: Callable, args: tuple, kwargs: dict) -> poutine.Trace | None:
        """Particle-batched guide values to weigh instead of fresh draws (e.g. chain
        states), or None for fresh draws."""
        return None

    # -- Pyro's ELBO interface --------------------------------------------------------
    def _batch(self, model: Callable, guide: Callable, args: tuple, kwargs: dict, stop: bool):
        if self.model_plate_nesting is None:
            self.model_plate_nesting = guess_max_plate_nesting(model, guide, args, kwargs)
        weights = sample_log_weights(
            model,
            guide,
            args,
            kwargs,
            num_particles=self.num_particles,
            max_plate_nesting=self.model_plate_nesting,
            stop_guide_params=stop,
            require_reparam=self.requires_reparam,
            data_plate=self.data_plate,
            detach_draws=self.detach_draws,
            guide_values=self.guide_values(guide, args, kwargs),
            stratify=self.supports_stratified,
        )
        return ParticleBatch(
            weights,
            self.per_datapoint,
            lambda: self._stopped_latent_groups(model, weights, args, kwargs),
        )

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        """Pyro's hook: the (model, guide) traces of one vectorised pass."""
        weights = self._batch(model, guide, args, kwargs, stop=False).weights
        return weights.model_trace, weights.guide_trace

    @property
    def _loss_sign(self) -> float:
        return 1.0 if self.minimized else -1.0

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """−bound (+value when minimised), estimated from one batch of K particles."""
        with torch.no_grad():
            bound = self.bound(self._batch(model, guide, args, kwargs, stop=False))
        return self._loss_sign * float(bound)

    def differentiable_loss(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Value −bound (+value when minimised); gradient the objective's estimator."""
        if self.compiled is None:
            return self._eager_differentiable_loss(model, guide, args, kwargs)
        return self.compiled.differentiable_loss(
            lambda a, k: self._eager_differentiable_loss(model, guide, a, k),
            model,
            guide,
            args,
            kwargs,
            self.compile_state(),
            carry=self,
        )

    def _eager_differentiable_loss(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> torch.Tensor:
        batch = self._batch(model, guide, args, kwargs, stop=self.needs_stopped_guide)
        bound = self.bound(batch)
        surrogate = self.surrogate(batch)
        if surrogate is not None:
            bound = bound.detach() + (surrogate - surrogate.detach())
        return self._loss_sign * bound

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """Backpropagate the estimator into the parameters' ``.grad``; return the loss."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        self.on_step()
        return float(loss.detach())

    def _stopped_latent_groups(
        self, model: Callable, weights: LogWeights, args: tuple, kwargs: dict
    ) -> WeightGroups | None:
        if not model_has_params(weights):
            return None
        total, local = model_log_density_at_stopped_latents(
            model, weights, args, kwargs, self.model_plate_nesting, self.data_plate
        )
        if self.per_datapoint:
            return WeightGroups(local, None, torch.zeros_like(total), weights.local_scale, True)
        return WeightGroups(total.unsqueeze(-1), None, torch.zeros_like(total), 1.0, False)


def path_surrogate(
    batch: ParticleBatch,
    guide_coefficients: torch.Tensor,
    model_coefficients: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""A surrogate whose gradient is a doubly-reparameterised estimator.

    .. math::

        \nabla_\phi:\ \sum_k c_k \frac{\partial \log w_k}{\partial z_k}
            \frac{\partial z_k}{\partial \phi}, \qquad
        \nabla_\theta:\ \sum_k m_k \nabla_\theta \log p_\theta(x, z_k),

    built as :math:`\sum_k \bar c_k (\log p(x,z_k) - \log q_{\bar\phi}(z_k))
    + \sum_k (\bar m_k - \bar c_k) \log p_\theta(x, \bar z_k)` (bars: stopped), per group.
    The second term corrects the model gradient and costs one more model pass; it is
    skipped when ``model_coefficients`` is None (m = c) or the model has no parameters.
    """
    groups = batch.groups
    surrogate = groups.combine((guide_coefficients.detach() * groups.stopped_log_weights).sum(0))
    if model_coefficients is not None:
        stopped = batch.stopped_latent_log_p()
        if stopped is not None:
            correction = (model_coefficients - guide_coefficients).detach() * stopped.log_weights
            surrogate = surrogate + stopped.scaled_sum(correction)
    return surrogate
