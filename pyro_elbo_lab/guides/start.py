r"""Every guide family takes the fit's starting Gaussian in its own parameters.

:func:`start_guide` writes :math:`\mathcal N(m, \Sigma)` over the unconstrained latents
(:class:`~pyro_elbo_lab.fitters.start.StartingGaussian`) into a guide that has run
once, optionally in whitened coordinates (:mod:`~pyro_elbo_lab.guides.coordinates`,
where the start is :math:`\mathcal N(0, L^{-1}\Sigma L^{-\top})` over :math:`v`):

==========================  ==============================================================
family                      what it takes
==========================  ==============================================================
AutoNormal, diagonal        the means and marginal sds
AutoMultivariateNormal      the mean and :math:`\mathrm{chol}\,\Sigma` (as ``scale`` ×
                            unit-lower ``scale_tril``)
AutoLowRankMVN (rank r)     the mean; :math:`\Sigma \approx S(WW^\top + I)S`: the top r
                            eigenvectors of the correlation matrix in W, the rest as the
                            isotropic remainder
Student-t                   location and scale matrix (ν kept)
mixture                     each component centred at m plus its own offset scaled by
                            the marginal sds, component sds the marginal sds
flows (flow, iaf)           the affine map :math:`u = m + \mathrm{chol}(\Sigma)\,v` in
                            front of the flow (whose initial transform is near identity)
delta, laplace              the mean (the point)
==========================  ==============================================================

Guides with encoders or discrete sites (amortized, amortized_bernoulli, discrete_local,
structured, guide_list, none) have no parameters for one Gaussian over the latents and
refuse in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pyro.infer import autoguide
from torch.distributions import biject_to

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.guides.coordinates import (
    FULL_AFFINE_FAMILIES,
    AffineCoordinates,
    precondition_guide,
)
from pyro_elbo_lab.guides.params import set_param, write_cholesky

if TYPE_CHECKING:
    from pyro_elbo_lab.fitters.start import StartingGaussian

#: guides that take the start as an affine map in front of their transform
AFFINE_PREFIX_FAMILIES = ("AutoFlow", "AutoIAF")


def start_support(guide: Any) -> tuple[bool, str]:
    """Whether ``guide`` takes a starting Gaussian, and the whitening that keeps it in its
    family (``full``, ``diagonal`` or ``none``): what ``precondition=auto`` resolves to."""
    family = type(guide).__name__
    if family in (*FULL_AFFINE_FAMILIES, *AFFINE_PREFIX_FAMILIES):
        return True, "full"
    if isinstance(guide, autoguide.AutoNormal | autoguide.AutoDiagonalNormal) or family in (
        "AutoLowRankMultivariateNormal",
        "AutoGaussianMixture",
    ):
        return True, "diagonal"
    if isinstance(guide, autoguide.AutoDelta | autoguide.AutoLaplaceApproximation):
        return True, "none"
    return False, "none"


def start_guide(guide: Any, start: StartingGaussian, precondition: str = "none") -> None:
    """Write ``start`` into ``guide`` (which has run once); with ``precondition`` of
    ``diagonal`` or ``full``, the guide's parameters describe the whitened coordinates."""
    family = type(guide).__name__
    mean, scale_tril = start.mean, start.scale_tril
    if family in AFFINE_PREFIX_FAMILIES and precondition == "none":
        precondition = "full"  # a flow takes its start as the affine map in front of it
    if precondition != "none":
        diagonal = precondition == "diagonal"
        factor = torch.diag(scale_tril.pow(2).sum(-1).sqrt()) if diagonal else scale_tril
        coordinates = AffineCoordinates(mean.to(_dtype(guide)), factor.to(_dtype(guide)), diagonal)
        precondition_guide(guide, coordinates, list(start.sites))
        scale_tril = torch.linalg.solve_triangular(factor, scale_tril, upper=False)
        mean = torch.zeros_like(mean)
    if family in AFFINE_PREFIX_FAMILIES:
        return  # the flow's own parameters stay at their near-identity start
    write_gaussian(guide, mean, scale_tril, list(start.sites))


