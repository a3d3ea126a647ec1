"""A Gaussian mixture small enough that its evidence is a sum over every assignment."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from pyro_elbo_lab.errors import ConfigError, require_positive_float, require_positive_int
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.registry import models

#: Largest K^N the exact evidence enumerates (about 4 million assignments).
MAX_ASSIGNMENTS = 2**22
_CHUNK = 2**15


@models.register("tiny_gmm", exact_log_evidence=True)
class TinyGaussianMixture(LatentVariableModel):
    r"""K-component mixture with known scale σ, conjugate means, exact evidence by enumeration.

    .. math::

        \pi \sim \mathrm{Dir}(\alpha 1_K)\ (\text{or } \pi = 1/K \text{ fixed}), \quad
        \mu_k \sim \mathcal N(0, \tau^2 I_D), \quad
        x_n \sim \textstyle\sum_k \pi_k \mathcal N(\mu_k, \sigma^2 I_D).

    Fitted with the assignments summed out in the likelihood. The evidence sums over all
    :math:`K^N` assignments c — the exponential cost that makes VI necessary, here small
    enough to pay:

    .. math::

        p(x) = \sum_{c} p(c) \prod_{k} \prod_{d} p(x_{c=k,\,d}), \qquad
        p(c) = \frac{\Gamma(K\alpha)}{\Gamma(N + K\alpha)}
               \prod_k \frac{\Gamma(n_k + \alpha)}{\Gamma(\alpha)} \text{ (Dirichlet-multinomial)},

    and for the :math:`n_k` points of a cluster, per dimension, the Normal–Normal marginal
    :math:`\mathcal N(0, \sigma^2 I + \tau^2 11^\top)`:
    :math:`-\tfrac{n}{2}\log 2\pi\sigma^2 - \tfrac12\log(1 + n\tau^2/\sigma^2)
    - \tfrac{1}{2\sigma^2}\big(\sum x^2 - \tfrac{\tau^2 (\sum x)^2}{\sigma^2 + n\tau^2}\big)`.
    All assignments are scored in batches on the data's device; past
    :data:`MAX_ASSIGNMENTS` it refuses with the sizes that fit.

    With ``fixed_weights`` and well-separated clusters the posterior over the means is
    label-symmetric, hence multimodal (K! modes): see the ``bimodal`` preset.
    """

    def __init__(
        self,
        *,
        num_components: int = 2,
        dim: int = 1,
        num_train: int = 8,
        num_heldout: int = 20,
        fixed_weights: bool = False,
        weight_concentration: float = 1.0,
        loc_prior_scale: float = 3.0,
        noise_scale: float = 1.0,
        separation: float = 2.5,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        require_positive_int("model.num_components", num_components)
        require_positive_int("model.dim", dim)
        for name, value in (
            ("weight_concentration", weight_concentration),
            ("loc_prior_scale", loc_prior_scale),
            ("noise_scale", noise_scale),
            ("separation", separation),
        ):
            require_positive_float(f"model.{name}", value)
        self.num_components, self.dim, self.fixed_weights = num_components, dim, fixed_weights
        self.alpha, self.tau, self.sigma = (
            float(weight_concentration),
            float(loc_prior_scale),
            float(noise_scale),
        )
        self.separation = float(separation)
        super().__init__(num_train=num_train, num_heldout=num_heldout, seed=seed, device=device)

    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        k = self.num_components
        # Evenly spaced centres, so that every run has well separated clusters.
        centres = self.separation * (torch.arange(k, dtype=torch.float32) - (k - 1) / 2)
        self.true_locs = centres[:, None].expand(k, self.dim).clone()
        assignment = torch.arange(num_data) % k
        noise = self.sigma * torch.randn(num_data, self.dim, generator=generator)
        return self.true_locs[assignment] + noise

    def model(self, data: torch.Tensor) -> None:
        k = self.num_components
        if self.fixed_weights:
            weights = torch.full((k,), 1.0 / k, device=self.device)
        else:
            concentration = torch.full((k,), self.alpha, device=self.device)
            weights = pyro.sample("weights", dist.Dirichlet(concentration))
        zeros = torch.zeros(self.dim, device=self.device)
        with pyro.plate("components", k):
            locs = pyro.sample("locs", dist.Normal(zeros, self.tau).to_event(1))
        components = dist.Normal(locs.unsqueeze(-3), self.sigma).to_event(1)
        with pyro.plate(self.data_plate, data.shape[0]):
            pyro.sample(
                "obs", dist.MixtureSameFamily(dist.Categorical(weights), components), obs=data
            )

    def exact_log_evidence(self, data: torch.Tensor | None = None) -> float:
        data = self.train_data if data is None else self.check_data(data)
        k, n = self.num_components, data.shape[0]
        if k**n > MAX_ASSIGNMENTS:
            largest = int(math.log(MAX_ASSIGNMENTS) / math.log(k))
            raise ConfigError(
                f"exact evidence enumerates K^N = {k}^{n} assignments, "
                f"more than {MAX_ASSIGNMENTS}; "
                f"use at most {largest} points with {k} components"
            )
        x = data.double()
        total = None
        for start in range(0, k**n, _CHUNK):
            index = torch.arange(start, min(start + _CHUNK, k**n), device=x.device)
            digits = (index[:, None] // k ** torch.arange(n, device=x.device)) % k
            onehot = torch.nn.functional.one_hot(digits, k).double()  # [A, N, K]
            chunk = self._log_prior_of_assignments(onehot) + self._log_likelihood_given(onehot, x)
            chunk_total = chunk.logsumexp(0)
            total = chunk_total if total is None else torch.logaddexp(total, chunk_total)
        return float(total)

    def _log_prior_of_assignments(self, onehot: torch.Tensor) -> torch.Tensor:
        n, k = onehot.shape[1], self.num_components
        if self.fixed_weights:
            return torch.full(
                onehot.shape[:1], -n * math.log(k), dtype=onehot.dtype, device=onehot.device
            )
        counts = onehot.sum(1)
        return (
            math.lgamma(k * self.alpha)
            - math.lgamma(n + k * self.alpha)
            + (torch.lgamma(counts + self.alpha) - math.lgamma(self.alpha)).sum(-1)
        )

    def _log_likelihood_given(self, onehot: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x \\mid c)` with the means integrated out, per assignment ``[A]``."""
        counts = onehot.sum(1)[..., None]  # [A, K, 1]
        sums = torch.einsum("ank,nd->akd", onehot, x)
        squares = torch.einsum("ank,nd->akd", onehot, x * x)
        s2, t2 = self.sigma**2, self.tau**2
        per_cluster = (
            -0.5 * counts * math.log(2 * math.pi * s2)
            - 0.5 * torch.log1p(counts * t2 / s2)
            - (squares - t2 * sums**2 / (s2 + counts * t2)) / (2 * s2)
        )
        return per_cluster.sum((-1, -2))


@models.register("bimodal", exact_log_evidence=True)
def bimodal(
    num_train: int = 8,
    num_heldout: int = 20,
    separation: float = 3.0,
    seed: int = 0,
    device: str = "cpu",
) -> TinyGaussianMixture:
    """Label-symmetric 2-component mixture: a bimodal posterior with exact evidence."""
    return TinyGaussianMixture(
        num_components=2,
        dim=1,
        num_train=num_train,
        num_heldout=num_heldout,
        fixed_weights=True,
        separation=separation,
        seed=seed,
        device=device,
    )
