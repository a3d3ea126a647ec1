r"""A sigmoid belief network small enough that its log evidence is exact."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from torch.nn.functional import logsigmoid, softplus

from pyro_elbo_lab.errors import ConfigError, require_positive_int
from pyro_elbo_lab.guides.amortized import mlp
from pyro_elbo_lab.models.images import BinarisedImageModel
from pyro_elbo_lab.registry import models

MARGINALS = ("sampled", "exact")
#: 2^H joint states are enumerated for log p(x): past this the table does not fit
MAX_EXACT_LATENTS = 16


class _Parameters(torch.nn.Module):
    """θ: the prior's logits and the decoder."""

    def __init__(self, num_latents: int, hidden: Sequence[int], num_pixels: int) -> None:
        super().__init__()
        self.prior_logits = torch.nn.Parameter(torch.zeros(num_latents))
        self.decoder = mlp([num_latents, *hidden, num_pixels], torch.nn.Tanh)


@models.register(
    "sbn",
    exact_log_evidence=True,
    example_params={"num_train": 40, "num_heldout": 10, "num_latents": 3},
    example_guide="amortized_bernoulli",
)
class SigmoidBeliefNetwork(BinarisedImageModel):
    r"""A sigmoid belief network (Neal 1992) on binarised images, with H binary latents:

    .. math::

        z_{nh} \sim \mathrm{Bernoulli}(\sigma(a_h)), \qquad
        x_n \mid z_n \sim \prod_d \mathrm{Bernoulli}\big(\sigma(f_\theta(z_n))_d\big),

    :math:`f_\theta` affine (``hidden=[]``, the classic one-layer network
    :math:`W z + b`) or a tanh MLP; θ = (a, f's weights) are learned with the guide's φ
    (``guide=amortized_bernoulli``). Data, split and binarisation: see
    :class:`~pyro_elbo_lab.models.images.BinarisedImageModel`.

    With H ≤ 16 the log evidence is exact, by summing the :math:`2^H` joint states
    :math:`s`: with :math:`\ell_s = f_\theta(s)`,

    .. math::

        \log p(x_n) = \log \sum_s \exp\Big(\log p(s) + x_n^\top \ell_s
            - \textstyle\sum_d \operatorname{softplus}(\ell_{sd})\Big),

    one matrix product of the images with the :math:`2^H` decoded states, so every bound,
    gap and test log-likelihood of this model is exact. ``marginal=exact`` makes that
    sum the model itself (a ``pyro.factor`` per image, no latents; fit it with
    ``guide=none``): θ is then trained by the exact marginal likelihood, the ceiling the
    variational methods are measured against.

    References: R. M. Neal, "Connectionist learning of belief networks", Artificial
    Intelligence, 1992; A. Mnih, D. J. Rezende, "Variational Inference for Monte Carlo
    Objectives", ICML 2016; T. A. Le et al., "Revisiting Reweighted Wake-Sleep for Models
    with Stochastic Control Flow", UAI 2019.
    """

    def __init__(
        self,
        *,
        num_latents: int = 10,
        hidden: Sequence[int] = (),
        marginal: Literal["sampled", "exact"] = "sampled",
        **data: Any,
    ) -> None:
        require_positive_int("model.num_latents", num_latents)
        if num_latents > MAX_EXACT_LATENTS:
            raise ConfigError(
                f"model.num_latents = {num_latents}: the exact log evidence sums 2^H states, "
                f"at most H = {MAX_EXACT_LATENTS}; lower it"
            )
        for width in hidden:
            require_positive_int("model.hidden entries", width)
        if marginal not in MARGINALS:
            raise ConfigError(
                f"model.marginal must be one of {', '.join(MARGINALS)}, got {marginal!r}"
            )
        self.num_latents, self.marginal = num_latents, marginal
        super().__init__(**data)
        self.network = _Parameters(num_latents, hidden, self.num_pixels).to(self.device)
        # every joint state of the latents, [2^H, H]
        self.states = torch.tensor(
            list(itertools.product((0.0, 1.0), repeat=num_latents)), device=self.device
        )

    def model(self, data: torch.Tensor) -> None:
        pyro.module("sbn", self.network)
        with self.data_plate_over(data) as index:
            if self.marginal == "exact":
                pyro.factor("x", self.log_marginal(data[index]))
                return
            z = pyro.sample("z", dist.Bernoulli(logits=self.network.prior_logits).to_event(1))
            logits = self.network.decoder(z)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=data[index])

    def log_marginal(self, images: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p_\\theta(x_n)` per row of ``images``, exact, differentiable in θ."""
        prior = self.network.prior_logits
        log_prior = (self.states * logsigmoid(prior) + (1 - self.states) * logsigmoid(-prior)).sum(
            -1
        )
        logits = self.network.decoder(self.states)  # [2^H, D]
        log_likelihood = images @ logits.T - softplus(logits).sum(-1)  # [N, 2^H]
        return (log_prior + log_likelihood).logsumexp(-1)

    @torch.no_grad()
    def exact_log_evidence(self, data: torch.Tensor | None = None) -> float:
        """log p(data) at the current θ (default: the training images)."""
        images = self.train_data if data is None else data
        return float(self.log_marginal(images).double().sum())

    def pixel_logits(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.network.decoder(latents["z"])

    @torch.no_grad()
    def prior_latents(self, num_images: int) -> dict[str, torch.Tensor]:
        prior = dist.Bernoulli(logits=self.network.prior_logits).to_event(1)
        return {"z": prior.sample((num_images,))}
