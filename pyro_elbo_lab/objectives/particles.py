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

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import check_model_guide_match, check_site_shape

from pyro_elbo_lab.errors import ConfigError

PARTICLE_PLATE = "num_particles_vectorized"


@dataclass
class ParticleStrata:
    r"""What a stratified guide needs while the engine draws K particles, and what it leaves.

    A guide that can stratify (e.g. a mixture drawing particle k from component
    k mod C) reads ``num_particles`` and ``batch_dims``, draws reparameterised
    particles, and stores each particle's log stratum weight
    :math:`\log \pi_k` (:math:`\sum_k \pi_k = 1`) in ``log_weights``. The particles
    form consecutive groups of ``group_size`` (default: one group of all), one estimate
    each, and every group must hold a complete stratified set.
    """

    num_particles: int
    batch_dims: int
    log_weights: torch.Tensor | None = None
    group_size: int | None = None


_STRATA: list[ParticleStrata] = []


@contextlib.contextmanager
def stratified_particles(
    num_particles: int, max_plate_nesting: int, group_size: int | None = None
) -> Iterator[ParticleStrata]:
    """Let guides that can stratify do so while drawing ``num_particles`` particles, in
    groups of ``group_size`` (None: one group)."""
    strata = ParticleStrata(num_particles, max_plate_nesting + 1, group_size=group_size)
    _STRATA.append(strata)
    try:
        yield strata
    finally:
        _STRATA.pop()


def current_strata() -> ParticleStrata | None:
    """The innermost :func:`stratified_particles` request, or None outside one."""
    return _STRATA[-1] if _STRATA else None


@dataclass
class LogWeights:
    """Per-particle log densities from one vectorised pass (shapes: ``[K]``, ``[K, N]``).

    ``log_p``/``log_q`` sum every site with its plate scaling (as Pyro's ELBOs do).
    The ``local_*`` fields, present when the model has a data plate, hold the unscaled
    log densities of the sites inside it per datapoint, and ``local_scale`` the factor
    (N / batch size) a subsampled plate applies to them.
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


def particle_plate(num_particles: int, max_plate_nesting: int) -> pyro.plate:
    """The plate that vectorises particles, left of the model's ``max_plate_nesting`` dims."""
    return pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1))


