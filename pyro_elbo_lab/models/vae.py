r"""The variational autoencoder: a Bernoulli decoder learned with an amortised guide."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Literal

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyro_elbo_lab.errors import ConfigError, require, require_positive_int
from pyro_elbo_lab.guides.amortized import mlp
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.registry import models

BINARIZATIONS = ("sampled", "threshold")


def load_images(path: str | Path | None) -> torch.Tensor:
    """Greyscale images ``[N, H, W]`` in [0, 1] from an .npz with an ``images`` array
    (uint8 0–255 or floats in [0, 1]); None: the package's 5,000 MNIST digits."""
    source = files("pyro_elbo_lab.data").joinpath("mnist5k.npz") if path is None else Path(path)
    name = "model.data_file"
    require(source.is_file(), f"{name} {str(source)!r} does not exist")
    with np.load(source) as archive:
        require(
            "images" in archive.files,
            f"{name} {source.name} has no 'images' array (it has {archive.files}); expected "
            "images of shape (num_images, height, width)",
        )
        images = archive["images"]
    require(
        images.ndim == 3 and images.shape[0] >= 1,
        f"{name} {source.name}: 'images' has shape {images.shape}; expected (num_images, "
        "height, width)",
    )
    values = torch.as_tensor(images.astype(np.float32))
    if images.dtype == np.uint8:
        values = values / 255.0
    require(
        bool(values.isfinite().all()) and float(values.min()) >= 0 and float(values.max()) <= 1,
        f"{name} {source.name}: pixel values must be uint8 or floats in [0, 1] (no NaN)",
    )
    return values


@models.register(
    "vae",
    example_params={"num_train": 40, "num_heldout": 10, "latent_dim": 2, "hidden": [16]},
)
class VariationalAutoencoder(LatentVariableModel):
    r"""A VAE on binarised images (Kingma & Welling 2014; Burda et al. 2016's first
    architecture by default, smaller): per image

    .. math::

        z_n \sim \mathcal N(0, I_L), \qquad
        x_n \mid z_n \sim \prod_d \mathrm{Bernoulli}\big(\sigma(f_\theta(z_n))_d\big),

    :math:`f_\theta` an MLP decoder (``hidden`` widths, tanh between layers as in Burda
    et al.) whose weights θ are parameters of the model, learned with the guide's φ (the
    encoder of ``guide=amortized``). The images (default: the package's 5,000 MNIST
    digits; ``data_file``: an .npz of the same layout, any image size) are shuffled
    with ``seed``, the first ``num_train`` train and the next ``num_heldout`` test, and
    binarised once, ``sampled`` (each pixel Bernoulli(grey value), Salakhutdinov &
    Murray 2008) or by ``threshold`` 0.5; both are recorded with the config.

    ``top_latent_dim`` adds Burda et al.'s second stochastic layer: a top latent
    :math:`z'_n \sim \mathcal N(0, I)` of that size, and
    :math:`z_n \mid z'_n \sim \mathcal N(\mu_\theta(z'_n), \operatorname{diag}
    \sigma^2_\theta(z'_n))` from a tanh MLP (``top_hidden``; their architecture: L = 100,
    L' = 50, 100-unit layers). ``guide=amortized`` then gives both layers a mean-field
    Gaussian given :math:`x_n` from one encoder, not Burda et al.'s
    :math:`q(z \mid x)\,q(z' \mid z)`.

    ``subsample_size`` trains on minibatches of images (scaled by N / batch).

    References: D. P. Kingma, M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014;
    Y. Burda, R. Grosse, R. Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
    """

    has_local_latents = True

    def __init__(
        self,
        *,
        latent_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        top_latent_dim: int | None = None,
        top_hidden: Sequence[int] = (100, 100),
        binarization: Literal["sampled", "threshold"] = "sampled",
        data_file: str | None = None,
        num_train: int = 4000,
        num_heldout: int = 1000,
        subsample_size: int | None = 100,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        require_positive_int("model.latent_dim", latent_dim)
        for width in [*hidden, *top_hidden]:
            require_positive_int("model.hidden and model.top_hidden entries", width)
        if top_latent_dim is not None:
            require_positive_int("model.top_latent_dim", top_latent_dim)
        if binarization not in BINARIZATIONS:
            raise ConfigError(
                f"model.binarization must be one of {', '.join(BINARIZATIONS)}, "
                f"got {binarization!r}"
            )
        if subsample_size is not None:
            require_positive_int("model.subsample_size", subsample_size)
        self.subsample_size = subsample_size
        self.latent_dim, self.binarization, self.data_file = latent_dim, binarization, data_file
        super().__init__(num_train=num_train, num_heldout=num_heldout, seed=seed, device=device)
        pixels = self.train_data.shape[1]
        # Burda et al.'s decoder has tanh hidden units
        self.decoder = mlp([latent_dim, *hidden, pixels], torch.nn.Tanh).to(self.device)
        self.top_latent_dim = top_latent_dim
        self.top = (
            None
            if top_latent_dim is None
            else mlp([top_latent_dim, *top_hidden, 2 * latent_dim], torch.nn.Tanh).to(self.device)
        )

    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        """The shuffled, binarised images (the data are fixed; ``generator`` draws the
        split and, for ``sampled``, the binarisation)."""
        images = load_images(self.data_file)
        if num_data > images.shape[0]:
            raise ConfigError(
                f"model.num_train + model.num_heldout = {num_data} images, but the data hold "
                f"{images.shape[0]}; lower them"
            )
        order = torch.randperm(images.shape[0], generator=generator)[:num_data]
        grey = images[order].reshape(num_data, -1)
        if self.binarization == "threshold":
            return (grey > 0.5).float()
        return torch.bernoulli(grey, generator=generator)

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
                loc, raw_scale = self.top(z_top).chunk(2, dim=-1)
                scale = torch.nn.functional.softplus(raw_scale) + 1e-4
                z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            logits = self.decoder(z)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=data[index])
