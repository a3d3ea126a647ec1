r"""Preconditioning: a guide whose parameters live in whitened coordinates.

From a starting Gaussian :math:`\mathcal N(m, \Sigma)` over the unconstrained latents
(:mod:`~pyro_elbo_lab.fitters.start`), take :math:`u = m + L v` with :math:`L` the
Cholesky factor of :math:`\Sigma` (``full``) or :math:`\mathrm{diag}(\Sigma)^{1/2}`
(``diagonal``). The guide's own parameters then describe a distribution over
:math:`v`, and what it hands to the model, to evaluation, to ``Predictive`` and to
ArviZ is its image over :math:`u`:

- a Gaussian :math:`\mathcal N(\mu_v, C_vC_v^\top)` becomes :math:`\mathcal N(m + L\mu_v,
  (LC_v)(LC_v)^\top)` (a Student-t likewise; a low-rank Gaussian under a diagonal
  :math:`L` stays low-rank);
- a mixture's components are mapped one by one (diagonal :math:`L` only: its
  components stay diagonal, as its reparameterised draws need);
- any other family (flows) is pushed through the affine map, whose Jacobian
  :math:`|\det L|` is constant, so every bound and gradient is the same function of the
  guide's distribution over :math:`u` as before.

Adam and every objective see parameters whose natural scale is one: on a target with
condition number :math:`10^6`, the coordinates along the smallest and largest
posterior sds move at the same pace. A family that a full :math:`L` would take out of
itself (a mean-field guide's image is no longer mean-field) takes ``diagonal`` only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import LowerCholeskyAffine
from pyro.infer.autoguide import AutoContinuous, AutoNormal

from pyro_elbo_lab.errors import ConfigError

#: ``auto``: the whitening that keeps the guide in its family (full where an affine image
#: stays in it, else diagonal; none for guides that take no start)
PRECONDITIONING = ("none", "diagonal", "full", "auto")
#: guide families a full L keeps in their family (affine images of themselves or of any
#: distribution: flows and mixtures are pushed through the map)
FULL_AFFINE_FAMILIES = (
    "AutoMultivariateNormal",
    "AutoMultivariateStudentT",
    "AutoFlow",
    "AutoIAF",
    "AutoLaplaceApproximation",
)


@dataclass(frozen=True)
class AffineCoordinates:
    """:math:`u = m + Lv` (``factor`` lower triangular; diagonal when ``diagonal``)."""

    mean: torch.Tensor
    factor: torch.Tensor
    diagonal: bool

    @property
    def scales(self) -> torch.Tensor:
        return self.factor.diagonal()

    def image(self, distribution: Any) -> Any:
        """The distribution of :math:`u = m + Lv` for :math:`v` ~ ``distribution``."""
        m, factor = self.mean, self.factor
        base = distribution.base_dist if isinstance(distribution, dist.Independent) else None
        if self.diagonal and isinstance(base, dist.Normal):
            return dist.Normal(m + self.scales * base.loc, self.scales * base.scale).to_event(1)
        if self.diagonal and isinstance(distribution, dist.LowRankMultivariateNormal):
            l = self.scales  # noqa: E741  (the diagonal of L)
            return dist.LowRankMultivariateNormal(
                m + l * distribution.loc,
                l[:, None] * distribution.cov_factor,
                l**2 * distribution.cov_diag,
            )
        if self.diagonal and isinstance(distribution, dist.MixtureSameFamily):
            components = self.image(distribution.component_distribution)
            return type(distribution)(distribution.mixture_distribution, components)
        if isinstance(distribution, dist.MultivariateNormal):
            return dist.MultivariateNormal(
                m + factor @ distribution.loc, scale_tril=factor @ distribution.scale_tril
            )
        if isinstance(distribution, dist.MultivariateStudentT):
            return dist.MultivariateStudentT(
                distribution.df, m + factor @ distribution.loc, factor @ distribution.scale_tril
            )
        return dist.TransformedDistribution(distribution, LowerCholeskyAffine(m, factor))


def precondition_guide(guide: Any, coordinates: AffineCoordinates, sites: list[tuple]) -> None:
    """Make ``guide``'s parameters describe :math:`v`; what it samples stays :math:`u`.

    ``sites``: ``(name, unconstrained shape)`` in the order of the latent vector (an
    AutoNormal's per-site parameters are its slices). The guide must have run once.
    """
    family = type(guide).__name__
    if isinstance(guide, AutoNormal):
        if not coordinates.diagonal:
            raise ConfigError(
                f"precondition=full would make guide={family}'s mean-field family a "
                "correlated one; use precondition=diagonal, or guide=mvn"
            )
        guide._get_loc_and_scale = functools.partial(
            _whitened_site, type(guide)._get_loc_and_scale.__get__(guide), coordinates,
            _slices(sites),
        )  # fmt: skip
        return
    if not isinstance(guide, AutoContinuous):
        raise ConfigError(
            f"precondition= applies to guides over the joint latent vector or its sites "
            f"(normal, diagonal_normal, mvn, lowrank_mvn, student_t, mixture, flow, iaf), "
            f"not guide={family}; use precondition=none"
        )
    if not coordinates.diagonal and family not in FULL_AFFINE_FAMILIES:
        raise ConfigError(
            f"precondition=full would take guide={family} out of its family; use "
            "precondition=diagonal, or guide=mvn"
        )
    own_posterior = type(guide).get_posterior.__get__(guide)
    guide.get_posterior = functools.partial(_whitened_posterior, own_posterior, coordinates)
    guide._loc_scale = functools.partial(_whitened_loc_scale, guide)


def _whitened_posterior(
    own_posterior: Any, coordinates: AffineCoordinates, *args: Any, **kwargs: Any
) -> Any:
    return coordinates.image(own_posterior(*args, **kwargs))


def _whitened_loc_scale(guide: Any, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and marginal sds of the guide's distribution over :math:`u` (Gaussian forms)."""
    posterior = guide.get_posterior(*args, **kwargs)
    if isinstance(posterior, dist.Independent):
        return posterior.base_dist.loc, posterior.base_dist.scale
    return posterior.loc, posterior.variance.sqrt()


def _whitened_site(
    own: Any, coordinates: AffineCoordinates, slices: dict[str, slice], name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    loc, scale = own(name)
    piece = slices[name]
    shift = coordinates.mean[piece].reshape(loc.shape)
    factor = coordinates.scales[piece].reshape(loc.shape)
    return shift + factor * loc, factor * scale


def _slices(sites: list[tuple]) -> dict[str, slice]:
    slices, start = {}, 0
    for name, shape in sites:
        size = int(torch.Size(shape).numel())
        slices[name] = slice(start, start + size)
        start += size
    return slices
