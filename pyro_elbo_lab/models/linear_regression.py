"""Bayesian linear regression with a Normal–Inverse-Gamma prior: exact evidence and posterior."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from pyro_elbo_lab.errors import require_positive_float, require_positive_int
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.registry import models


@models.register("linear_regression", exact_log_evidence=True)
class BayesianLinearRegression(LatentVariableModel):
    r"""Linear regression with unknown coefficients and noise variance, conjugate prior.

    .. math::

        \sigma^2 \sim \mathrm{InvGamma}(a_0, b_0), \quad
        \beta \mid \sigma^2 \sim \mathcal N(0, \sigma^2 v_0 I_P), \quad
        y_n \mid x_n, \beta, \sigma^2 \sim \mathcal N(x_n^\top \beta, \sigma^2).

    Posterior (e.g. Bishop 2006, §3.3; Murphy 2012, §7.6.3):
    :math:`V_N = (v_0^{-1} I + X^\top X)^{-1}`, :math:`m_N = V_N X^\top y`,
    :math:`a_N = a_0 + N/2`, :math:`b_N = b_0 + \tfrac12(y^\top y - m_N^\top V_N^{-1} m_N)`;
    :math:`\sigma^2 \mid y \sim \mathrm{InvGamma}(a_N, b_N)` and, marginally,
    :math:`\beta \mid y \sim t_{2a_N}(m_N, (b_N/a_N) V_N)`. Evidence:

    .. math::

        \log p(y) = -\tfrac N2 \log 2\pi + \tfrac12 \log\frac{|V_N|}{|v_0 I|}
            + a_0 \log b_0 - a_N \log b_N + \log\Gamma(a_N) - \log\Gamma(a_0).

    Each data row is ``[x_n, y_n]``: P covariates (drawn N(0, 1)) then the response.
    """

    def __init__(
        self,
        *,
        num_covariates: int = 3,
        prior_variance_scale: float = 1.0,
        prior_a: float = 3.0,
        prior_b: float = 2.0,
        num_train: int = 40,
        num_heldout: int = 40,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        require_positive_int("model.num_covariates", num_covariates)
        for name, value in (
            ("prior_variance_scale", prior_variance_scale),
            ("prior_a", prior_a),
            ("prior_b", prior_b),
        ):
            require_positive_float(f"model.{name}", value)
        self.num_covariates = num_covariates
        self.v0, self.a0, self.b0 = float(prior_variance_scale), float(prior_a), float(prior_b)
        super().__init__(num_train=num_train, num_heldout=num_heldout, seed=seed, device=device)

    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        p = self.num_covariates
        self.true_coefficients = torch.randn(p, generator=generator)
        self.true_noise_scale = 0.5
        covariates = torch.randn(num_data, p, generator=generator)
        noise = self.true_noise_scale * torch.randn(num_data, generator=generator)
        return torch.cat([covariates, (covariates @ self.true_coefficients + noise)[:, None]], -1)

    def with_observations(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """The same covariates with the simulated response in the last column."""
        (response,) = observations.values()
        return torch.cat([self.train_data[:, :-1], response[:, None]], -1)

    def model(self, data: torch.Tensor) -> None:
        covariates, response = data[:, :-1], data[:, -1]
        a0 = torch.tensor(self.a0, device=self.device)
        variance = pyro.sample("variance", dist.InverseGamma(a0, self.b0))
        zeros = torch.zeros(self.num_covariates, device=self.device)
        scale = (variance * self.v0).sqrt().unsqueeze(-1)
        coefficients = pyro.sample("coefficients", dist.Normal(zeros, scale).to_event(1))
        mean = (covariates * coefficients).sum(-1)  # [particles..., N]
        with pyro.plate(self.data_plate, data.shape[0]):
            pyro.sample("obs", dist.Normal(mean, variance.sqrt()), obs=response)

    def _posterior(self, data: torch.Tensor):
        x, y = data[:, :-1].double(), data[:, -1].double()
        precision = (
            torch.eye(self.num_covariates, dtype=torch.float64, device=x.device) / self.v0 + x.T @ x
        )
        covariance = torch.linalg.inv(precision)
        mean = covariance @ (x.T @ y)
        a_n = self.a0 + x.shape[0] / 2
        b_n = self.b0 + 0.5 * (y @ y - mean @ precision @ mean)
        return mean, covariance, a_n, b_n

    def exact_log_evidence(self, data: torch.Tensor | None = None) -> float:
        data = self.train_data if data is None else self.check_data(data)
        _, covariance, a_n, b_n = self._posterior(data)
        n, p = data.shape[0], self.num_covariates
        return float(
            -0.5 * n * math.log(2 * math.pi)
            + 0.5 * (torch.logdet(covariance) - p * math.log(self.v0))
            + self.a0 * math.log(self.b0)
            - a_n * torch.log(b_n)
            + math.lgamma(a_n)
            - math.lgamma(self.a0)
        )

    def exact_posterior(self) -> dict[str, dist.Distribution]:
        mean, covariance, a_n, b_n = self._posterior(self.train_data)
        scale_tril = torch.linalg.cholesky(covariance * b_n / a_n).float()
        return {
            "variance": dist.InverseGamma(torch.tensor(a_n, device=self.device), b_n.float()),
            "coefficients": dist.MultivariateStudentT(2 * a_n, mean.float(), scale_tril),
        }

    def exact_predictive_log_likelihood(self, data: torch.Tensor) -> torch.Tensor:
        data = self.check_data(data)
        mean, covariance, a_n, b_n = self._posterior(self.train_data)
        x, y = data[:, :-1].double(), data[:, -1].double()
        scale = (b_n / a_n * (1 + (x @ covariance * x).sum(-1))).sqrt()
        return dist.StudentT(2 * a_n, x @ mean, scale).log_prob(y).float()
