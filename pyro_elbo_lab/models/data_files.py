"""Reading a user's data file into a model's points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pyro_elbo_lab.errors import ConfigError, require


def load_array(path: str | Path, option: str = "model.data_file") -> torch.Tensor:
    """A .npy array (any shape) or the rows of a .csv (comma-separated, optional header
    row) as float32, with NaN and infinite entries refused. ``option`` names the config
    key in errors."""
    path = Path(path).expanduser()
    require(path.is_file(), f"{option} {str(path)!r} does not exist")
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
        raise ConfigError(f"{option} must be a .csv or .npy file, got {str(path)!r}")
    points = torch.as_tensor(np.asarray(array, dtype=np.float32))
    require(points.dim() >= 1 and points.shape[0] >= 1, f"{option} {path.name} holds no rows")
    finite = points.isfinite().reshape(points.shape[0], -1).all(1)
    require(
        bool(finite.all()),
        f"{option} {path.name} has NaN or infinite entries (rows "
        f"{torch.nonzero(~finite).flatten()[:5].tolist()}...); clean or drop them first",
    )
    return points


def load_points(path: str | Path, dim: int) -> torch.Tensor:
    """Rows of a CSV (comma-separated, optional header) or NPY file as float32 ``[N, D]``."""
    points = load_array(path)
    require(
        points.dim() == 2 and points.shape[1] == dim,
        f"model.data_file {Path(path).name} holds an array of shape {tuple(points.shape)}; "
        f"expected (num_points, {dim}) for model.dim={dim} (one point per row)",
    )
    return points
