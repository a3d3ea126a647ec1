"""The conjugate Normal–Normal model: exact posterior and exact evidence."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from pyro_elbo_lab.errors import require_positive_float, require_positive_int
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.registry import models


@models.register("normal_normal", exact_log_evidence=True)
class NormalNormal(LatentVariableModel):
    r"""Unknown mean of Gaussian data with known noise; conjugate, so everything is exact.

    .. math::

        \mu \sim \mathcal N(\mu_0, \tau_0^2 I_D), \qquad
        x_n \mid \mu \sim \mathcal N(\mu, \sigma^2 I_D), \quad n = 1..N.

    Posterior, per dimension: :math:`\tau_N^{-2} = \tau_0^{-2} + N\sigma^{-2}`,
    :math:`\mu_N = \tau_N^2(\mu_0\tau_0^{-2} + \sigma^{-2}\sum_n x_n)`.
    Evidence by the candidate's formula (Besag 1989), exact at any :math:`\mu`:
    :math:`\log p(x) = \log p(x\mid\mu) + \log p(\mu) - \log p(\mu\mid x)`.
    Predictive: :math:`x_\star \mid x \sim \mathcal N(\mu_N, (\sigma^2 + \tau_N^2) I_D)`.

    :param dim: D, the dimension of each observation.
    :param prior_loc: :math:`\mu_0`.  :param prior_scale: :math:`\tau_0`.
    :param noise_scale: :math:`\sigma`.
    """

    gaussian_posterior = True

    def __init__(
        self,
        *,
        dim: int = 2,
        num_train: int = 20,
        num_heldout: int = 20,
        prior_loc: float = 0.0,
        prior_scale: float = 1.0,
        noise_scale: float = 1.0,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        require_positive_int("model.dim", dim)
        require_positive_float("model.prior_scale", prior_scale)
        require_positive_float("model.noise_scale", noise_scale)
        self.dim = dim
        self.prior_loc = float(prior_loc)
        self.prior_scale = float(prior_scale)
        self.noise_scale = float(noise_scale)
        super().__init__(num_train=num_train, num_heldout=num_heldout, seed=seed, device=device)

    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        true_loc = self.prior_loc + self.prior_scale * torch.randn(self.dim, generator=generator)
        self.true_loc = true_loc
        return true_loc + self.noise_scale * torch.randn(num_data, self.dim, generator=generator)

    def _prior(self) -> dist.Distribution:
        loc = torch.full((self.dim,), self.prior_loc, device=self.device)
        return dist.Normal(loc, self.prior_scale).to_event(1)

    def model(self, data: torch.Tensor) -> None:
        loc = pyro.sample("loc", self._prior())
        with pyro.plate(self.data_plate, data.shape[0]):
            pyro.sample("obs", dist.Normal(loc, self.noise_scale).to_event(1), obs=data)

    def _posterior_loc_scale(self, data: torch.Tensor) -> tuple[torch.Tensor, float]:
        precision = self.prior_scale**-2 + data.shape[0] * self.noise_scale**-2
        variance = 1.0 / precision
        loc = variance * (self.prior_loc * self.prior_scale**-2 + data.sum(0) / self.noise_scale**2)
        return loc, variance**0.5

    def exact_posterior(self) -> dict[str, dist.Distribution]:
        loc, scale = self._posterior_loc_scale(self.train_data)
        return {"loc": dist.Normal(loc, scale).to_event(1)}

    def exact_log_evidence(self, data: torch.Tensor | None = None) -> float:
        data = self.train_data if data is None else self.check_data(data)
        loc, scale = self._posterior_loc_scale(data)
        log_likelihood = dist.Normal(loc, self.noise_scale).log_prob(data).sum()
        log_prior = self._prior().log_prob(loc)
        log_posterior = dist.Normal(loc, scale).log_prob(loc).sum()
        return float(log_likelihood + log_prior - log_posterior)

    def exact_predictive_log_likelihood(self, data: torch.Tensor) -> torch.Tensor:
        loc, scale = self._posterior_loc_scale(self.train_data)
        predictive_scale = (self.noise_scale**2 + scale**2) ** 0.5
        return dist.Normal(loc, predictive_scale).log_prob(self.check_data(data)).sum(-1)
