r"""Binarised image data shared by the learned image models (``vae``, ``sbn``)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pyro_elbo_lab.errors import ConfigError, require
from pyro_elbo_lab.models.base import LatentVariableModel

BINARIZATIONS = ("sampled", "threshold", "dynamic")


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


@dataclass(frozen=True)
class ImageData:
    """Where an image model's data come from and how they are split and binarised."""

    binarization: Literal["sampled", "threshold", "dynamic"] = "sampled"
    data_file: str | None = None
    num_train: int = 4000
    num_heldout: int = 1000
    subsample_size: int | None = 100
    subsample_with_replacement: bool = True
    seed: int = 0
    device: str = "cpu"


class BinarisedImageModel(LatentVariableModel):
    """A model of binarised images with parameters θ of its own, learned with the guide.

    The images (default: the package's 5,000 MNIST digits; ``data_file``: an .npz of the
    same layout, any image size) are shuffled with ``seed``, the first ``num_train``
    train and the next ``num_heldout`` test, and binarised once, ``sampled`` (each pixel
    Bernoulli(grey value), Salakhutdinov & Murray 2008) or by ``threshold`` 0.5; the
    config records both. ``dynamic`` (Burda et al. 2016's setting) binarises the
    training images afresh every time a step uses them: each step draws its minibatch
    rows and a new Bernoulli(grey value) image of each (:meth:`step_data`), so the model
    sees a different binary image of a digit each epoch; the test images and the
    training images that evaluation measures are one ``sampled`` draw.
    ``subsample_size`` trains on minibatches of images (scaled by N / batch;
    ``subsample_with_replacement``: how the indices are drawn). Subclasses decode
    latents to pixel logits (:meth:`pixel_logits`) and draw latents from the prior
    (:meth:`prior_latents`), which the lab's image grids use.
    """

    has_local_latents = True
    learns_parameters = True
    #: the data options every image model takes through ``**data`` (checked by the registry)
    options_type = ImageData

    def __init__(self, **data: Any) -> None:
        options = ImageData(**data)
        if options.binarization not in BINARIZATIONS:
            raise ConfigError(
                f"model.binarization must be one of {', '.join(BINARIZATIONS)}, "
                f"got {options.binarization!r}"
            )
        self.set_subsampling(options.subsample_size, options.subsample_with_replacement)
        self.binarization, self.data_file = options.binarization, options.data_file
        self.image_shape: tuple[int, ...] = ()
        self._grey = torch.empty(0)
        super().__init__(
            num_train=options.num_train,
            num_heldout=options.num_heldout,
            seed=options.seed,
            device=options.device,
        )
        dynamic = options.binarization == "dynamic"
        self.train_grey = self._grey[: options.num_train].to(self.device) if dynamic else None
        del self._grey

    def step_data(self) -> torch.Tensor:
        """With ``binarization=dynamic``: a minibatch of training rows (drawn as the data
        plate draws them), each binarised afresh from its grey values; else the training set."""
        if self.train_grey is None:
            return super().step_data()
        rows = self.minibatch_rows(self.train_grey.shape[0], self.train_grey.device)
        grey = self.train_grey if rows is None else self.train_grey[rows]
        self._step_minibatch = torch.bernoulli(grey)
        return self._step_minibatch

    @property
    def num_pixels(self) -> int:
        return int(self.train_data.shape[1])

    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        """The shuffled, binarised images (the data are fixed; ``generator`` draws the
        split and, for ``sampled``, the binarisation)."""
        images = load_images(self.data_file)
        self.image_shape = tuple(images.shape[1:])
        if num_data > images.shape[0]:
            raise ConfigError(
                f"model.num_train + model.num_heldout = {num_data} images, but the data hold "
                f"{images.shape[0]}; lower them"
            )
        order = self.pick_rows(images.shape[0], num_data, generator)
        grey = images[order].reshape(num_data, -1)
        self._grey = grey
        if self.binarization == "threshold":
            return (grey > 0.5).float()
        return torch.bernoulli(grey, generator=generator)

    def pixel_logits(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of p(x | z) for latents ``{site: [B, ...]}`` (the model's current θ)."""
        raise NotImplementedError

    def prior_latents(self, num_images: int) -> dict[str, torch.Tensor]:
        """``num_images`` draws of every latent site from the prior p(z)."""
        raise NotImplementedError
