"""Beta–Bernoulli: a coin's bias from its flips; exact evidence and posterior."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from pyro_elbo_lab.errors import require, require_positive_float
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.registry import models


@models.register("beta_bernoulli", exact_log_evidence=True)
class BetaBernoulli(LatentVariableModel):
    r"""A constrained (0, 1) latent with a conjugate prior.

    .. math::

        \theta \sim \mathrm{Beta}(a, b), \qquad x_n \mid \theta \sim \mathrm{Bernoulli}(\theta).

    With :math:`s = \sum_n x_n` heads in N flips:
    :math:`\log p(x) = \log B(a + s, b + N - s) - \log B(a, b)`,
    :math:`\theta \mid x \sim \mathrm{Beta}(a + s, b + N - s)` and
    :math:`p(x_\star = 1 \mid x) = (a + s)/(a + b + N)`.

    :param true_bias: the simulated coin's bias.
    """

    def __init__(
        self,
        *,
        prior_a: float = 2.0,
        prior_b: float = 2.0,
        true_bias: float = 0.7,
        num_train: int = 30,
        num_heldout: int = 30,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        require_positive_float("model.prior_a", prior_a)
        require_positive_float("model.prior_b", prior_b)
        require(0 < true_bias < 1, f"model.true_bias must lie in (0, 1), got {true_bias!r}")
        self.prior_a, self.prior_b, self.true_bias = (
            float(prior_a),
            float(prior_b),
            float(true_bias),
        )
        super().__init__(num_train=num_train, num_heldout=num_heldout, seed=seed, device=device)

    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(num_data, generator=generator) < self.true_bias).float()

    def model(self, data: torch.Tensor) -> None:
        a = torch.tensor(self.prior_a, device=self.device)
        theta = pyro.sample("theta", dist.Beta(a, self.prior_b))
        with pyro.plate(self.data_plate, data.shape[0]):
            pyro.sample("obs", dist.Bernoulli(theta), obs=data)

    def _posterior(self) -> tuple[float, float]:
        heads = float(self.train_data.sum())
        return self.prior_a + heads, self.prior_b + self.train_data.shape[0] - heads

    def exact_posterior(self) -> dict[str, dist.Distribution]:
        a, b = self._posterior()
        return {"theta": dist.Beta(torch.tensor(a, device=self.device), b)}

    def exact_log_evidence(self, data: torch.Tensor | None = None) -> float:
        data = self.train_data if data is None else self.check_data(data)
        heads, count = float(data.sum()), data.shape[0]
        posterior = _log_beta(self.prior_a + heads, self.prior_b + count - heads)
        return posterior - _log_beta(self.prior_a, self.prior_b)

    def exact_predictive_log_likelihood(self, data: torch.Tensor) -> torch.Tensor:
        a, b = self._posterior()
        return dist.Bernoulli(torch.tensor(a / (a + b), device=self.device)).log_prob(
            self.check_data(data)
        )


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
