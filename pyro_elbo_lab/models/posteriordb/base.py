"""What every posteriordb port shares: its data file, its reference draws, flat priors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pyro.distributions as dist
import torch
from torch.distributions import biject_to, constraints

from pyro_elbo_lab.errors import require
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.models.posteriordb.files import (
    Field,
    packaged,
    read_data,
    read_reference_draws,
    stan_columns,
)

#: how the lab fits a real posterior by default: from its Laplace Gaussian, in the
#: coordinates that Gaussian whitens (init=, precondition= override both). Measured on
#: kidiq, earnings and diamonds (experiments/reference_posteriors, converged fits): from
#: the prior median ADVI ends 3 sd from the optimum after 10,000 evaluations, from here
#: 0.03-0.1 sd
FIT_DEFAULTS = {"default_init": "laplace", "default_precondition": "auto"}


class FlatPrior(dist.ImproperUniform):
    """Stan's implicit prior: a constant density on ``support``, improper.

    It has no draws; :meth:`sample` gives the image of the unconstrained origin, the
    feasible point autoguides' ``init_to_*`` strategies ask a prior for. Anything that
    needs real prior draws (VSBC, prior predictive) must refuse models with this prior.
    """

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        return biject_to(self.support)(torch.zeros(shape))


def flat(support: constraints.Constraint = constraints.real, size: int | None = None) -> FlatPrior:
    """A :class:`FlatPrior` on ``support``, a scalar or a vector of ``size``."""
    return FlatPrior(support, (), () if size is None else (size,))


class PosteriorDBModel(LatentVariableModel):
    """A posterior of the Stan posterior database, ported to Pyro by hand.

    A port states its posteriordb ``posterior`` name, the ``schema`` of its data (the
    Stan program's ``data`` block), :meth:`rows` (the data as one row per likelihood
    term, the lab's data plate) and :meth:`model`. The packaged data and reference draws
    are posteriordb's (BSD-3-Clause, ``pyro_elbo_lab/data/LICENCE.md``);
    ``data_file`` runs the same model on another data set of the same layout (then the
    packaged draws no longer apply: give ``reference_path``, or none). Stan's
    parameters are the Pyro model's latent sites under the same names, or deterministic
    sites where the port samples another parameterisation
    (:meth:`latents_from_reference` maps the reference draws onto the latent sites).

    Reference: M. Magnusson, P. Bürkner, A. Vehtari, "posteriordb: a set of posteriors
    for Bayesian inference and probabilistic programming", 2022.
    """

    posterior: ClassVar[str]
    schema: ClassVar[dict[str, Field]]

    def __init__(
        self,
        *,
        data_file: str | None = None,
        reference_path: str | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.data_file = data_file
        self.reference_path = reference_path
        source = data_file or packaged(f"{self.posterior}.data.json.zip")
        self.data = read_data(source, self.schema, self.posterior)
        rows = self.rows(self.data)
        self._rows = rows
        super().__init__(num_train=rows.shape[0], num_heldout=0, seed=seed, device=device)

    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        """The data set itself (there is nothing to simulate: the rows are observed)."""
        return self._rows

    def rows(self, data: dict[str, torch.Tensor]) -> torch.Tensor:
        """The data as float32 rows ``[N, C]``, one per likelihood term."""
        raise NotImplementedError

    def reference_posterior_draws(self) -> dict[str, torch.Tensor] | None:
        """The reference draws per Stan parameter (``[S]`` or ``[S, k]``), or None when
        ``data_file`` replaced the packaged data and no ``reference_path`` is given."""
        if self.reference_path:
            source: Any = open_path(self.reference_path)
        elif self.data_file:
            return None
        else:
            source = packaged(f"{self.posterior}.draws.npz")
        names, draws = read_reference_draws(source, "model.reference_path")
        values = torch.as_tensor(draws, dtype=torch.float32)
        return {
            group: values[:, columns] if "[" in names[columns[0]] else values[:, columns[0]]
            for group, columns in stan_columns(names).items()
        }


def open_path(path: str) -> Path:
    """``model.reference_path`` as a path that exists."""
    resolved = Path(path).expanduser()
    require(resolved.is_file(), f"model.reference_path {path!r} does not exist")
    return resolved
