"""Pyro's own autoguides, registered under short names with their options settable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pyro import poutine
from pyro.infer import autoguide
from pyro.infer.autoguide import initialization
from pyro.poutine.util import site_is_subsample

from pyro_elbo_lab.errors import require, require_positive_float, require_positive_int
from pyro_elbo_lab.registry import guides

InitLoc = Literal["median", "mean", "feasible", "sample"]

_INIT_LOC_FNS: dict[str, Callable[..., Any]] = {
    "median": initialization.init_to_median,
    "mean": initialization.init_to_mean,
    "feasible": initialization.init_to_feasible,
    "sample": initialization.init_to_sample,
}


def guide_target(model: Callable[..., Any]) -> Callable[..., Any]:
    """The part of ``model`` a guide covers: everything but its enumerated sites."""
    enumerated = list(getattr(model, "enumerated_sites", ()))
    return poutine.block(model, hide=enumerated) if enumerated else model


def latent_sites(model: Any) -> dict[str, dict]:
    """The latent sample sites a guide of ``model`` covers, traced once on its training data."""
    with poutine.block():
        trace = poutine.trace(guide_target(model)).get_trace(model.train_data)
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


def normal_plus_local_part(
    model: Any,
    target: Callable[..., Any],
    local: list[str],
    local_part: Callable[[Callable[..., Any]], autoguide.AutoGuide],
    init_loc: str,
    init_scale: float,
) -> autoguide.AutoGuideList:
    """``AutoNormal`` over every latent of ``target`` but ``local`` (if any are left),
    ``local_part`` over those, in one ``AutoGuideList`` opening the model's own data
    plate (so both parts share its minibatch)."""
    composed = autoguide.AutoGuideList(
        target, create_plates=getattr(model, "data_plate_over", None)
    )
    if set(latent_sites(model)) - set(local):
        composed.append(
            autoguide.AutoNormal(
                poutine.block(target, hide=local),
                init_loc_fn=init_loc_fn(init_loc),
                init_scale=init_scale,
            )
        )
    composed.append(local_part(poutine.block(target, expose=local)))
    return composed


def init_loc_fn(init_loc: str) -> Callable[..., Any]:
    """Pyro's ``init_to_*`` strategy named ``init_loc``."""
    require(
        init_loc in _INIT_LOC_FNS,
        f"guide.init_loc must be one of {', '.join(_INIT_LOC_FNS)}, got {init_loc!r}",
    )
    return _INIT_LOC_FNS[init_loc]


def gaussian_autoguide(
    guide_class: type[autoguide.AutoGuide],
    model: Callable[..., Any],
    init_scale: float,
    init_loc: str,
    **options: Any,
) -> autoguide.AutoGuide:
    """Build one of Pyro's Gaussian autoguides after checking the shared options."""
    require_positive_float("guide.init_scale", init_scale)
    return guide_class(
        guide_target(model), init_loc_fn=init_loc_fn(init_loc), init_scale=init_scale, **options
    )


@guides.register("normal")
def normal(
    model: Callable[..., Any], init_scale: float = 0.1, init_loc: InitLoc = "median"
) -> autoguide.AutoGuide:
    """Pyro's AutoNormal: mean-field Normal per latent site, in unconstrained space."""
    return gaussian_autoguide(autoguide.AutoNormal, model, init_scale, init_loc)


@guides.register("diagonal_normal")
def diagonal_normal(
    model: Callable[..., Any], init_scale: float = 0.1, init_loc: InitLoc = "median"
) -> autoguide.AutoGuide:
    """Pyro's AutoDiagonalNormal: one diagonal Normal over the joined latent vector."""
    return gaussian_autoguide(autoguide.AutoDiagonalNormal, model, init_scale, init_loc)


@guides.register("mvn")
def mvn(
    model: Callable[..., Any], init_scale: float = 0.1, init_loc: InitLoc = "median"
) -> autoguide.AutoGuide:
    """Pyro's AutoMultivariateNormal: full-covariance Normal over all latents."""
    return gaussian_autoguide(autoguide.AutoMultivariateNormal, model, init_scale, init_loc)


@guides.register("lowrank_mvn")
def lowrank_mvn(
    model: Callable[..., Any],
    rank: int | None = None,
    init_scale: float = 0.1,
    init_loc: InitLoc = "median",
) -> autoguide.AutoGuide:
    """Pyro's AutoLowRankMultivariateNormal: diagonal plus rank-r covariance."""
    if rank is not None:
        require_positive_int("guide.rank", rank)
    return gaussian_autoguide(
        autoguide.AutoLowRankMultivariateNormal, model, init_scale, init_loc, rank=rank
    )


@guides.register("delta", point_estimate=True)
def delta(model: Callable[..., Any], init_loc: InitLoc = "median") -> autoguide.AutoGuide:
    """Pyro's AutoDelta: a point estimate (MAP); its 'bounds' are not bounds on log p(x)."""
    return autoguide.AutoDelta(guide_target(model), init_loc_fn=init_loc_fn(init_loc))


@guides.register("laplace", point_estimate=True, evaluate_with="laplace_approximation")
def laplace(model: Callable[..., Any], init_loc: InitLoc = "median") -> autoguide.AutoGuide:
    """Pyro's AutoLaplaceApproximation: MAP fit, then a Gaussian from the Hessian there."""
    return autoguide.AutoLaplaceApproximation(
        guide_target(model), init_loc_fn=init_loc_fn(init_loc)
    )