def write_gaussian(
    guide: Any, mean: torch.Tensor, scale_tril: torch.Tensor, sites: list[tuple]
) -> None:
    """Set ``guide``'s raw parameters to :math:`\\mathcal N(\\text{mean}, LL^\\top)`."""
    sd = scale_tril.pow(2).sum(-1).sqrt()
    family = type(guide).__name__
    with torch.no_grad():
        if isinstance(guide, autoguide.AutoNormal):
            offset = 0
            for name, shape in sites:
                size = int(torch.Size(shape).numel())
                piece = slice(offset, offset + size)
                set_param(guide.locs, name, mean[piece].reshape(shape))
                set_param(guide.scales, name, sd[piece].reshape(shape))
                offset += size
        elif isinstance(guide, autoguide.AutoDelta):
            for name, value in _constrained(guide, mean, sites).items():
                set_param(guide, name, value)
        elif isinstance(guide, autoguide.AutoLaplaceApproximation):
            guide.loc.copy_(mean)
        elif isinstance(guide, autoguide.AutoDiagonalNormal):
            guide.loc.copy_(mean)
            set_param(guide, "scale", sd)
        elif family in ("AutoMultivariateNormal", "AutoMultivariateStudentT"):
            guide.loc.copy_(mean)
            write_cholesky(guide, scale_tril)
        elif isinstance(guide, autoguide.AutoLowRankMultivariateNormal):
            guide.loc.copy_(mean)
            scale, cov_factor = low_rank_factors(scale_tril, guide.cov_factor.shape[-1])
            set_param(guide, "scale", scale)
            guide.cov_factor.copy_(cov_factor)
        elif family == "AutoGaussianMixture":
            offsets = guide.locs - guide.locs.mean(0)
            guide.locs.copy_(mean + offsets * sd)
            set_param(guide, "scales", sd.expand_as(guide.locs))
        else:
            raise ConfigError(
                f"init= writes one Gaussian over the latents, which guide={family} (an "
                "encoder, discrete sites or a composition) has no parameters for; use "
                "init=median"
            )


def low_rank_factors(scale_tril: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale`` s and ``cov_factor`` W of Pyro's :math:`S(WW^\\top + I)S`, S = diag(s),
    close to :math:`\\Sigma = LL^\\top`: with R the correlation matrix of Σ and
    :math:`(\\lambda_k, e_k)` its eigenpairs, the remainder
    :math:`c^2 = \\text{mean of the } D - r \\text{ smallest } \\lambda`, :math:`s =
    c\\,\\mathrm{sd}`, :math:`W = [e_k \\sqrt{\\max(\\lambda_k/c^2 - 1, 0)}]_{k \\le r}`:
    exact in the top-r subspace, isotropic elsewhere."""
    covariance = scale_tril @ scale_tril.T
    sd = covariance.diagonal().sqrt()
    correlation = covariance / sd[:, None] / sd[None, :]
    eigenvalues, eigenvectors = torch.linalg.eigh(correlation)  # ascending
    dim = eigenvalues.shape[0]
    remainder = eigenvalues[: dim - rank].mean() if rank < dim else eigenvalues.min()
    remainder = remainder.clamp(min=1e-6)
    top = eigenvalues[dim - rank :]
    cov_factor = eigenvectors[:, dim - rank :] * (top / remainder - 1).clamp(min=0).sqrt()
    return remainder.sqrt() * sd, cov_factor


def _constrained(guide: Any, mean: torch.Tensor, sites: list[tuple]) -> dict[str, torch.Tensor]:
    values, offset = {}, 0
    for name, shape in sites:
        size = int(torch.Size(shape).numel())
        support = guide.prototype_trace.nodes[name]["fn"].support
        values[name] = biject_to(support)(mean[offset : offset + size].reshape(shape))
        offset += size
    return values


def _dtype(guide: Any) -> torch.dtype:
    return next((p.dtype for p in guide.parameters()), torch.get_default_dtype())
