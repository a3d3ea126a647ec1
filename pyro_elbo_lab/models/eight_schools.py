"""Eight schools (non-centred), with the Stan posterior database's reference draws."""

from __future__ import annotations

import json
import zipfile
from importlib.resources import files
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.models.posteriordb.base import FIT_DEFAULTS
from pyro_elbo_lab.registry import models

_DATA = "eight_schools.json.zip"
_REFERENCE = "eight_schools-eight_schools_noncentered.json.zip"


def _read_zipped_json(path: Path | object) -> object:
    with path.open("rb") as handle, zipfile.ZipFile(handle) as archive:
        return json.loads(archive.read(archive.namelist()[0]))


@models.register("eight_schools", **FIT_DEFAULTS)
class EightSchools(LatentVariableModel):
    r"""The hierarchical eight-schools model of Rubin (1981), non-centred.

    .. math::

        \mu \sim \mathcal N(0, 5^2), \quad \tau \sim \mathrm{HalfCauchy}(5), \quad
        \tilde\theta_j \sim \mathcal N(0, 1), \quad
        y_j \sim \mathcal N(\mu + \tau\tilde\theta_j, \sigma_j^2), \quad j = 1..8,

    as posteriordb's ``eight_schools_noncentered`` defines it; ``theta`` is recorded as a
    deterministic site. No closed-form posterior: the reference is posteriordb's 10 000
    NUTS draws (10 chains, R-hat < 1.01), shipped as package data (BSD-3-Clause, see
    ``pyro_elbo_lab/data/LICENCE.md``) or read from ``reference_path``. The data are the
    eight schools themselves: there is no held-out split. Each data row is
    ``[y_j, sigma_j]``.

    References: D. B. Rubin, "Estimation in Parallel Randomized Experiments", 1981;
    M. Magnusson et al., "posteriordb", 2022.
    """

    has_local_latents = True

    def __init__(
        self, *, reference_path: str | None = None, seed: int = 0, device: str = "cpu"
    ) -> None:
        self.reference_path = reference_path
        super().__init__(num_train=8, num_heldout=0, seed=seed, device=device)

    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        data = _read_zipped_json(files("pyro_elbo_lab.data") / _DATA)
        return torch.tensor([data["y"], data["sigma"]], dtype=torch.float32).T

    def model(self, data: torch.Tensor) -> None:
        effect, sigma = data[:, 0], data[:, 1]
        zero = torch.zeros((), device=self.device)
        mu = pyro.sample("mu", dist.Normal(zero, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(zero + 5.0))
        with pyro.plate(self.data_plate, data.shape[0]):
            theta_trans = pyro.sample("theta_trans", dist.Normal(zero, 1.0))
            theta = pyro.deterministic("theta", mu + tau * theta_trans)
            pyro.sample("obs", dist.Normal(theta, sigma), obs=effect)

    def with_observations(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """Simulated effects beside the same standard errors."""
        return torch.stack([observations["obs"], self.train_data[:, 1]], -1)

    def reference_posterior_draws(self) -> dict[str, torch.Tensor]:
        """posteriordb's draws: ``mu`` and ``tau`` ``[S]``, ``theta`` ``[S, 8]``."""
        source = (
            Path(self.reference_path)
            if self.reference_path
            else files("pyro_elbo_lab.data") / _REFERENCE
        )
        try:
            chains = _read_zipped_json(source)
        except (OSError, zipfile.BadZipFile, json.JSONDecodeError) as error:
            raise ConfigError(
                f"cannot read eight-schools reference draws from {source}: {error}; set "
                f"model.reference_path to posteriordb's {_REFERENCE}"
            ) from None

        def column(name: str) -> torch.Tensor:
            return torch.tensor([value for chain in chains for value in chain[name]])

        theta = torch.stack([column(f"theta[{j}]") for j in range(1, 9)], -1)
        return {"mu": column("mu"), "tau": column("tau"), "theta": theta}

    def latents_from_reference(self, draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The non-centred effects :math:`(\\theta_j - \\mu) / \\tau` beside the reference."""
        standardised = (draws["theta"] - draws["mu"][:, None]) / draws["tau"][:, None]
        return {**draws, "theta_trans": standardised}
