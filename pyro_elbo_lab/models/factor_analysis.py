"""Factor analysis: a latent ability read off test scores."""

from __future__ import annotations

from typing import Literal

import pyro
import pyro.distributions as dist
import torch

from pyro_elbo_lab.errors import ConfigError, require_positive_int
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.registry import models


@models.register("factor_analysis", exact_log_evidence=True)
class FactorAnalysis(LatentVariableModel):
    r"""Each student's latent ability z_n explains their D test scores.

    .. math::

        z_n \sim \mathcal N(0, I_L), \qquad
        x_n \mid z_n \sim \mathcal N(\mu + W z_n, \Psi), \quad \Psi = \mathrm{diag}(\psi).

    ``loadings="fixed"``: W, μ, Ψ are known (the simulation's), every latent is local, and
    the truth is exact: :math:`\log p(x) = \sum_n \log \mathcal N(x_n; \mu, WW^\top + \Psi)`
    and :math:`z_n \mid x_n \sim \mathcal N(M^{-1} W^\top \Psi^{-1}(x_n - \mu), M^{-1})`,
    :math:`M = I + W^\top \Psi^{-1} W` (Bishop 2006, §12.2). ``loadings="learned"``:
    :math:`W_{dl} \sim \mathcal N(0, 1)` is a global latent too; no closed form (AIS gives
    the reference), and W is identified only up to sign.

    ``subsample_size`` trains on minibatches of the data plate (scaled by N / batch;
    ``subsample_with_replacement``: how the indices are drawn).

    Simulation: loadings U(0.5, 1.5) (every test loads positively on ability), μ = 0,
    ψ ~ U(0.2, 0.5).
    """

    has_local_latents = True
    gaussian_posterior = True  # abilities independent across students, each Gaussian

    def __init__(
        self,
        *,
        num_tests: int = 6,
        num_factors: int = 1,
        loadings: Literal["fixed", "learned"] = "fixed",
        num_train: int = 100,
        num_heldout: int = 100,
        subsample_size: int | None = None,
        subsample_with_replacement: bool = True,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        require_positive_int("model.num_tests", num_tests)
        self.set_subsampling(subsample_size, subsample_with_replacement)
        require_positive_int("model.num_factors", num_factors)
        if loadings not in ("fixed", "learned"):
            raise ConfigError(f"model.loadings must be 'fixed' or 'learned', got {loadings!r}")
        self.num_tests, self.num_factors, self.loadings = num_tests, num_factors, loadings
        super().__init__(num_train=num_train, num_heldout=num_heldout, seed=seed, device=device)
        self.weight = self.weight.to(self.device)
        self.noise_variance = self.noise_variance.to(self.device)

    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        tests, factors = self.num_tests, self.num_factors
        self.weight = 0.5 + torch.rand(tests, factors, generator=generator)
        self.noise_variance = 0.2 + 0.3 * torch.rand(tests, generator=generator)
        ability = torch.randn(num_data, factors, generator=generator)
        noise = torch.randn(num_data, tests, generator=generator) * self.noise_variance.sqrt()
        return ability @ self.weight.T + noise

    def model(self, data: torch.Tensor) -> None:
        weight = self.weight
        if self.loadings == "learned":
            zeros = torch.zeros(self.num_tests, self.num_factors, device=self.device)
            weight = pyro.sample("loadings", dist.Normal(zeros, 1.0).to_event(2))
        zeros = torch.zeros(self.num_factors, device=self.device)
        with self.data_plate_over(data) as index:
            ability = pyro.sample("ability", dist.Normal(zeros, 1.0).to_event(1))
            mean = (ability.unsqueeze(-2) @ weight.transpose(-1, -2)).squeeze(-2)
            noise = dist.Normal(mean, self.noise_variance.sqrt()).to_event(1)
            pyro.sample("obs", noise, obs=data[index])

    def _marginal(self) -> dist.MultivariateNormal:
        covariance = self.weight @ self.weight.T + torch.diag(self.noise_variance)
        return dist.MultivariateNormal(torch.zeros(self.num_tests, device=self.device), covariance)

    def exact_log_evidence(self, data: torch.Tensor | None = None) -> float | None:
        if self.loadings == "learned":
            return None
        data = self.train_data if data is None else self.check_data(data)
        return float(self._marginal().log_prob(data).sum())

    def exact_posterior(self) -> dict[str, dist.Distribution] | None:
        if self.loadings == "learned":
            return None
        scaled = self.weight / self.noise_variance[:, None]
        precision = torch.eye(self.num_factors, device=self.device) + self.weight.T @ scaled
        covariance = torch.linalg.inv(precision)
        means = self.train_data @ scaled @ covariance
        return {"ability": dist.MultivariateNormal(means, covariance)}

    def exact_predictive_log_likelihood(self, data: torch.Tensor) -> torch.Tensor | None:
        if self.loadings == "learned":
            return None
        return self._marginal().log_prob(self.check_data(data))
