r"""Your own Pyro model in the lab: a callable from a file or a module, on your data."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from pyro_elbo_lab.engine import plate_depth
from pyro_elbo_lab.errors import ConfigError, first_line, require, require_positive_int
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.models.data_files import load_array
from pyro_elbo_lab.registry import models

TARGET_FORMS = "PATH.py:NAME or package.module:NAME"


def poisson_regression(data: torch.Tensor) -> None:
    """Poisson regression of counts (column 1) on a covariate (column 0): the example
    ``model=custom`` runs in the registry's checks, on ``data/poisson_counts.csv``."""
    x, counts = data[:, 0], data[:, 1]
    slope = pyro.sample("slope", dist.Normal(0.0, 1.0))
    intercept = pyro.sample("intercept", dist.Normal(0.0, 2.0))
    with pyro.plate("data", data.shape[0]):
        pyro.sample("counts", dist.Poisson((intercept + slope * x).exp()), obs=counts)


EXAMPLE = {
    "target": f"{__name__}:poisson_regression",
    "data": str(Path(__file__).resolve().parents[1] / "data" / "poisson_counts.csv"),
    "num_heldout": 20,
}


def load_target(target: str) -> Callable[..., Any]:
    """The callable ``target`` names: ``path/to/file.py:name`` or ``package.module:name``.

    Every failure (no ``:``, a missing file or module, a missing or non-callable name)
    is one :class:`ConfigError` that says what to give instead.
    """
    require(
        isinstance(target, str) and target.count(":") == 1 and all(target.split(":")),
        f"model.target must be {TARGET_FORMS}, got {target!r}",
    )
    location, name = target.split(":")
    if location.endswith(".py"):
        path = Path(location).expanduser()
        require(
            path.is_file(), f"model.target file {str(path)!r} does not exist; give {TARGET_FORMS}"
        )
        spec = importlib.util.spec_from_file_location(f"elbo_lab_custom_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and pickling look modules up here
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise ConfigError(
                f"model.target file {path.name} failed to import ({type(error).__name__}: "
                f"{first_line(error)}); fix the file"
            ) from error
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as error:
            raise ConfigError(
                f"model.target module {location!r} cannot be imported ({first_line(error)}); "
                f"install it or give {TARGET_FORMS}"
            ) from error
    program = getattr(module, name, None)
    if program is None:
        found = sorted(
            key
            for key, value in vars(module).items()
            if callable(value) and not key.startswith("_")
        )
        raise ConfigError(
            f"model.target: {location} has no {name!r}; its callables are: "
            f"{', '.join(found) or 'none'}"
        )
    require(
        callable(program),
        f"model.target {target} is a {type(program).__name__}, not a callable Pyro model; "
        "name a function (or module) that takes the data tensor",
    )
    return program


@models.register("custom", example_params=EXAMPLE)
class CustomModel(LatentVariableModel):
    r"""Your own Pyro model: ``target`` names a callable, ``data`` a file of observations.

    The callable is called as ``target(data)`` with the data as one tensor (rows first,
    float32), or ``target()`` when no data file is given. With ``num_heldout`` > 0 its
    rows are shuffled with ``seed`` and the last ``num_heldout`` held out (with 0 they
    keep the file's order); every output names a row by its 0-based position in the
    file (:attr:`train_rows`, the data plate's coordinate). Held-out log-likelihood needs the
    observations in a plate named ``data_plate`` over the rows (and global latents, or
    ``local_latents=true`` to skip it). Nothing about the posterior is known, so the
    ground-truth metrics (gaps to log p(x), KL, posterior error) are skipped with a note
    in the record; bounds, PSIS k̂ and held-out likelihood are measured, and
    ``evaluation.ais_temperatures > 0`` estimates log p(x) by annealed importance sampling.

    :param target: ``PATH.py:NAME`` or ``package.module:NAME``.
    :param data: a ``.csv`` (rows; a header row is skipped) or ``.npy`` file.
    :param num_heldout: rows held out for the held-out likelihood (0: none).
    :param data_plate: the name of the plate over the data's rows in ``target``.
    :param max_plate_nesting: the model's plate depth (read from one run if omitted).
    :param local_latents: whether latents live inside the data plate (one per row).
    """

    def __init__(
        self,
        *,
        target: str | None = None,
        data: str | None = None,
        num_heldout: int = 0,
        data_plate: str = "data",
        max_plate_nesting: int | None = None,
        local_latents: bool = False,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        require(
            target is not None,
            f"model=custom needs model.target={TARGET_FORMS} (a Pyro model callable)",
        )
        require_positive_int("model.num_heldout", num_heldout, minimum=0)
        self.target = target
        self.program = load_target(target)
        self.takes_data = data is not None
        self.file_data = load_array(data, "model.data") if data is not None else None
        rows = 1 if self.file_data is None else self.file_data.shape[0]
        require(
            rows > num_heldout,
            f"model.data has {rows} rows, not enough for model.num_heldout={num_heldout} "
            "held-out rows and a training set; hold out fewer",
        )
        self.data_plate = data_plate
        self.has_local_latents = local_latents
        self.num_heldout = num_heldout
        super().__init__(
            num_train=rows - num_heldout, num_heldout=num_heldout, seed=seed, device=device
        )
        trace = self._trace_once()
        self.max_plate_nesting = (
            plate_depth(trace) if max_plate_nesting is None else max_plate_nesting
        )
        if num_heldout:
            self._require_data_plate(trace)

    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        if self.file_data is None:  # a model without data: one empty row
            return torch.zeros(num_data, 0)
        if not self.num_heldout:  # nothing to hold out: the rows stay in the file's order
            return self.file_data[:num_data]
        return self.file_data[self.pick_rows(self.file_data.shape[0], num_data, generator)]

    def model(self, data: torch.Tensor) -> None:
        if self.takes_data:
            self.program(data)
        else:
            self.program()

    def _trace_once(self) -> poutine.Trace:
        """Run the model once on the training data; a model that raises fails here."""
        try:
            with poutine.block():
                return poutine.trace(self.model).get_trace(self.train_data)
        except Exception as error:
            on = f"the data {tuple(self.train_data.shape)}" if self.takes_data else "no data"
            raise ConfigError(
                f"model.target {self.target} raised {type(error).__name__} when run on {on}: "
                f"{first_line(error)}; fix the model, or give the data it expects (model.data)"
            ) from error

    def _require_data_plate(self, trace: poutine.Trace) -> None:
        observed_in_plate = any(
            site["type"] == "sample"
            and site["is_observed"]
            and any(frame.name == self.data_plate for frame in site["cond_indep_stack"])
            for site in trace.nodes.values()
        )
        require(
            observed_in_plate,
            f"model.num_heldout > 0 needs the model's observations in a plate named "
            f"{self.data_plate!r} over the data's rows (model.data_plate); name that plate "
            "so, or set model.num_heldout=0",
        )
