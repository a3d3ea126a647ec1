"""Pyro's normalizing-flow autoguides with defaults that work in every comparison."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import pyro.distributions.transforms as T
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
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


class ElementwiseAffine(TransformModule):
    r""":math:`y = \mu + \sigma \odot x` with learnable μ and σ > 0 (softplus).

    Spline layers are the identity outside their bounded interval, so a flow of splines
    alone cannot move or rescale N(0, I) onto a posterior far from it; this last layer
    does (the role the affine part plays in an IAF).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int) -> None:
        super().__init__(cache_size=1)
        self.loc = torch.nn.Parameter(torch.zeros(dim))
        self.raw_scale = torch.nn.Parameter(torch.full((dim,), math.log(math.e - 1.0)))

    @property
    def scale(self) -> torch.Tensor:
        return torch.nn.functional.softplus(self.raw_scale)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self.loc + self.scale * x

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.loc) / self.scale

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.scale.log().sum(-1).expand(x.shape[:-1])


def flow_transform(
    dim: int, kind: str, num_transforms: int, hidden_dim: int, count_bins: int
) -> T.ComposeTransformModule:
    """``num_transforms`` flow layers on ``dim`` coordinates, permuted between layers,
    then a learnable elementwise affine map (:class:`ElementwiseAffine`).

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
    layers.append(ElementwiseAffine(dim))
    return T.ComposeTransformModule(layers)


@guides.register("flow")
def flow(
    model: Callable[..., Any],
    kind: FlowKind = "affine_coupling",
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
