"""Bayesian Gaussian mixture with diagonal covariances."""

from __future__ import annotations

from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from pyro_elbo_lab.errors import ConfigError, require_positive_float, require_positive_int
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.registry import models


@models.register("gmm")
class GaussianMixture(LatentVariableModel):
    r"""K-component Gaussian mixture in D dimensions with priors on every parameter.

    .. math::

        \pi \sim \mathrm{Dir}(\alpha 1_K), \quad
        \mu_k \sim \mathcal N(0, s_\mu^2 I_D), \quad
        \sigma_{kd} \sim \mathrm{LogNormal}(0, s_\sigma^2), \\
        p(x_n \mid \pi, \mu, \sigma)
            = \sum_{k} \pi_k\, \mathcal N(x_n; \mu_k, \mathrm{diag}\,\sigma_k^2).

    The assignments :math:`c_n` are handled one of two ways (``assignment``):

    - ``marginalized`` (default): the sum over k is in the likelihood
      (``MixtureSameFamily``), so the latents are all continuous and any objective and
      guide applies;
    - ``enumerated``: ``c_n ~ Categorical(π)`` is sampled in the model with
      ``infer={"enumerate": "parallel"}`` for Pyro's ``TraceEnum_ELBO`` (Pyro's way).

    The log evidence sums over :math:`K^N` assignments and is not known; evaluation
    estimates it. Synthetic data: weights ~ Dir(5·1), means ~ N(0, separation²), scales
    ~ U(0.3, 0.8), all drawn from the seeded generator.

    References: Bishop (2006), *Pattern Recognition and Machine Learning*, §10.2.
    """

    def __init__(
        self,
        *,
        num_components: int = 3,
        dim: int = 2,
        num_train: int = 300,
        num_heldout: int = 200,
        assignment: Literal["marginalized", "enumerated"] = "marginalized",
        weight_concentration: float = 1.0,
        loc_prior_scale: float = 5.0,
        scale_prior_scale: float = 1.0,
        separation: float = 3.0,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        require_positive_int("model.num_components", num_components)
        require_positive_int("model.dim", dim)
        require_positive_float("model.weight_concentration", weight_concentration)
        require_positive_float("model.loc_prior_scale", loc_prior_scale)
        require_positive_float("model.scale_prior_scale", scale_prior_scale)
        require_positive_float("model.separation", separation)
        if assignment not in ("marginalized", "enumerated"):
            raise ConfigError(
                f"model.assignment must be 'marginalized' or 'enumerated', got {assignment!r}"
            )
        if num_train < num_components:
            raise ConfigError(
                f"model.num_train={num_train} is smaller than model.num_components="
                f"{num_components}; use more data or fewer components"
            )
        self.num_components = num_components
        self.dim = dim
        self.assignment = assignment
        self.enumerated_sites = ("assignment",) if assignment == "enumerated" else ()
        self.weight_concentration = float(weight_concentration)
        self.loc_prior_scale = float(loc_prior_scale)
        self.scale_prior_scale = float(scale_prior_scale)
        self.separation = float(separation)
        super().__init__(num_train=num_train, num_heldout=num_heldout, seed=seed, device=device)

    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        k, d = self.num_components, self.dim
        gammas = torch._standard_gamma(torch.full((k,), 5.0), generator=generator)
        self.true_weights = gammas / gammas.sum()
        self.true_locs = self.separation * torch.randn(k, d, generator=generator)
        self.true_scales = 0.3 + 0.5 * torch.rand(k, d, generator=generator)
        assignment = torch.multinomial(self.true_weights, num_data, True, generator=generator)
        noise = torch.randn(num_data, d, generator=generator)
        return self.true_locs[assignment] + self.true_scales[assignment] * noise

    def _global_latents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k, d = self.num_components, self.dim
        concentration = torch.full((k,), self.weight_concentration, device=self.device)
        weights = pyro.sample("weights", dist.Dirichlet(concentration))
        zeros = torch.zeros(d, device=self.device)
        with pyro.plate("components", k):
            locs = pyro.sample("locs", dist.Normal(zeros, self.loc_prior_scale).to_event(1))
            scales = pyro.sample(
                "scales", dist.LogNormal(zeros, self.scale_prior_scale).to_event(1)
            )
        # The components move to dim -2 of the batch so that they broadcast against the
        # data plate (dim -1); weights already carry a particle dim left of -1 when vectorised.
        return weights, locs.unsqueeze(-3), scales.unsqueeze(-3)

    def model(self, data: torch.Tensor) -> None:
        if self.assignment == "marginalized":
            self.marginal_model(data)
            return
        weights, locs, scales = self._global_latents()
        with pyro.plate(self.data_plate, data.shape[0]):
            assignment = pyro.sample(
                "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
            )
            component = dist.Normal(
                Vindex(locs)[..., assignment, :], Vindex(scales)[..., assignment, :]
            )
            pyro.sample("obs", component.to_event(1), obs=data)

    def marginal_model(self, data: torch.Tensor) -> None:
        weights, locs, scales = self._global_latents()
        with pyro.plate(self.data_plate, data.shape[0]):
            pyro.sample("obs", self.likelihood(weights, locs, scales), obs=data)

    @staticmethod
    def likelihood(
        weights: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor
    ) -> dist.Distribution:
        """p(x | π, μ, σ) with the assignment summed out (``logsumexp`` over components)."""
        components = dist.Normal(locs, scales).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(probs=weights), components)
