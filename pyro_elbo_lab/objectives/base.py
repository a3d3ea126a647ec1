r"""The base every engine-built objective shares: Pyro's ``ELBO`` contract over log-weights.

A subclass states two things about a batch of K particles: the value of its bound
(a differentiable tensor) and, optionally, a surrogate whose gradient is its gradient
estimator. The base turns that into Pyro's interface:

- ``loss`` = −bound (a float, no gradients),
- ``differentiable_loss`` = a tensor whose value is −bound and whose gradient is the
  estimator's (so ``elbo(model, guide)`` modules and ``SVI`` both work),
- ``loss_and_grads`` = ``differentiable_loss(...).backward()`` and the loss.

Bounds can be formed over the joint weight of each particle, or per datapoint when every
latent is local to the data plate (:class:`~pyro_elbo_lab.engine.groups.WeightGroups`).
The machinery (the particle pass, strata, stopped parameters, checks, the compiled
path) is the engine's (:mod:`pyro_elbo_lab.engine`); an objective is its bound, its
gradient estimator and the facts the lab checks before compute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from pyro import poutine
from pyro.infer import ELBO

from pyro_elbo_lab.engine import (
    CompiledPath,
    EngineOptions,
    LatentGradientScale,
    LogWeights,
    WeightGroups,
    group_weights,
    guess_max_plate_nesting,
    model_has_params,
    model_log_density_at_stopped_latents,
    refuse_model_parameters,
    sample_log_weights,
)
from pyro_elbo_lab.errors import ConfigError, require_positive_int


class ParticleBatch:
    """One pass of K particles, as an objective sees it: the raw weights and their groups,
    and, for doubly-reparameterised estimators, the scale of the latents' gradient path
    through the model (filled by the surrogate, read by backward)."""

    def __init__(
        self,
        weights: LogWeights,
        per_datapoint: bool,
        stopped_latent_log_p: Callable,
        gradient_scale: LatentGradientScale | None = None,
    ):
        self.weights = weights
        self.groups = group_weights(weights, per_datapoint)
        self._stopped_latent_log_p = stopped_latent_log_p
        self.gradient_scale = gradient_scale

    def stopped_latent_log_p(self) -> WeightGroups | None:
        """:math:`\\log p_\\theta(x, \\bar z)` grouped like the weights (one more model pass);
        None when the model has no parameters (nothing to differentiate)."""
        return self._stopped_latent_log_p()


class ParticleObjective(ELBO):
    """Base for objectives computed from K vectorised particles of the shared engine.

    Every subclass takes its own parameters and, by keyword, the engine's
    (:class:`~pyro_elbo_lab.engine.options.EngineOptions`: Pyro's ELBO keywords,
    ``num_particles``, ``max_plate_nesting``, ``vectorize_particles``, ``retain_graph``,
    ..., and ``per_datapoint``, ``data_plate``, ``compile``, ``compile_options``),
    checked in one place. The facts the lab reads before any
    compute are attributes of the instance (they can depend on its options).
    """

    #: the engine options' type: the registry checks configs against its fields
    options_type: ClassVar[type[EngineOptions]] = EngineOptions
    #: K when the config gives none, and the fewest K the estimator is defined for
    default_num_particles: ClassVar[int] = 1
    min_particles: ClassVar[int] = 1
    #: Whether the estimator needs log q with the variational parameters stopped.
    needs_stopped_guide: bool = False
    #: Whether its surrogate weighs the model's parameters and the latents' path
    #: differently (:func:`path_surrogate` with model coefficients): the model then sees
    #: the latents through a :class:`~pyro_elbo_lab.engine.LatentGradientScale`, in one pass.
    scales_latent_gradients: bool = False
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
    #: Whether the objective marginalises enumerated discrete sites (none here do).
    enumerates: ClassVar[bool] = False
    #: Whether ``loss`` reports the objective's value (all of ours do).
    reports_loss: ClassVar[bool] = True
    #: Whether ``per_datapoint`` is meaningful for this objective.
    supports_per_datapoint: ClassVar[bool] = True
    #: Whether a step reads and replaces tensors of the objective's own state (e.g.
    #: MCMC chain states): a compiled step then takes them in and hands them back.
    carries_state: ClassVar[bool] = False
    #: What trains the model's parameters θ: ``bound`` (the gradient of :meth:`bound`,
    #: with the guide's draws held), ``iwae`` (wake-θ: the IWAE bound's gradient), or
    #: None: the objective refuses a model with parameters (its θ-gradient is not the
    #: gradient of a bound).
    model_gradient: ClassVar[str | None] = "bound"

    def __init__(self, **options: Any) -> None:
        self.options = EngineOptions.of(
            type(self).__name__, {"num_particles": self.default_num_particles}, options
        )
        require_positive_int(
            "objective.num_particles", self.options.num_particles, minimum=self.min_particles
        )
        if self.options.per_datapoint and not self.supports_per_datapoint:
            raise ConfigError(
                f"{type(self).__name__} has no per-datapoint form; use per_datapoint=false"
            )
        #: the model's plate depth; guessed on first use when not given
        self.model_plate_nesting = self.options.max_plate_nesting
        super().__init__(**self.options.pyro_keywords())
        self.compiled = CompiledPath(self.options.compile_options) if self.options.compile else None

    @property
    def per_datapoint(self) -> bool:
        return self.options.per_datapoint

    @property
    def data_plate(self) -> str:
        return self.options.data_plate

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
        scale = LatentGradientScale() if stop and self.scales_latent_gradients else None
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
            latent_gradient_scale=scale,
        )
        if self.model_gradient is None and model_has_params(weights):
            name = next(n for n, s in weights.model_trace.nodes.items() if s["type"] == "param")
            raise refuse_model_parameters(f"{type(self).__name__}", name)
        return ParticleBatch(
            weights,
            self.per_datapoint,
            lambda: self._stopped_latent_groups(model, weights, args, kwargs),
            scale,
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
        \nabla_\theta:\ \sum_k m_k \nabla_\theta \log p_\theta(x, z_k).

    With the batch's :class:`~pyro_elbo_lab.engine.LatentGradientScale` (one model pass,
    the model seeing :math:`\zeta_k`, whose gradient path is scaled by
    :math:`h_k = c_k/m_k`): :math:`\sum_k \bar m_k \log p_\theta(x, \zeta_k) - \bar c_k \log
    q_{\bar\phi}(z_k)`. Without it: :math:`\sum_k \bar c_k (\log p(x,z_k) - \log q_{\bar\phi}(z_k))
    + \sum_k (\bar m_k - \bar c_k) \log p_\theta(x, \bar z_k)`, whose second term costs
    one more model pass at stopped latents (skipped when m = c or the model has no
    parameters). Bars: stopped; both forms per group.
    """
    groups = batch.groups
    guide_coefficients = guide_coefficients.detach()
    scale = batch.gradient_scale
    if model_coefficients is not None and scale is not None:
        model_coefficients = model_coefficients.detach()
        positive = model_coefficients > 0
        ratio = guide_coefficients / torch.where(positive, model_coefficients, 1.0)
        scale.value = torch.where(positive, ratio, 0.0)
        log_p = groups.log_weights + groups.log_q
        log_q_stopped = log_p - groups.stopped_log_weights
        per_group = model_coefficients * log_p - guide_coefficients * log_q_stopped
        return groups.combine(per_group.sum(0))
    surrogate = groups.combine((guide_coefficients * groups.stopped_log_weights).sum(0))
    if model_coefficients is not None:
        stopped = batch.stopped_latent_log_p()
        if stopped is not None:
            correction = (model_coefficients - guide_coefficients).detach() * stopped.log_weights
            surrogate = surrogate + stopped.scaled_sum(correction)
    return surrogate
