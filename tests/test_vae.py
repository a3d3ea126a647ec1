"""The variational autoencoder: its data, its refusals, and that it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab import run
from pyro_elbo_lab.registry import models

SMALL = {"num_train": 30, "num_heldout": 10, "latent_dim": 2, "hidden": [8]}


def test_the_digits_are_split_and_binarised_by_the_seed():
    first = models.build("vae", **SMALL, seed=3)
    again = models.build("vae", **SMALL, seed=3)
    other = models.build("vae", **SMALL, seed=4)
    assert first.train_data.shape == (30, 784) and first.heldout_data.shape == (10, 784)
    assert set(first.train_data.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(first.train_data, again.train_data)
    assert not torch.equal(first.train_data, other.train_data)
    threshold = models.build("vae", **SMALL, seed=3, binarization="threshold")
    assert not torch.equal(first.train_data, threshold.train_data)


def test_a_data_file_of_other_images_sets_the_decoder_size(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(50, 8, 6), dtype=np.uint8)
    np.savez(tmp_path / "small.npz", images=images)
    model = models.build("vae", **SMALL, data_file=str(tmp_path / "small.npz"))
    assert model.train_data.shape == (30, 48)
    assert model.decoder[-1].out_features == 48


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"pixels": np.zeros((5, 4, 4))}, "has no 'images' array"),
        ({"images": np.zeros((5, 16))}, "expected (num_images, height, width)"),
        ({"images": np.full((50, 4, 4), np.nan)}, "pixel values must be uint8 or floats"),
        ({"images": np.zeros((20, 4, 4))}, "the data hold 20; lower them"),
    ],
)
def test_a_bad_data_file_fails_in_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        models.build("vae", **SMALL, data_file=str(tmp_path / "bad.npz"))


@pytest.mark.slow
def test_the_decoder_and_encoder_learn_together(compose_config, tmp_path):
    config = compose_config(
        "model=vae", "model.num_train=200", "model.num_heldout=10", "model.latent_dim=2",
        "model.hidden=[32]", "model.subsample_size=50", "guide=amortized",
        "objective=iwae", "objective.num_particles=4", "optim.optim_args.lr=0.005",
        "steps=300", "evaluation.particle_batch=5",
    )  # fmt: skip
    record = run(config, output_dir=tmp_path)
    assert record["status"] == "ok", record["message"]
    losses = record["fit"]["loss_history"]["loss"]
    # per image: from about 543 nats (784 pixels at p = 1/2) to well below
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:5])
    assert record["model_parameters"]["trained_by"] == "bound"
    assert any(name.startswith("decoder") for name in record["model_parameters"]["names"])


def test_a_second_stochastic_layer_is_learned_too(compose_config, tmp_path):
    config = compose_config(
        "model=vae", "model.num_train=60", "model.num_heldout=10", "model.latent_dim=3",
        "model.top_latent_dim=2", "model.top_hidden=[8]", "model.hidden=[16]",
        "model.subsample_size=20", "guide=amortized", "objective=iwae",
        "objective.num_particles=2", "optim.optim_args.lr=0.01", "steps=40",
        "evaluation.particle_batch=5",
    )  # fmt: skip
    record = run(config, output_dir=tmp_path)
    assert record["status"] == "ok", record["message"]
    names = record["model_parameters"]["names"]
    assert any(n.startswith("top") for n in names) and any(n.startswith("decoder") for n in names)
    losses = record["fit"]["loss_history"]["loss"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
