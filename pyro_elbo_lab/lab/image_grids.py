"""A learned image model's pictures: test images beside their reconstructions, and
images generated from the prior."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pyro_elbo_lab.evaluation.learned_model import encoder_of
from pyro_elbo_lab.lab.plots import plot_image_grid
from pyro_elbo_lab.models.images import BinarisedImageModel

RECONSTRUCTIONS_FILE = "reconstructions.png"
SAMPLES_FILE = "samples.png"


@torch.no_grad()
def write_image_grids(
    model: BinarisedImageModel, guide: Any, directory: Path, num_images: int = 12
) -> dict[str, str]:
    """Write ``reconstructions.png`` (the first ``num_images`` test images, and below
    them :math:`E[x \\mid z]` at the encoder's mean :math:`E_q[z \\mid x]`; needs an
    amortised guide) and ``samples.png`` (two rows of :math:`E[x \\mid z]`, z from the
    prior). Returns the files written by kind."""
    directory.mkdir(parents=True, exist_ok=True)
    shape = model.image_shape

    def pictures(latents: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(model.pixel_logits(latents)).reshape(-1, *shape)

    written = {}
    encoder = encoder_of(guide)
    test = model.heldout_data[:num_images]
    if encoder is not None and test.shape[0]:
        reconstructed = pictures(encoder.local_means(test))
        plot_image_grid(
            [test.reshape(-1, *shape), reconstructed],
            ["test images", "reconstructions E[x | z = E_q[z | x]]"],
            directory / RECONSTRUCTIONS_FILE,
        )
        written["reconstructions"] = RECONSTRUCTIONS_FILE
    samples = pictures(model.prior_latents(2 * num_images))
    plot_image_grid(
        [samples[:num_images], samples[num_images:]],
        ["samples E[x | z], z ~ p(z)", ""],
        directory / SAMPLES_FILE,
    )
    written["samples"] = SAMPLES_FILE
    return written
