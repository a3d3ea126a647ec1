r"""The variational autoencoder: a Bernoulli decoder learned with an amortised guide."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch

from pyro_elbo_lab.errors import require_positive_int
from pyro_elbo_lab.guides.amortized import mlp
from pyro_elbo_lab.models.images import BinarisedImageModel
from pyro_elbo_lab.registry import models


@models.register(
    "vae",
    example_params={"num_train": 40, "num_heldout": 10, "latent_dim": 2, "hidden": [16]},
    example_guide="amortized",
)
class VariationalAutoencoder(BinarisedImageModel):
    r"""A VAE on binarised images (Kingma & Welling 2014; Burda et al. 2016's first
    architecture by default, smaller): per image

    .. math::

        z_n \sim \mathcal N(0, I_L), \qquad
        x_n \mid z_n \sim \prod_d \mathrm{Bernoulli}\big(\sigma(f_\theta(z_n))_d\big),

    :math:`f_\theta` an MLP decoder (``hidden`` widths, tanh between layers as in Burda
    et al.) whose weights θ are parameters of the model, learned with the guide's φ (the
    encoder of ``guide=amortized``). Data, split, binarisation and minibatches: see
    :class:`~pyro_elbo_lab.models.images.BinarisedImageModel`.

    ``top_latent_dim`` adds Burda et al.'s second stochastic layer: a top latent
    :math:`z'_n \sim \mathcal N(0, I)` of that size, and
    :math:`z_n \mid z'_n \sim \mathcal N(\mu_\theta(z'_n), \operatorname{diag}
    \sigma^2_\theta(z'_n))` from a tanh MLP (``top_hidden``; their architecture: L = 100,
    L' = 50, 100-unit layers). ``guide=amortized`` gives both layers a mean-field
    Gaussian given :math:`x_n` from one encoder; ``guide.chain=true`` gives Burda et al.'s
    :math:`q(z \mid x)\,q(z' \mid z)`.

    References: D. P. Kingma, M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014;
    Y. Burda, R. Grosse, R. Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
    """

    def __init__(
        self,
        *,
        latent_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        top_latent_dim: int | None = None,
        top_hidden: Sequence[int] = (100, 100),
        **data: Any,
    ) -> None:
        require_positive_int("model.latent_dim", latent_dim)
        for width in [*hidden, *top_hidden]:
            require_positive_int("model.hidden and model.top_hidden entries", width)
        if top_latent_dim is not None:
            require_positive_int("model.top_latent_dim", top_latent_dim)
        self.latent_dim = latent_dim
        super().__init__(**data)
        # Burda et al.'s decoder has tanh hidden units
        self.decoder = mlp([latent_dim, *hidden, self.num_pixels], torch.nn.Tanh).to(self.device)
        self.top_latent_dim = top_latent_dim
        self.top = (
            None
            if top_latent_dim is None
            else mlp([top_latent_dim, *top_hidden, 2 * latent_dim], torch.nn.Tanh).to(self.device)
        )

    def _lower_layer(self, z_top: torch.Tensor) -> dist.Distribution:
        loc, raw_scale = self.top(z_top).chunk(2, dim=-1)
        return dist.Normal(loc, torch.nn.functional.softplus(raw_scale) + 1e-4).to_event(1)

    def model(self, data: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        zeros = torch.zeros(self.latent_dim, device=self.device)
        with self.data_plate_over(data) as index:
            if self.top is None:
                z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            else:
                pyro.module("top", self.top)
                top_zeros = torch.zeros(self.top_latent_dim, device=self.device)
                z_top = pyro.sample("z_top", dist.Normal(top_zeros, 1.0).to_event(1))
                z = pyro.sample("z", self._lower_layer(z_top))
            logits = self.decoder(z)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=data[index])

    def pixel_logits(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.decoder(latents["z"])

    @torch.no_grad()
    def prior_latents(self, num_images: int) -> dict[str, torch.Tensor]:
        if self.top is None:
            return {"z": torch.randn(num_images, self.latent_dim, device=self.device)}
        z_top = torch.randn(num_images, self.top_latent_dim, device=self.device)
        return {"z_top": z_top, "z": self._lower_layer(z_top).sample()}
