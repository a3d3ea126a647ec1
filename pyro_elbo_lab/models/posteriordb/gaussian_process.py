r"""posteriordb's latent Gaussian process: Poisson counts with a log rate drawn from a GP."""

from __future__ import annotations

from typing import ClassVar

import pyro
import pyro.distributions as dist
import torch

from pyro_elbo_lab.models.posteriordb.base import FIT_DEFAULTS, PosteriorDBModel
from pyro_elbo_lab.models.posteriordb.files import Field
from pyro_elbo_lab.registry import models

#: the Stan program's diagonal jitter
JITTER = 1e-10


@models.register(
    "gp_pois_regr",
    description="posteriordb gp_pois_regr-gp_pois_regr: Poisson counts with a latent GP; 13 params",
    **FIT_DEFAULTS,
)
class GaussianProcessPoisson(PosteriorDBModel):
    r"""posteriordb ``gp_pois_regr-gp_pois_regr``: :math:`k_n \sim \mathrm{Poisson}(e^{f_n})`,
    :math:`f = L\tilde f`, :math:`LL^\top = \alpha^2 \exp(-(x_i - x_j)^2 / 2\rho^2) +
    10^{-10} I`, :math:`\tilde f_n \sim \mathcal N(0, 1)`, ρ ~ Gamma(25, 4),
    α ~ N⁺(0, 2²) (the non-centred form of the Stan program). The kernel and its Cholesky
    factor are computed in float64, as Stan does: with ρ ≈ 6 on a grid of spacing 2 the
    kernel's smallest eigenvalues are far below float32's resolution. ``f`` is a
    deterministic site; the reference draws give ``f``, and :meth:`latents_from_reference`
    recovers :math:`\tilde f = L^{-1} f`.
    """

    posterior = "gp_pois_regr-gp_pois_regr"
    has_local_latents = True
    schema: ClassVar = {
        "N": Field("int"),
        "x": Field("real", ("N",)),
        "k": Field("int", ("N",)),
    }

    def rows(self, data):
        return torch.stack([data["x"], data["k"]], -1).float()

    def model(self, data: torch.Tensor) -> None:
        inputs, counts = data[:, 0], data[:, 1]
        zero = torch.zeros((), device=self.device)
        rho = pyro.sample("rho", dist.Gamma(zero + 25.0, 4.0))
        alpha = pyro.sample("alpha", dist.HalfNormal(zero + 2.0))
        with pyro.plate(self.data_plate, len(inputs)):
            whitened = pyro.sample("f_tilde", dist.Normal(zero, 1.0))
            factor = _kernel_cholesky(inputs, rho, alpha)
            f = (factor @ whitened.double().unsqueeze(-1)).squeeze(-1).to(whitened.dtype)
            pyro.deterministic("f", f)
            pyro.sample("obs", dist.Poisson(f.exp()), obs=counts)

    def latents_from_reference(self, draws):
        inputs = self.train_data[:, 0].cpu()
        factor = _kernel_cholesky(inputs, draws["rho"][:, None], draws["alpha"][:, None])
        whitened = torch.linalg.solve_triangular(
            factor, draws["f"].double().unsqueeze(-1), upper=False
        )
        return {**draws, "f_tilde": whitened.squeeze(-1).float()}


def _kernel_cholesky(inputs: torch.Tensor, rho: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of the squared-exponential kernel plus jitter, float64, with the
    batch dims of ``rho`` (``[K, 1]`` under a particle plate) before the two matrix dims;
    NaN where the factorisation fails (only far outside the posterior: huge α or ρ)."""
    inputs = inputs.double()
    squared = (inputs[:, None] - inputs[None, :]) ** 2
    rho, alpha = rho.double().unsqueeze(-1), alpha.double().unsqueeze(-1)
    kernel = alpha**2 * torch.exp(-squared / (2 * rho**2))
    eye = torch.eye(len(inputs), dtype=torch.float64, device=inputs.device)
    factor, failed = torch.linalg.cholesky_ex(kernel + JITTER * eye)
    # Stan rejects a draw whose kernel is not numerically positive definite; NaN does here
    return torch.where(failed[..., None, None] == 0, factor, torch.nan)
