"""Pyro's normalizing-flow autoguides with defaults that work in every comparison."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import pyro.distributions.transforms as T
from pyro.infer import autoguide

from pyro_elbo_lab.errors import require_positive_int
from pyro_elbo_lab.guides.pyro_builtin import guide_target
from pyro_elbo_lab.guides.quantiles import SampledQuantiles
from pyro_elbo_lab.registry import guides

FlowKind = Literal["spline_coupling", "affine_coupling", "spline_autoregressive", "spline"]


class AutoFlow(SampledQuantiles, autoguide.AutoNormalizingFlow):
    """Pyro's AutoNormalizingFlow with sampled ``median`` / ``quantiles``."""


class AutoIAF(SampledQuantiles, autoguide.AutoIAFNormal):
    """Pyro's AutoIAFNormal with sampled ``median`` / ``quantiles``."""


def flow_transform(
    dim: int, kind: str, num_transforms: int, hidden_dim: int, count_bins: int
) -> T.ComposeTransformModule:
    """``num_transforms`` flow layers on ``dim`` coordinates, permuted between layers.

    Coupling layers transform half the coordinates given the other half, so a
    one-dimensional latent gets elementwise splines instead.
    """
    if dim == 1 and kind.endswith("coupling"):
        kind = "spline"
    make = {
        "spline_coupling": partial(
            T.spline_coupling, dim, hidden_dims=[hidden_dim], count_bins=count_bins
        ),
        "affine_coupling": partial(T.affine_coupling, dim, hidden_dims=[hidden_dim]),
        "spline_autoregressive": partial(
            T.spline_autoregressive, dim, hidden_dims=[hidden_dim], count_bins=count_bins
        ),
        "spline": partial(T.spline, dim, count_bins=count_bins),
    }[kind]
    layers: list[Any] = []
    for index in range(num_transforms):
        if index and dim > 1:
            layers.append(T.permute(dim))
        layers.append(make())
    return T.ComposeTransformModule(layers)


@guides.register("flow")
def flow(
    model: Callable[..., Any],
    kind: FlowKind = "spline_coupling",
    num_transforms: int = 2,
    hidden_dim: int = 32,
    count_bins: int = 8,
) -> AutoFlow:
    """Pyro's AutoNormalizingFlow: N(0, I) through spline or affine coupling flows."""
    require_positive_int("guide.num_transforms", num_transforms)
    require_positive_int("guide.hidden_dim", hidden_dim)
    require_positive_int("guide.count_bins", count_bins)
    return AutoFlow(
        guide_target(model),
        partial(
            flow_transform,
            kind=kind,
            num_transforms=num_transforms,
            hidden_dim=hidden_dim,
            count_bins=count_bins,
        ),
    )


@guides.register("iaf")
def iaf(
    model: Callable[..., Any],
    hidden_dim: int | None = None,
    num_transforms: int = 1,
) -> AutoIAF:
    """Pyro's AutoIAFNormal: a Normal pushed through inverse autoregressive flows."""
    require_positive_int("guide.num_transforms", num_transforms)
    if hidden_dim is not None:
        require_positive_int("guide.hidden_dim", hidden_dim)
    return AutoIAF(
        guide_target(model),
        hidden_dim=None if hidden_dim is None else [hidden_dim],
        num_transforms=num_transforms,
    )
