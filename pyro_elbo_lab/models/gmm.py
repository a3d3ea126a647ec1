"""Bayesian Gaussian mixture: diagonal or full covariance, three ways to handle assignments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Predictive
from pyro.ops.indexing import Vindex

from pyro_elbo_lab.errors import (
    ConfigError,
    require,
    require_positive_float,
    require_positive_int,
)
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.models.data_files import load_points
from pyro_elbo_lab.registry import models

ASSIGNMENTS = ("marginalized", "enumerated", "sampled")
COVARIANCES = ("diagonal", "full")


@models.register("gmm")
class GaussianMixture(LatentVariableModel):
    r"""K-component Gaussian mixture in D dimensions with priors on every parameter.

    .. math::

        \pi \sim \mathrm{Dir}(\alpha 1_K), \quad
        \mu_k \sim \mathcal N(0, s_\mu^2 I_D), \quad
        \sigma_{kd} \sim \mathrm{LogNormal}(0, s_\sigma^2), \quad
        [L_k \sim \mathrm{LKJCholesky}(D, \eta)], \\
        p(x_n \mid \pi, \mu, \Sigma)
            = \sum_{k} \pi_k\, \mathcal N(x_n; \mu_k, \Sigma_k), \qquad
        \Sigma_k = \mathrm{diag}\,\sigma_k^2 \ \text{(diagonal)} \ \text{or}\
        \mathrm{diag}(\sigma_k) L_k L_k^\top \mathrm{diag}(\sigma_k) \ \text{(full)}.

    The assignments :math:`c_n` are handled one of three ways (``assignment``):

    - ``marginalized`` (default): the sum over k is in the likelihood
      (``MixtureSameFamily``, a ``logsumexp``), so the latents are all continuous and any
      objective and guide applies;
    - ``enumerated``: ``c_n ~ Categorical(π)`` is sampled in the model with
      ``infer={"enumerate": "parallel"}`` for Pyro's ``TraceEnum_ELBO`` (Pyro's way);
    - ``sampled``: ``c_n`` is a discrete latent the guide must sample, for
      score-function objectives (``vimco``, ``trace_graph``); no registered guide draws
      it yet, so this mode needs a hand-written guide.

    ``subsample_size`` trains on minibatches of the data plate, scaled by N / batch, so
    the minibatch ELBO is an unbiased estimate of the full-data ELBO (stochastic VI,
    Hoffman et al. 2013); ``subsample_with_replacement`` picks how the indices are drawn
    (:meth:`~LatentVariableModel.data_plate_over`). Data are seeded synthetic draws
    (weights ~ Dir(5·1), means ~ N(0, separation²), scales ~ U(0.3, 0.8)) or the rows
    of ``data_file`` (CSV or NPY, one point per row), shuffled with ``seed`` and split
    into training and held-out rows.
    The log evidence sums over :math:`K^N` assignments and is not known; evaluation
    estimates it.

    References: [1] C. Bishop, *Pattern Recognition and Machine Learning* (2006), §10.2.
    [2] M. Hoffman, D. Blei, C. Wang, J. Paisley, "Stochastic Variational Inference",
    JMLR 2013. [3] D. Lewandowski, D. Kurowicka, H. Joe, "Generating random correlation
    matrices based on vines and extended onion method", J. Multivariate Analysis 2009.
    """

    def __init__(
        self,
        *,
        num_components: int = 3,
        dim: int = 2,
        num_train: int | None = 300,
        num_heldout: int = 200,
        assignment: Literal["marginalized", "enumerated", "sampled"] = "marginalized",
        covariance: Literal["diagonal", "full"] = "diagonal",
        weight_concentration: float = 1.0,
        loc_prior_scale: float = 5.0,
        scale_prior_scale: float = 1.0,
        lkj_concentration: float = 1.0,
        separation: float = 3.0,
        data_file: str | None = None,
        subsample_size: int | None = None,
        subsample_with_replacement: bool = True,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        require_positive_int("model.num_components", num_components)
        require_positive_int("model.dim", dim)
        require_positive_float("model.weight_concentration", weight_concentration)
        require_positive_float("model.loc_prior_scale", loc_prior_scale)
        require_positive_float("model.scale_prior_scale", scale_prior_scale)
        require_positive_float("model.lkj_concentration", lkj_concentration)
        require_positive_float("model.separation", separation)
        require(
            assignment in ASSIGNMENTS,
            f"model.assignment must be one of {', '.join(ASSIGNMENTS)}, got {assignment!r}",
        )
        require(
            covariance in COVARIANCES,
            f"model.covariance must be one of {', '.join(COVARIANCES)}, got {covariance!r}",
        )
        require(
            covariance == "diagonal" or dim >= 2,
            "model.covariance=full needs model.dim >= 2 (in one dimension use diagonal)",
        )
        self.set_subsampling(subsample_size, subsample_with_replacement)
        self.num_components = num_components
        self.dim = dim
        self.assignment = assignment
        self.covariance = covariance
        self.enumerated_sites = ("assignment",) if assignment == "enumerated" else ()
        # sampled: the guide draws one assignment per point (held-out points have none)
        self.has_local_latents = assignment == "sampled"
        self.weight_concentration = float(weight_concentration)
        self.loc_prior_scale = float(loc_prior_scale)
        self.scale_prior_scale = float(scale_prior_scale)
        self.lkj_concentration = float(lkj_concentration)
        self.separation = float(separation)
        self.file_data = None if data_file is None else load_points(data_file, dim)
        if self.file_data is not None:
            available = self.file_data.shape[0] - num_heldout
            require(
                available >= 1,
                f"model.data_file has {self.file_data.shape[0]} rows, not enough for "
                f"model.num_heldout={num_heldout} held-out rows and a training set",
            )
            if num_train is None:
                num_train = available
            require(
                num_train <= available,
                f"model.num_train={num_train} but model.data_file has only {available} rows "
                f"left after {num_heldout} held out; lower num_train (or set it to null: all)",
            )
        require(
            num_train is not None,
            "model.num_train=null (all rows) needs a model.data_file",
        )
        if num_train < num_components:
            raise ConfigError(
                f"model.num_train={num_train} is smaller than model.num_components="
                f"{num_components}; use more data or fewer components"
            )
        super().__init__(num_train=num_train, num_heldout=num_heldout, seed=seed, device=device)
        # The priors' tensors live on the device once: no host-to-device copy per step.
        self._prior = {
            name: torch.as_tensor(value, dtype=torch.float32, device=self.device)
            for name, value in {
                "concentration": [self.weight_concentration] * num_components,
                "zeros": [0.0] * dim,
                "loc_scale": self.loc_prior_scale,
                "scale_scale": self.scale_prior_scale,
                "lkj_concentration": self.lkj_concentration,
            }.items()
        }

    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        if self.file_data is not None:
            return self.file_data[self.pick_rows(self.file_data.shape[0], num_data, generator)]
        k, d = self.num_components, self.dim
        gammas = torch._standard_gamma(torch.full((k,), 5.0), generator=generator)
        self.true_weights = gammas / gammas.sum()
        self.true_locs = self.separation * torch.randn(k, d, generator=generator)
        self.true_scales = 0.3 + 0.5 * torch.rand(k, d, generator=generator)
        assignment = torch.multinomial(self.true_weights, num_data, True, generator=generator)
        noise = torch.randn(num_data, d, generator=generator)
        return self.true_locs[assignment] + self.true_scales[assignment] * noise

    def _global_latents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """π, μ and the component scale (σ, or the Cholesky factor of Σ when full),
        with the components at dim −2 of the batch so they broadcast against the data
        plate (dim −1); a particle dim, when vectorised, stays on the left."""
        prior = self._prior
        weights = pyro.sample("weights", dist.Dirichlet(prior["concentration"]))
        with pyro.plate("components", self.num_components):
            locs = pyro.sample("locs", dist.Normal(prior["zeros"], prior["loc_scale"]).to_event(1))
            scales = pyro.sample(
                "scales", dist.LogNormal(prior["zeros"], prior["scale_scale"]).to_event(1)
            )
            correlation = None
            if self.covariance == "full":
                lkj = dist.LKJCholesky(self.dim, prior["lkj_concentration"])
                correlation = pyro.sample("correlation", lkj)
        return weights, locs.unsqueeze(-3), self.component_scale(scales, correlation)

    def component_scale(
        self, scales: torch.Tensor, correlation: torch.Tensor | None
    ) -> torch.Tensor:
        """σ ``[..., K, D]``, or diag(σ) L ``[..., K, D, D]`` when full, moved left of the
        data plate (one more dim at −3 / −4)."""
        if correlation is None:
            return scales.unsqueeze(-3)
        return (scales.unsqueeze(-1) * correlation).unsqueeze(-4)

    def component(self, locs: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
        """One Gaussian per component: diagonal scales or a Cholesky factor."""
        if self.covariance == "full":
            return dist.MultivariateNormal(locs, scale_tril=scale)
        return dist.Normal(locs, scale).to_event(1)

    def model(self, data: torch.Tensor) -> None:
        if self.assignment == "marginalized":
            self.marginal_model(data)
            return
        weights, locs, scale = self._global_latents()
        infer = {"enumerate": "parallel"} if self.assignment == "enumerated" else {}
        with self.data_plate_over(data) as index:
            assignment = pyro.sample("assignment", dist.Categorical(weights), infer=infer)
            chosen_scale = (
                Vindex(scale)[..., assignment, :, :]
                if self.covariance == "full"
                else Vindex(scale)[..., assignment, :]
            )
            component = self.component(Vindex(locs)[..., assignment, :], chosen_scale)
            pyro.sample("obs", component, obs=data[index])

    def evaluation_model(self, data: torch.Tensor) -> None:
        """Sampled assignments are part of what the guide draws, so evaluation weighs
        the sampling model; otherwise the marginalised one."""
        (self.model if self.assignment == "sampled" else self.marginal_model)(data)

    def marginal_model(self, data: torch.Tensor) -> None:
        weights, locs, scale = self._global_latents()
        with self.data_plate_over(data) as index:
            pyro.sample("obs", self.likelihood(weights, locs, scale), obs=data[index])

    def likelihood(
        self, weights: torch.Tensor, locs: torch.Tensor, scale: torch.Tensor
    ) -> dist.Distribution:
        """p(x | π, μ, Σ) with the assignment summed out (``logsumexp`` over components)."""
        return dist.MixtureSameFamily(dist.Categorical(probs=weights), self.component(locs, scale))

    def cluster_probabilities(
        self, data: torch.Tensor, weights: torch.Tensor, locs: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        r""":math:`p(c_n = k \mid x_n, \pi, \mu, \Sigma) \propto \pi_k \mathcal N(x_n; \mu_k,
        \Sigma_k)` for parameters shaped as :meth:`_global_latents` returns them,
        ``[..., N, K]``."""
        log_joint = self.component(locs, scale).log_prob(data.unsqueeze(-2))
        log_joint = log_joint + weights.unsqueeze(-2).log()
        return torch.softmax(log_joint, -1)

    def predictions(self, guide: Callable, num_draws: int = 200) -> MixtureFit:
        """What the fitted guide says about the data: held-out cluster probabilities
        averaged over ``num_draws`` guide draws, and the training points' most probable
        components at the guide's posterior median, with that median mixture."""
        sites = ["weights", "locs", "scales", "correlation"]
        with torch.no_grad():
            draws = Predictive(guide, num_samples=num_draws, return_sites=sites, parallel=True)(
                self.train_data
            )
            k, d = self.num_components, self.dim
            event = {"weights": (k,), "locs": (k, d), "scales": (k, d), "correlation": (k, d, d)}
            # Predictive's sample dim sits left of the guide's plates: flatten it to [S, ...]
            draws = {name: value.reshape(-1, *event[name]) for name, value in draws.items()}
            probabilities = self.cluster_probabilities(
                self.heldout_data,
                draws["weights"],
                draws["locs"].unsqueeze(-3),
                self.component_scale(draws["scales"], draws.get("correlation")),
            ).mean(0)
            median = {name: draws[name].median(0).values for name in draws}
            if "correlation" in median:  # the elementwise median of Cholesky factors is not one
                median["correlation"] = torch.linalg.cholesky(
                    (draws["correlation"] @ draws["correlation"].transpose(-1, -2)).mean(0)
                )
            scale = self.component_scale(median["scales"], median.get("correlation"))
            labels = self.cluster_probabilities(
                self.train_data, median["weights"], median["locs"].unsqueeze(-3), scale
            ).argmax(-1)
        return MixtureFit(
            heldout_cluster_probabilities=probabilities,
            train_labels=labels,
            locs=median["locs"],
            scale=scale.squeeze(-4 if self.covariance == "full" else -3),
            full_covariance=self.covariance == "full",
        )


@dataclass(frozen=True)
class MixtureFit:
    """A fitted mixture's predictions (:meth:`GaussianMixture.predictions`).

    ``scale`` is per component: standard deviations ``[K, D]`` (diagonal) or Cholesky
    factors ``[K, D, D]`` (full covariance).
    """

    heldout_cluster_probabilities: torch.Tensor
    train_labels: torch.Tensor
    locs: torch.Tensor
    scale: torch.Tensor
    full_covariance: bool
