"""What a run writes beside its record about the fitted guide's predictions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pyro_elbo_lab.lab.plots import plot_mixture
from pyro_elbo_lab.models.base import LatentVariableModel


def write_predictions(
    model: LatentVariableModel, guide: Callable, directory: Path
) -> dict[str, str] | None:
    """For a model with predictions of its own (a mixture's clusters), write them: the
    held-out cluster probabilities (``heldout_cluster_probabilities.npy``,
    ``[N_heldout, K]``) and a plot of the fitted mixture at the guide's posterior median
    (``mixture.png``: training points coloured by their most probable component, 1- and
    2-sd ellipses of each component in the first two coordinates), with each held-out
    row's 0-based position in the data file (``heldout_rows.npy``). Returns the file
    names, or None for a model without predictions."""
    predictions = getattr(model, "predictions", None)
    if predictions is None:
        return None
    fit = predictions(guide)
    directory.mkdir(parents=True, exist_ok=True)
    np.save(
        directory / "heldout_cluster_probabilities.npy",
        fit.heldout_cluster_probabilities.cpu().numpy(),
    )
    np.save(directory / "heldout_rows.npy", model.heldout_rows.numpy())
    plot_mixture(
        model.train_data,
        fit.train_labels,
        fit.locs,
        fit.scale,
        fit.full_covariance,
        directory / "mixture.png",
    )
    return {
        "cluster_probabilities": "heldout_cluster_probabilities.npy",
        "heldout_rows": "heldout_rows.npy",
        "plot": "mixture.png",
    }
