"""A run's fitted posterior as ArviZ data: ``posterior.nc`` (and ``reference_posterior.nc``).

The files follow ArviZ's InferenceData netCDF layout (one netCDF4 group per
``posterior``, ``log_likelihood``, ``observed_data``; dims ``chain``, ``draw`` and the
model's plates), written with xarray, so ``az.from_netcdf`` reads them like NumPyro or
PyMC output and ``az.summary``, ``az.plot_posterior`` and ``az.loo`` work on them. Guide
draws are independent, so they form one chain. The data plate's coordinate is each row's
0-based position in the data the model read (the user's file), so ``theta.sel(data=i)``
is row i of the file whatever the train/held-out shuffle. A model with reference draws (MCMC) gets
a second file with the same layout, to compare side by side.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.evaluation.posterior_draws import NamedArray, guide_posterior
from pyro_elbo_lab.models.base import LatentVariableModel

POSTERIOR_FILE = "posterior.nc"
REFERENCE_FILE = "reference_posterior.nc"
INSTALL = "pip install 'pyro-elbo-lab[arviz]' (xarray and h5netcdf)"


def write_posterior_files(
    model: LatentVariableModel,
    guide: Callable[..., Any],
    num_draws: int,
    directory: Path,
    attributes: dict[str, str],
) -> dict[str, str]:
    """Write ``num_draws`` guide draws to ``posterior.nc`` (and the model's reference
    draws, if any, to ``reference_posterior.nc``); return the file names by role."""
    xarray = xarray_module()
    draws = guide_posterior(model, guide, num_draws)
    directory.mkdir(parents=True, exist_ok=True)
    attrs = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "inference_library": "pyro-elbo-lab",
        **attributes,
    }
    groups = {
        "posterior": draws.posterior,
        "log_likelihood": draws.log_likelihood,
        "observed_data": draws.observed_data,
    }
    # the data plate's coordinate: each row's position in the user's data, whatever shuffle
    coords = {model.data_plate: model.train_rows.numpy()}
    _write(xarray, directory / POSTERIOR_FILE, groups, attrs, coords)
    written = {"posterior": POSTERIOR_FILE}
    reference = model.reference_posterior_draws()
    if reference is not None:
        same_dims = {
            name: NamedArray(values, draws.posterior[name].dims)
            for name, values in reference.items()
            if name in draws.posterior
        }
        reference_groups = {"posterior": same_dims, "observed_data": draws.observed_data}
        _write(
            xarray,
            directory / REFERENCE_FILE,
            reference_groups,
            {**attrs, "source": "reference draws"},
            coords,
        )
        written["reference_posterior"] = REFERENCE_FILE
    return written


def _write(
    xarray: Any,
    path: Path,
    groups: dict[str, dict[str, NamedArray]],
    attrs: dict,
    coords: dict[str, Any],
) -> None:
    """One netCDF4 group per entry of ``groups``; a dim named in ``coords`` gets that
    coordinate where its length matches."""
    mode = "w"
    for group, arrays in groups.items():
        if not arrays:
            continue
        with_draws = group != "observed_data"
        variables = {
            name: (
                ("chain", "draw", *array.dims) if with_draws else array.dims,
                (array.values.unsqueeze(0) if with_draws else array.values).detach().numpy(),
            )
            for name, array in arrays.items()
        }
        lengths = {dim: size for dims, values in variables.values()
                   for dim, size in zip(dims, values.shape, strict=True)}  # fmt: skip
        dataset = xarray.Dataset(
            variables,
            coords={dim: v for dim, v in coords.items() if lengths.get(dim) == len(v)},
            attrs=attrs,
        )
        dataset.to_netcdf(path, mode=mode, group=group, engine="h5netcdf")
        mode = "a"


def xarray_module() -> Any:
    """xarray, with the h5netcdf engine it writes netCDF4 groups with; a missing extra
    fails in one line naming the install command."""
    try:
        import h5netcdf  # noqa: F401 (the netCDF4 engine xarray writes groups with)
        import xarray
    except ImportError:
        raise ConfigError(f"posterior_draws > 0 writes ArviZ data and needs: {INSTALL}") from None
    return xarray
