"""posteriordb's files: a data set in its JSON layout, checked against a model's schema;
reference draws, packaged (``.npz``) or posteriordb's own ``reference_draws.json.zip``."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pyro_elbo_lab.errors import ConfigError, require

PACKAGE = "pyro_elbo_lab.data"
FOLDER = "posteriordb"


@dataclass(frozen=True)
class Field:
    """One entry of a data set: a scalar, or an array whose sizes other entries give.

    ``shape`` names the integer entries (or gives numbers) that size each dim, e.g.
    ``("N",)`` for ``vector[N]``, ``("N", "K")`` for ``matrix[N, K]``.
    """

    kind: Literal["int", "real"]
    shape: tuple[str | int, ...] = ()


def _read_json(source: Any) -> Any:
    """A JSON file, or the one JSON file inside a zip archive."""
    with source.open("rb") as handle:
        if str(getattr(source, "name", source)).endswith(".zip"):
            with zipfile.ZipFile(handle) as archive:
                return json.loads(archive.read(archive.namelist()[0]))
        return json.load(handle)


def packaged(name: str) -> Any:
    """The packaged file ``name`` of posteriordb's posteriors (a Traversable)."""
    return files(PACKAGE) / FOLDER / name


def read_data(
    source: Any, schema: dict[str, Field], model: str, option: str = "model.data_file"
) -> dict[str, torch.Tensor]:
    """The entries ``schema`` names, as float64 tensors, or one line naming what is wrong.

    ``source`` is a path or Traversable of posteriordb's layout (``data.json`` or
    ``data.json.zip``): one object, entry name → number or nested lists.
    """
    path = Path(source) if isinstance(source, str | Path) else source
    if isinstance(source, str | Path):
        require(path.is_file(), f"{option} {str(path)!r} does not exist")
    try:
        raw = _read_json(path)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ConfigError(f"{option} {path.name}: not posteriordb JSON ({error})") from None
    require(isinstance(raw, dict), f"{option} {path.name}: expected one JSON object of entries")
    missing = [key for key in schema if key not in raw]
    require(
        not missing,
        f"{option} {path.name} lacks {missing} that model '{model}' needs "
        f"(entries: {', '.join(schema)})",
    )
    data = {}
    for key, field in schema.items():
        try:
            array = np.asarray(raw[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"{option} {path.name}: entry {key!r} is not numeric") from None
        require(
            bool(np.isfinite(array).all()),
            f"{option} {path.name}: entry {key!r} has NaN or infinite values; clean them first",
        )
        if field.kind == "int":
            require(
                bool((array == np.round(array)).all()),
                f"{option} {path.name}: entry {key!r} must hold integers",
            )
        data[key] = array
    for key, field in schema.items():
        expected = tuple(int(data[size]) if isinstance(size, str) else size for size in field.shape)
        require(
            data[key].shape == expected,
            f"{option} {path.name}: entry {key!r} has shape {data[key].shape}, expected "
            f"{expected} from {', '.join(map(str, field.shape)) or 'a scalar'}",
        )
    return {key: torch.as_tensor(value) for key, value in data.items()}


def stan_columns(names: list[str]) -> dict[str, list[int]]:
    """Stan's flat names (``beta[1]``, ``sigma``) grouped by parameter, in order."""
    groups: dict[str, list[int]] = {}
    for column, name in enumerate(names):
        groups.setdefault(name.split("[")[0], []).append(column)
    return groups


def read_reference_draws(source: Any, option: str) -> tuple[list[str], np.ndarray]:
    """Stan parameter names and draws ``[S, P]`` from a packaged ``.npz`` (``names``,
    ``draws``) or posteriordb's ``reference_draws.json(.zip)`` (chains of name → draws)."""
    name = str(getattr(source, "name", source))
    try:
        if name.endswith(".npz"):
            with source.open("rb") as handle, np.load(handle) as archive:
                return [str(n) for n in archive["names"]], archive["draws"].astype(np.float64)
        chains = _read_json(source)
        names = list(chains[0])
        draws = np.array([[row[n] for n in names] for row in chains], dtype=np.float64)
        return names, draws.transpose(0, 2, 1).reshape(-1, len(names))
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as error:
        raise ConfigError(
            f"{option} {name}: cannot read reference draws ({error}); give posteriordb's "
            "reference_draws.json.zip"
        ) from None
