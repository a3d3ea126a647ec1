"""Reading a user's data file into a model's points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pyro_elbo_lab.errors import ConfigError, require


def load_points(path: str | Path, dim: int) -> torch.Tensor:
    """Rows of a CSV (comma-separated, optional header) or NPY file as float32 ``[N, D]``."""
    path = Path(path)
    require(path.is_file(), f"model.data_file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path)
    elif suffix == ".csv":
        with path.open() as lines:
            first = lines.readline()
        try:
            [float(value) for value in first.split(",")]
            header = 0
        except ValueError:  # a header row of column names
            header = 1
        array = np.loadtxt(path, delimiter=",", skiprows=header, ndmin=2)
    else:
        raise ConfigError(f"model.data_file must be a .csv or .npy file, got {str(path)!r}")
    require(
        array.ndim == 2 and array.shape[1] == dim,
        f"model.data_file {path.name} holds an array of shape {array.shape}; expected "
        f"(num_points, {dim}) for model.dim={dim} (one point per row)",
    )
    points = torch.as_tensor(array, dtype=torch.float32)
    require(
        bool(points.isfinite().all()),
        f"model.data_file {path.name} has NaN or infinite entries (rows "
        f"{torch.nonzero(~points.isfinite().all(1)).flatten()[:5].tolist()}...); clean "
        "or drop them first",
    )
    return points
