r"""The shared engine: K particles of (model, guide) in one vectorised pass.

Most variational objectives are functions of the per-particle log importance weights

.. math::

    \log w_k = \log p(x, z_k) - \log q_\phi(z_k), \qquad z_k \sim q_\phi,

so every objective in this package asks :func:`sample_log_weights` for them and reduces
them its own way. The particles are a ``pyro.plate`` left of the model's plates, so model
and guide run once for all K (no Python loop over particles or data). Besides the weights
the engine returns what gradient estimators need:

- ``log_q_stopped``: :math:`\log q_{\bar\phi}(z_k)` with the variational parameters
  stopped, so that gradients flow only through the sample path :math:`z_k(\phi)`
  (sticking the landing, Roeder et al. 2017; DReG, Tucker et al. 2018);
- per-datapoint log-weights :math:`\log w_{kn}` of the sites local to the data plate,
  where the model has one;
- :func:`model_log_density_at_stopped_latents`: :math:`\log p_\theta(x, \bar z_k)` with
  the latents detached, which carries model-parameter gradients without a path to
  :math:`\phi`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match, check_site_shape

from pyro_elbo_lab.engine.checks import (
    check_latents,
    not_vectorisable,
    require_batch_dims_in_plates,
)
from pyro_elbo_lab.engine.gradient_scale import LatentGradientScale
from pyro_elbo_lab.engine.parameters import (
    DetachedParameters,
    clear_transform_caches,
    stopped_call,
)
from pyro_elbo_lab.engine.program import detached_values, particle_plate
from pyro_elbo_lab.engine.reduce import SiteReducer
from pyro_elbo_lab.engine.stopped import stopped_guide_trace
from pyro_elbo_lab.engine.strata import StratifiedParticles
from pyro_elbo_lab.errors import ConfigError, first_line


@dataclass
class LogWeights:
    """Per-particle log densities from one vectorised pass (shapes: ``[K]``, ``[K, N]``).

    ``log_p``/``log_q`` sum every site with its plate scaling (as Pyro's ELBOs do).
    The ``local_*`` fields, present when the model has a data plate, hold the unscaled
    (masked) log densities of the sites inside it per datapoint, and ``local_scale`` the
    factor those sites' scale applies to each datapoint: N / batch size under
    subsampling, a ``[N]`` tensor under a tensor-valued ``poutine.scale``, or None when
    the data plate's sites are scaled differently (then no per-datapoint form exists).
    """

    log_p: torch.Tensor
    log_q: torch.Tensor
    log_q_stopped: torch.Tensor | None
    local_log_p: torch.Tensor | None
    local_log_q: torch.Tensor | None
    local_log_q_stopped: torch.Tensor | None
    local_scale: torch.Tensor | None
    global_latent_sites: tuple[str, ...]
    model_trace: poutine.Trace
    guide_trace: poutine.Trace
    #: the guide trace with its subsample sites, to replay the same minibatch
    replay_trace: poutine.Trace
    #: :math:`\log \pi_k` of a stratified guide's particles (None: iid, :math:`\pi_k = 1/K`)
    log_particle_weights: torch.Tensor | None = None

    @property
    def log_weights(self) -> torch.Tensor:
        """:math:`\\log w_k = \\log p(x, z_k) - \\log q(z_k)`, shape ``[K]``."""
        return self.log_p - self.log_q

    @property
    def num_particles(self) -> int:
        return int(self.log_p.shape[0])

    def stopped_log_weights(self) -> torch.Tensor:
        """:math:`\\log p(x, z_k) - \\log q_{\\bar\\phi}(z_k)`: gradients only through z."""
        if self.log_q_stopped is None:
            raise RuntimeError("sample_log_weights(..., stop_guide_params=True) is needed")
        return self.log_p - self.log_q_stopped

    def local_log_weights(self, stopped: bool = False) -> torch.Tensor:
        """:math:`\\log w_{kn}` of the sites local to the data plate, shape ``[K, N]``."""
        if self.local_log_p is None:
            raise ConfigError(
                "per-datapoint weights need a model whose observations sit in its data plate "
                "(LatentVariableModel.data_plate) and a data_plate name given to the objective"
            )
        log_q = self.local_log_q_stopped if stopped else self.local_log_q
        return self.local_log_p if log_q is None else self.local_log_p - log_q


def sample_log_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    *,
    num_particles: int,
    max_plate_nesting: int,
    stop_guide_params: bool = False,
    require_reparam: bool = False,
    data_plate: str | None = None,
    guide_values: poutine.Trace | None = None,
    detach_draws: bool = False,
    stratify: bool = False,
    strata_group: int | None = None,
    latent_gradient_scale: LatentGradientScale | None = None,
) -> LogWeights:
    """Draw ``num_particles`` particles from ``guide`` and weigh them under ``model``.

    :param max_plate_nesting: the model's plate depth (not counting particles).
    :param stop_guide_params: also compute :math:`\\log q_{\\bar\\phi}(z_k)`: from the
        drawn sites' distributions with their parameters detached where the guide's sites
        are independent given the data (:mod:`~pyro_elbo_lab.engine.stopped`), else by
        replaying the guide with its parameters detached
        (:func:`~pyro_elbo_lab.engine.parameters.stopped_call`). Parameters of modules that a
        hand-written guide only registers with ``pyro.module`` are not stopped.
    :param require_reparam: raise :class:`ConfigError` when a guide site cannot be
        reparameterised (the objective's gradient would silently lose its score term).
    :param data_plate: name of the model's data plate, for per-datapoint weights.
    :param guide_values: a trace of particle-batched guide sites to use instead of fresh
        draws (replayed outside the particle plate, so sites still broadcast), e.g. the
        states of MCMC chains; sites it lacks are drawn or computed as usual.
    :param detach_draws: weigh detached draws, so that gradients reach the parameters
        only through the densities :math:`\\log p_\theta(x, \bar z)` and
        :math:`\\log q_\\phi(\bar z)` (score-function estimators; works for any guide).
        Costs one more guide pass.
    :param stratify: draw a guide's ``stratifiable`` mixture sites by strata
        (:class:`~pyro_elbo_lab.engine.strata.StratifiedParticles`); their weights come
        back in ``log_particle_weights``.
    :param strata_group: with ``stratify``, particles per estimate: each consecutive
        group of this many holds a complete stratified set (None: all of them).
    :param latent_gradient_scale: the model sees the latents through it, so that their
        gradient path is scaled per particle (:mod:`~pyro_elbo_lab.engine.gradient_scale`).
    """
    plate = particle_plate(num_particles, max_plate_nesting)
    strata = StratifiedParticles(num_particles, max_plate_nesting + 1, strata_group)
    # inside the particle plate, so that it stratifies a site before the plate broadcasts it
    plated_guide = plate(strata(guide) if stratify else guide)
    if detach_draws and guide_values is None:
        guide_values = detached_values(poutine.trace(plated_guide).get_trace(*args, **kwargs))
    if guide_values is not None:
        plated_guide = poutine.replay(plated_guide, trace=guide_values)
    try:
        guide_trace = poutine.trace(plated_guide).get_trace(*args, **kwargs)
        seen = guide_trace
        if latent_gradient_scale is not None:
            seen = latent_gradient_scale.wrap(guide_trace, max_plate_nesting, data_plate)
        model_trace = poutine.trace(poutine.replay(plate(model), trace=seen)).get_trace(
            *args, **kwargs
        )
    except ConfigError as error:
        # Pyro's trace appends the trace's shapes to errors raised inside it: one line
        raise ConfigError(first_line(error)) from error
    except (RuntimeError, ValueError, IndexError) as error:
        raise not_vectorisable(model, guide, args, kwargs, plate, error) from error
    latent_guide_trace = prune_subsample_sites(guide_trace)
    full_model_trace, model_trace = model_trace, prune_subsample_sites(model_trace)
    check_latents(model_trace, latent_guide_trace, require_reparam=require_reparam)
    if is_validation_enabled():
        check_model_guide_match(full_model_trace, guide_trace, max_plate_nesting + 1)
    model_trace.compute_log_prob()
    latent_guide_trace.compute_log_prob()
    for trace in (model_trace, latent_guide_trace):
        require_batch_dims_in_plates(trace, max_plate_nesting)
    if is_validation_enabled():
        for trace in (model_trace, latent_guide_trace):
            for site in trace.nodes.values():
                if site["type"] == "sample":
                    check_site_shape(site, max_plate_nesting + 1)

    stopped_trace = None
    if stop_guide_params:
        stopped_trace = stopped_guide_trace(guide, latent_guide_trace)
        if stopped_trace is None:
            stopped_trace = _replay_with_stopped_params(guide, guide_trace, plate, args, kwargs)

    reduce = SiteReducer(num_particles, max_plate_nesting, data_plate)
    log_p = reduce.total(model_trace)
    return LogWeights(
        log_p=log_p,
        log_q=reduce.total(latent_guide_trace, empty=log_p),
        log_q_stopped=None if stopped_trace is None else reduce.total(stopped_trace, empty=log_p),
        local_log_p=reduce.local(model_trace),
        local_log_q=reduce.local(latent_guide_trace),
        local_log_q_stopped=None if stopped_trace is None else reduce.local(stopped_trace),
        local_scale=reduce.local_scale(model_trace),
        global_latent_sites=reduce.global_latents(latent_guide_trace),
        model_trace=model_trace,
        guide_trace=latent_guide_trace,
        replay_trace=guide_trace,
        log_particle_weights=strata.log_weights,
    )


def model_log_density_at_stopped_latents(
    model: Callable[..., Any],
    weights: LogWeights,
    args: tuple,
    kwargs: dict,
    max_plate_nesting: int,
    data_plate: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r""":math:`\log p_\theta(x, \bar z_k)`: model gradients with no path to φ.

    Returns the per-particle total ``[K]`` and, given ``data_plate``, the unscaled
    per-datapoint part ``[K, N]`` (as in :class:`LogWeights`).
    """
    detached = detached_values(weights.replay_trace)
    plate = particle_plate(weights.num_particles, max_plate_nesting)
    trace = poutine.trace(poutine.replay(plate(model), trace=detached)).get_trace(*args, **kwargs)
    trace = prune_subsample_sites(trace)
    trace.compute_log_prob()
    reduce = SiteReducer(weights.num_particles, max_plate_nesting, data_plate)
    return reduce.total(trace), reduce.local(trace)


def model_has_params(weights: LogWeights) -> bool:
    """Whether the model trace touched any ``pyro.param`` (i.e. has θ to learn)."""
    return any(site["type"] == "param" for site in weights.model_trace.nodes.values())


def _replay_with_stopped_params(
    guide: Callable[..., Any],
    guide_trace: poutine.Trace,
    plate: pyro.plate,
    args: tuple,
    kwargs: dict,
) -> poutine.Trace:
    """Re-run the guide on the same draws (subsample indices included), parameters
    stopped, and evaluate its log densities while they still are (a flow's distribution
    holds its transform modules, not tensors: evaluated later, it would see the live
    parameters)."""
    modules = [guide] if isinstance(guide, torch.nn.Module) else []
    for module in modules:
        clear_transform_caches(module)

    def stopped_trace(*call_args: Any) -> poutine.Trace:
        replayed = poutine.replay(plate(DetachedParameters()(guide)), trace=guide_trace)
        trace = poutine.trace(replayed).get_trace(*call_args, **kwargs)
        trace = prune_subsample_sites(trace)
        trace.compute_log_prob()
        return trace

    return stopped_call(stopped_trace, args, modules)


def weighed_particles(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    model_args: tuple,
    guide_args: tuple,
    *,
    num_particles: int,
    max_plate_nesting: int,
) -> poutine.Trace:
    """The model's trace over ``num_particles`` guide draws: the guide runs on
    ``guide_args`` in the particle plate, the model is replayed on its draws with
    ``model_args``; subsample sites pruned, log densities computed."""
    plate = particle_plate(num_particles, max_plate_nesting)
    guide_trace = poutine.trace(plate(guide)).get_trace(*guide_args)
    model_trace = poutine.trace(poutine.replay(plate(model), trace=guide_trace)).get_trace(
        *model_args
    )
    model_trace = prune_subsample_sites(model_trace)
    model_trace.compute_log_prob()
    return model_trace


def sample_observed_log_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    model_args: tuple,
    guide_args: tuple,
    *,
    num_particles: int,
    max_plate_nesting: int,
    data_plate: str,
) -> torch.Tensor:
    """:math:`\\log p(x_n \\mid z_k)` for z_k ~ q(· | guide_args), shape ``[K, N]``.

    The guide runs on ``guide_args`` (the training data) and the model on ``model_args``
    (e.g. held-out data), so this is the building block of posterior-predictive
    densities for models whose guided latents are global.
    """
    model_trace = weighed_particles(
        model,
        guide,
        model_args,
        guide_args,
        num_particles=num_particles,
        max_plate_nesting=max_plate_nesting,
    )
    per_point = SiteReducer(num_particles, max_plate_nesting, data_plate).local(
        model_trace, observed_only=True
    )
    if per_point is None:
        raise ConfigError(f"the model observes nothing inside a plate named '{data_plate}'")
    return per_point
