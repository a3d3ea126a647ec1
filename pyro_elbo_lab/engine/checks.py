r"""Checks and refusals: what the engine cannot do fails before any compute, in one line
that names the site, the reason and the fix."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_elbo_lab.engine.program import unbatched_traces
from pyro_elbo_lab.errors import ConfigError, first_line


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
                refuse_enumerated(name, site, objective)
    if require_guided:
        for name, site in model_trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] and name not in guide_trace:
                raise ConfigError(
                    f"model latent '{name}' is not sampled by the guide; a discrete latent must "
                    "be enumerated (objective=trace_enum) or marginalised in the model"
                )
    if require_reparam:
        require_reparameterized(guide_trace, objective)


def refuse_enumerated(name: str, site: dict, objective: str) -> None:
    """Refuse a sample site marked for enumeration (``infer["enumerate"]``)."""
    if site["type"] == "sample" and site["infer"].get("enumerate"):
        raise ConfigError(
            f"site '{name}' is marked for enumeration, which {objective} does not do; use "
            "objective=trace_enum, or a model form that marginalises it "
            "(e.g. model.assignment=marginalized)"
        )


def refuse_unreparameterised(
    name: str, site: dict, objective: str, stratified: bool = False
) -> None:
    """Refuse a guide latent drawn without ``rsample``. With ``stratified``, a site a
    guide can draw by strata (``infer["stratifiable"]``) passes: the objective will ask
    for stratified, reparameterised draws."""
    latent = site["type"] == "sample" and not site["is_observed"]
    if not latent or site_is_subsample(site) or getattr(site["fn"], "has_rsample", False):
        return
    stratifiable = site["infer"].get("stratifiable", False)
    if stratifiable and stratified:
        return
    if stratifiable:
        raise ConfigError(
            f"guide site '{name}' is a mixture, reparameterisable only by stratified "
            f"sampling (one particle per component), which {objective} does not do; "
            "use an objective that stratifies (iwae, vr with dreg=false, beta_elbo) or "
            "a score-function objective (e.g. objective=trace)"
        )
    if site["fn"].support.is_discrete:  # no continuous guide can stand in for it
        raise ConfigError(
            f"guide site '{name}' ({distribution_name(site['fn'])}) is not reparameterisable "
            f"(it is discrete), but {objective} needs reparameterised samples; use a "
            "score-function objective "
            "(e.g. objective=vimco, rws_score, trace_graph or trace)"
        )
    raise ConfigError(
        f"guide site '{name}' ({distribution_name(site['fn'])}) is not "
        f"reparameterisable, but {objective} needs reparameterised samples; use a "
        "reparameterisable guide (e.g. guide=normal) or a score-function objective "
        "(e.g. objective=trace)"
    )


def refuse_model_parameters(objective: str, name: str) -> ConfigError:
    """The refusal of an objective whose gradient in the model's parameters is not the
    gradient of a bound (so training θ with it has no meaning we can state)."""
    return ConfigError(
        f"the model has parameters to learn ('{name}'), and {objective} does not train "
        "them: its gradient in the model's parameters is not the gradient of a bound; use an "
        "objective that does (trace, iwae, iwae_dreg, stl, vr, tvo, vimco, or rws for "
        "wake-sleep), or fix the parameters (e.g. as constants, or under poutine.block)"
    )


class SiteChecks(Messenger):
    """Refuse, as each site of the program it wraps is drawn, what an objective cannot
    handle: a site marked for enumeration (unless it ``enumerates``), a guide site
    without ``rsample`` (``require_reparam``), with ``require_density`` a guide that
    draws no latent with a density (only point masses, or nothing), and with
    ``refuse_params`` a ``pyro.param`` of the model (an objective that cannot train θ).
    It only looks: no draws of its own, so the program's random stream is the same with
    it as without.
    """

    def __init__(
        self,
        objective: str,
        *,
        enumerates: bool = False,
        require_reparam: bool = False,
        require_density: bool = False,
        refuse_params: bool = False,
    ) -> None:
        super().__init__()
        self.objective = objective
        self.enumerates = enumerates
        self.require_reparam = require_reparam
        self.require_density = require_density
        self.refuse_params = refuse_params
        self._latents: list[tuple[str, bool]] = []

    def _pyro_sample(self, msg: dict) -> None:
        if not self.enumerates:
            refuse_enumerated(msg["name"], msg, self.objective)
        if self.require_reparam:
            refuse_unreparameterised(msg["name"], msg, self.objective)
        if not msg["is_observed"] and not site_is_subsample(msg):
            self._latents.append((msg["name"], not isinstance(msg["fn"], dist.Delta)))

    def _pyro_param(self, msg: dict) -> None:
        if self.refuse_params:
            raise refuse_model_parameters(self.objective, msg["name"])

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        super().__exit__(exc_type, exc_value, traceback)
        if exc_type is not None or not self.require_density:
            return
        if not self._latents:
            raise ConfigError(
                f"{self.objective} updates the guide by its own density, but the guide draws "
                "no latent (the model has none); use objective=trace"
            )
        if not any(has_density for _, has_density in self._latents):
            raise ConfigError(
                f"guide site '{self._latents[0][0]}' is a point mass and the guide draws "
                f"nothing with a density, so {self.objective} has no guide gradient; use a "
                "guide with a density (e.g. guide=normal) or objective=trace"
            )


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
    """Raise :class:`ConfigError` naming the first guide site without ``rsample``
    (:func:`refuse_unreparameterised`)."""
    for name, site in guide_trace.nodes.items():
        refuse_unreparameterised(name, site, objective, stratified)


def distribution_name(fn: Any) -> str:
    """The name of the distribution under ``.to_event()``, ``.mask()`` and ``.expand()``
    wrappers (``Independent(Poisson)`` reads as ``Poisson``)."""
    while isinstance(
        fn,
        torch.distributions.Independent | dist.MaskedDistribution | dist.ExpandedDistribution,
    ):
        fn = fn.base_dist
    return type(fn).__name__


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
            unbatched_traces(model, guide, args, kwargs)
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
    return ConfigError(
        f"model and guide run alone but not with {plate.size} particles vectorised at dim "
        f"{plate.dim}: the pass fails after site '{last_site}' ({first_line(error)}); make "
        "every site broadcast over batch dims left of its plates (expand to batch_shape + "
        "shape, index with pyro.ops.indexing.Vindex) and set max_plate_nesting to the model's "
        "plate depth, or use objective=trace with vectorize_particles=false"
    )
