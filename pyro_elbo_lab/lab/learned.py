"""Models with parameters of their own (θ, learned with the guide's φ): finding them,
saving what a run learned, and loading it back.

A model's parameters are the ``pyro.param`` / ``pyro.module`` sites its program
touches. A run that learned some writes them beside its record
(``model_parameters.pt``, a ``{name: tensor}`` state dict in constrained space), so a
report, a notebook or a later run can load them back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyro
import torch
from pyro import poutine

from pyro_elbo_lab.engine import random_streams_restored

MODEL_PARAMETERS_FILE = "model_parameters.pt"


def model_parameter_names(model: Callable[..., object], *args: object) -> list[str]:
    """The parameter sites one run of ``model(*args)`` touches, in order; the run's draws
    are not seen by anything outside, and every random stream is restored after it."""
    with random_streams_restored(), poutine.block(), poutine.trace(param_only=True) as trace:
        model(*args)
    return [name for name, site in trace.trace.nodes.items() if site["type"] == "param"]


def save_model_parameters(names: list[str], directory: Path) -> str:
    """Write the current values of the parameters ``names`` to ``directory``; return the
    file's name."""
    values = {name: pyro.param(name).detach().cpu() for name in names}
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(values, directory / MODEL_PARAMETERS_FILE)
    return MODEL_PARAMETERS_FILE


def load_model_parameters(run_dir: str | Path, into_param_store: bool = False) -> dict:
    """The parameters a run learned, ``{name: tensor}``; with ``into_param_store`` also set
    in Pyro's param store, so the run's model is the learned one again."""
    values = torch.load(Path(run_dir) / MODEL_PARAMETERS_FILE, weights_only=True)
    if into_param_store:
        store = pyro.get_param_store()
        for name, value in values.items():
            if name in store:
                del store[name]
            pyro.param(name, value)
    return values