def guess_max_plate_nesting(
    model: Callable[..., Any], guide: Callable[..., Any], args: tuple, kwargs: dict
) -> int:
    """Run model and guide once, unvectorised, and read the deepest plate dim used."""
    model_trace, guide_trace = unbatched_traces(model, guide, args, kwargs)
    dims = [
        -frame.dim
        for trace in (model_trace, guide_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized and frame.dim is not None
    ]
    return max(dims, default=0)


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
) -> LogWeights:
    """Draw ``num_particles`` particles from ``guide`` and weigh them under ``model``.

    :param max_plate_nesting: the model's plate depth (not counting particles).
    :param stop_guide_params: also compute :math:`\\log q_{\\bar\\phi}(z_k)`, by replaying
        the guide under :func:`stopped_parameters`. Parameters of modules that a
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
    :param stratify: let a guide that can stratify draw its particles by strata
        (:class:`ParticleStrata`); their weights come back in ``log_particle_weights``.
    :param strata_group: with ``stratify``, particles per estimate: each consecutive
        group of this many holds a complete stratified set (None: all of them).
    """
    plate = particle_plate(num_particles, max_plate_nesting)
    plated_guide = plate(guide)
    if detach_draws and guide_values is None:
        guide_values = detached_values(poutine.trace(plated_guide).get_trace(*args, **kwargs))
    if guide_values is not None:
        plated_guide = poutine.replay(plated_guide, trace=guide_values)
    try:
        with (
            stratified_particles(num_particles, max_plate_nesting, strata_group)
            if stratify
            else contextlib.nullcontext()
        ) as strata:
            guide_trace = poutine.trace(plated_guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(plate(model), trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    except ConfigError:
        raise
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
        log_particle_weights=None if strata is None else strata.log_weights,
    )


def not_vectorisable(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    plate: pyro.plate,
    error: Exception,
) -> Exception:
    """What to raise when the vectorised pass failed with ``error``.

    If model and guide run unvectorised, the program is valid but not written to
    broadcast over the particle dim: a :class:`ConfigError` naming the last site that
    still ran and the fix. Otherwise ``error`` itself (a bug of the program's own).
    """
    with poutine.block(), torch.no_grad():
        try:
            guess_max_plate_nesting(model, guide, args, kwargs)
        except Exception:
            return error
        last_site = "(none)"
        for program in (plate(guide), plate(model)):
            with poutine.trace() as partial, contextlib.suppress(Exception):
                program(*args, **kwargs)
            sites = [
                name
                for name, site in partial.trace.nodes.items()
                if site["type"] == "sample" and not site_is_subsample(site)
            ]
            if sites:
                last_site = sites[-1]
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ConfigError(
        f"model and guide run alone but not with {plate.size} particles vectorised at dim "
        f"{plate.dim}: the pass fails after site '{last_site}' ({reason}); make every site "
        "broadcast over batch dims left of its plates (expand to batch_shape + shape, index "
        "with pyro.ops.indexing.Vindex) and set max_plate_nesting to the model's plate depth, "
        "or use objective=trace with vectorize_particles=false"
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


def detached_values(trace: poutine.Trace) -> poutine.Trace:
    """A copy of ``trace`` whose sample values are detached from the autograd graph."""
    detached = trace.copy()
    for name, site in trace.nodes.items():
        if site["type"] == "sample":
            detached.nodes[name] = {**site, "value": site["value"].detach()}
    return detached


def model_has_params(weights: LogWeights) -> bool:
    """Whether the model trace touched any ``pyro.param`` (i.e. has θ to learn)."""
    return any(site["type"] == "param" for site in weights.model_trace.nodes.values())


@contextlib.contextmanager
def swapped_parameters(
    replace: Callable[[torch.Tensor], torch.Tensor | None], modules: Sequence[torch.nn.Module]
) -> Iterator[None]:
    """Inside, every parameter that ``replace`` maps to a tensor reads as that tensor.

    Both homes of a parameter are swapped in place, for the whole block: the param
    store (what ``pyro.param`` returns) and every ``_parameters`` entry of ``modules``
    and their submodules, tied ones to the same replacement. ``PyroModule`` compares the
    two and re-syncs when they differ, so they must hold the very same tensor; plain
    ``nn.Parameter`` attributes (e.g. ``AutoDiagonalNormal.loc``) are reached only
    through the module. (ParamStore.get_state()/scope() would strip the
    ``unconstrained`` weakrefs that SVI reads from param sites already traced this step,
    hence the in-place swap.)
    """
    stored = pyro.get_param_store()._params
    replacements: dict[int, torch.Tensor | None] = {}

    def replacement(value: torch.Tensor) -> torch.Tensor | None:
        if id(value) not in replacements:
            replacements[id(value)] = replace(value)
        return replacements[id(value)]

    live = {name: value for name, value in stored.items() if replacement(value) is not None}
    holders = [
        (part, key, value)
        for module in modules
        for part in module.modules()
        for key, value in part._parameters.items()
        if value is not None and replacement(value) is not None
    ]
    stored.update({name: replacements[id(value)] for name, value in live.items()})
    for part, key, value in holders:
        part._parameters[key] = replacements[id(value)]
    try:
        yield
    finally:
        stored.update(live)
        for part, key, value in holders:
            part._parameters[key] = value


@contextlib.contextmanager
def stopped_parameters(guide: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Inside, ``guide`` (yielded back) runs with every variational parameter stopped.

    Every parameter of the param store and of an ``nn.Module`` guide reads as a
    detached copy (:func:`swapped_parameters`) for the whole block, so log densities
    evaluated lazily inside it (e.g. of a flow whose distribution holds its transform
    modules) see the stopped values too. The copies are plain detached tensors (a
    traced step, see :mod:`~pyro_elbo_lab.objectives.compiled`, follows them). Flow
    transforms' caches from the live pass are cleared.
    """
    modules = [guide] if isinstance(guide, torch.nn.Module) else []
    for module in modules:
        _clear_transform_caches(module)
    with swapped_parameters(lambda value: value.detach(), modules), warnings.catch_warnings():
        # pyro.module notes that the stopped copies (requires_grad=False) are not
        # registered: that is the point.
        warnings.filterwarnings("ignore", message=".*was not registered in the param store")
        yield guide


def _clear_transform_caches(module: torch.nn.Module) -> None:
    """Forget what a guide's flow transforms cached from the live pass.

    A cached transform (e.g. Pyro's ``AffineAutoregressive``) answers ``log_prob(y)``
    for the y it produced from its cached x and log-scale, which carry the live
    parameters' gradients: the stopped pass would silently keep the score term.
    """
    for part in module.modules():
        if isinstance(part, torch.distributions.Transform):
            for name in list(vars(part)):
                if name.startswith("_cached_"):
                    setattr(part, name, (None, None) if name == "_cached_x_y" else None)


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
    # The stopped copies must stay invisible to outer handlers (SVI collects the
    # parameters it optimises from param sites): hide this pass's param statements.
    with stopped_parameters(guide) as stopped_guide:
        replayed = poutine.replay(plate(stopped_guide), trace=guide_trace)
        trace = poutine.trace(poutine.block(replayed, hide_types=["param"])).get_trace(
            *args, **kwargs
        )
        trace = prune_subsample_sites(trace)
        trace.compute_log_prob()
    return trace


def check_latents(
    model_trace: poutine.Trace,
    guide_trace: poutine.Trace,
    *,
    objective: str = "this objective",
    require_reparam: bool = False,
    enumerates: bool = False,
    require_guided: bool = True,
) -> None:
    """Refuse, naming the site: a site marked for enumeration (unless the objective
    ``enumerates``), a model latent the guide does not draw (``require_guided``), a guide
    site without ``rsample`` (``require_reparam``)."""
    if not enumerates:
        for trace in (model_trace, guide_trace):
            for name, site in trace.nodes.items():
                if site["type"] == "sample" and site["infer"].get("enumerate"):
                    raise ConfigError(
                        f"site '{name}' is marked for enumeration, which {objective} does not "
                        "do; use objective=trace_enum, or a model form that marginalises it "
                        "(e.g. model.assignment=marginalized)"
                    )
    if require_guided:
        for name, site in model_trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] and name not in guide_trace:
                raise ConfigError(
                    f"model latent '{name}' is not sampled by the guide; a discrete latent must "
                    "be enumerated (objective=trace_enum) or marginalised in the model"
                )
    if require_reparam:
        require_reparameterized(guide_trace, objective)


def unbatched_traces(
    model: Callable[..., Any], guide: Callable[..., Any], args: tuple, kwargs: dict
) -> tuple[poutine.Trace, poutine.Trace]:
    """(model, guide) traces of one unvectorised pass, hidden from outer handlers."""
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    return model_trace, guide_trace


def require_batch_dims_in_plates(trace: poutine.Trace, max_plate_nesting: int) -> None:
    """Raise :class:`ConfigError` naming the first site whose log density has batch dims
    left of the particle plate (a batch dim no plate declares, or an enumerated site)."""
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and site["log_prob"].dim() > max_plate_nesting + 1:
            raise ConfigError(
                f"site '{name}' has batch shape {tuple(site['fn'].batch_shape)}, more dims than "
                f"its plates and the particles allow (max_plate_nesting={max_plate_nesting}); "
                "declare each batch dim with a pyro.plate, move it into the event shape with "
                ".to_event(), or set max_plate_nesting to the model's plate depth"
            )


def require_reparameterized(
    guide_trace: poutine.Trace, objective: str = "this objective", stratified: bool = False
) -> None:
    """Raise :class:`ConfigError` naming the first guide site without ``rsample``.

    With ``stratified``, sites a guide can draw by strata (``infer["stratifiable"]``)
    pass: the objective will ask for stratified, reparameterised draws.
    """
    for name, site in guide_trace.nodes.items():
        latent = site["type"] == "sample" and not site["is_observed"]
        if latent and not site_is_subsample(site) and not getattr(site["fn"], "has_rsample", False):
            stratifiable = site["infer"].get("stratifiable", False)
            if stratifiable and stratified:
                continue
            if stratifiable:
                raise ConfigError(
                    f"guide site '{name}' is a mixture, reparameterisable only by stratified "
                    f"sampling (one particle per component), which {objective} does not do; "
                    "use an objective that stratifies (iwae, vr with dreg=false, beta_elbo) or "
                    "a score-function objective (e.g. objective=trace)"
                )
            raise ConfigError(
                f"guide site '{name}' ({distribution_name(site['fn'])}) is not "
                f"reparameterisable, but {objective} needs reparameterised samples; use a "
                "reparameterisable guide (e.g. guide=normal) or a score-function objective "
                "(e.g. objective=trace)"
            )


def distribution_name(fn: Any) -> str:
    """The name of the distribution under ``.to_event()``, ``.mask()`` and ``.expand()``
    wrappers (``Independent(Poisson)`` reads as ``Poisson``)."""
    while isinstance(
        fn,
        torch.distributions.Independent | dist.MaskedDistribution | dist.ExpandedDistribution,
    ):
        fn = fn.base_dist
    return type(fn).__name__


class SiteReducer:
    """Sums site log densities down to ``[K]`` (particles) or ``[K, N]`` (datapoints).

    Site tensors carry the model's plate dims with the particle plate left of them.
    """

    def __init__(self, num_particles: int, max_plate_nesting: int, data_plate: str | None):
        self.num_particles = num_particles
        self.batch_dims = max_plate_nesting + 1
        self.data_plate = data_plate

    def _sites(self, trace: poutine.Trace) -> Iterator[tuple[str, dict]]:
        for name, site in trace.nodes.items():
            if site["type"] == "sample":
                yield name, site

    def _data_frame(self, site: dict) -> Any:
        if self.data_plate is None:
            return None
        for frame in site["cond_indep_stack"]:
            if frame.name == self.data_plate:
                return frame
        return None

    def _full_batch(self, log_prob: torch.Tensor) -> torch.Tensor:
        if log_prob.dim() > self.batch_dims:
            raise ConfigError("enumerated sites are not supported by this objective")
        return log_prob.reshape((1,) * (self.batch_dims - log_prob.dim()) + log_prob.shape)

    def per_particle(self, log_prob: torch.Tensor) -> torch.Tensor:
        """Sum a site's log density (or KL) over every dim but the particles': ``[K]``."""
        log_prob = self._full_batch(log_prob)
        return log_prob.reshape(log_prob.shape[0], -1).sum(-1).expand(self.num_particles)

    def total(self, trace: poutine.Trace, empty: torch.Tensor | None = None) -> torch.Tensor:
        """Every site's scaled log density summed per particle, ``[K]``; zeros like
        ``empty`` (or on the default device) for a trace without sample sites, e.g. the
        guide of a model with no latents, where the ELBO is log p(x)."""
        terms = [self.per_particle(site["log_prob"]) for _, site in self._sites(trace)]
        if not terms:
            return torch.zeros(self.num_particles) if empty is None else torch.zeros_like(empty)
        return torch.stack(terms).sum(0)

    def local(self, trace: poutine.Trace, observed_only: bool = False) -> torch.Tensor | None:
        local = None
        for _, site in self._sites(trace):
            frame = self._data_frame(site)
            if frame is None or (observed_only and not site["is_observed"]):
                continue
            masked = scale_and_mask(site["unscaled_log_prob"], mask=site["mask"])
            log_prob = self._full_batch(masked)
            data_axis = self.batch_dims + frame.dim
            log_prob = log_prob.movedim(data_axis, 1)
            per_point = log_prob.reshape(log_prob.shape[0], log_prob.shape[1], -1).sum(-1)
            local = per_point if local is None else local + per_point
        if local is None:
            return None
        return local.expand(self.num_particles, local.shape[1])

    def local_scale(self, trace: poutine.Trace) -> torch.Tensor | None:
        """The scale of each datapoint's sites in the data plate: a scalar or ``[N]``
        tensor; None when it differs within a datapoint or between the plate's sites."""
        scales = []
        for _, site in self._sites(trace):
            frame = self._data_frame(site)
            if frame is None:
                continue
            scale = torch.as_tensor(site["scale"])
            if scale.dim() == 0:
                scales.append(scale)
                continue
            scale = self._full_batch(scale.expand(site["unscaled_log_prob"].shape))
            scale = scale.movedim(self.batch_dims + frame.dim, 0).reshape(frame.size, -1)
            if not bool((scale == scale[:, :1]).all()):
                return None
            scales.append(scale[:, 0])
        if not scales:
            return torch.tensor(1.0)
        first = scales[0]
        if any(not torch.equal(*torch.broadcast_tensors(first, other)) for other in scales[1:]):
            return None
        return first

    def global_latents(self, guide_trace: poutine.Trace) -> tuple[str, ...]:
        return tuple(
            name
            for name, site in self._sites(guide_trace)
            if not site["is_observed"]
            and not site["infer"].get("is_auxiliary")
            and self._data_frame(site) is None
        )


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
    plate = particle_plate(num_particles, max_plate_nesting)
    guide_trace = poutine.trace(plate(guide)).get_trace(*guide_args)
    model_trace = poutine.trace(poutine.replay(plate(model), trace=guide_trace)).get_trace(
        *model_args
    )
    model_trace = prune_subsample_sites(model_trace)
    model_trace.compute_log_prob()
    per_point = SiteReducer(num_particles, max_plate_nesting, data_plate).local(
        model_trace, observed_only=True
    )
    if per_point is None:
        raise ConfigError(f"the model observes nothing inside a plate named '{data_plate}'")
    return per_point
