r"""The shared machinery of full-covariance Gaussian fitters (GSM, BaM, Pathfinder).

Each fits :math:`q = \mathcal N(\mu, \Sigma)` over the model's unconstrained latents
(:class:`~pyro_elbo_lab.engine.unconstrained.UnconstrainedDensity`) and writes it into an
``AutoMultivariateNormal`` guide after every iteration (its ``loc``, and ``scale`` ×
``scale_tril`` = chol Σ), so the lab's evaluations, plots and ``Predictive`` see a plain
Pyro guide. The state is kept in float64: the covariance updates subtract nearly equal
matrices, and float32 loses positive definiteness there first.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from pyro.infer.autoguide import AutoMultivariateNormal

from pyro_elbo_lab.engine.unconstrained import UnconstrainedDensity
from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.fitters.base import Fitter
from pyro_elbo_lab.fitters.start import StartingGaussian
from pyro_elbo_lab.guides.params import write_cholesky
from pyro_elbo_lab.models.base import LatentVariableModel


@dataclass
class Gaussian:
    """:math:`\\mathcal N(\\mu, \\Sigma)` in float64; Σ is symmetrised on construction and
    factored once (an iteration samples, validates and writes the same factor)."""

    mean: torch.Tensor
    covariance: torch.Tensor

    def __post_init__(self) -> None:
        self.covariance = (self.covariance + self.covariance.T) / 2

    @cached_property
    def _factorisation(self) -> tuple[torch.Tensor, bool]:
        factor, info = torch.linalg.cholesky_ex(self.covariance)
        return factor, bool(info.item() == 0)

    @property
    def cholesky(self) -> torch.Tensor:
        factor, positive_definite = self._factorisation
        if not positive_definite:
            raise torch.linalg.LinAlgError("covariance is not positive definite")
        return factor

    def sample(self, count: int) -> torch.Tensor:
        """``count`` draws ``[count, D]`` (torch's global generator, seeded by the lab)."""
        noise = torch.randn(
            count, self.mean.shape[0], dtype=self.mean.dtype, device=self.mean.device
        )
        return self.mean + noise @ self.cholesky.T

    def log_prob(self, points: torch.Tensor) -> torch.Tensor:
        return torch.distributions.MultivariateNormal(self.mean, scale_tril=self.cholesky).log_prob(
            points
        )

    def is_valid(self) -> bool:
        """Finite, with a Cholesky factor (positive definite)."""
        finite = bool(self.mean.isfinite().all() and self.covariance.isfinite().all())
        return finite and self._factorisation[1]


def require_gaussian_guide(guide: object, fitter: str) -> AutoMultivariateNormal:
    """The guide a Gaussian fitter writes into, or one line naming ``guide=mvn``."""
    if not isinstance(guide, AutoMultivariateNormal):
        raise ConfigError(
            f"fitter={fitter} fits a full-covariance Gaussian over the unconstrained latents "
            f"into guide=mvn (Pyro's AutoMultivariateNormal, its default guide), got "
            f"{type(guide).__name__}: use guide=mvn, or name no guide"
        )
    return guide


class GaussianFitter(Fitter):
    """A :class:`Fitter` whose approximation is one Gaussian, written into ``guide``.

    :param init_scale: the initial covariance is ``init_scale² I`` around the guide's
        initial ``loc`` (its ``init_loc`` strategy: the prior median by default).
    """

    name = "gaussian"

    def __init__(
        self, model: LatentVariableModel, guide: AutoMultivariateNormal, init_scale: float
    ) -> None:
        self.guide = require_gaussian_guide(guide, self.name)
        if not init_scale > 0:
            raise ConfigError(f"fitter.init_scale must be > 0, got {init_scale!r}")
        self.density = UnconstrainedDensity(
            model.model, (model.train_data,), max_plate_nesting=model.max_plate_nesting,
            guide=self.guide,
        )  # fmt: skip
        mean = self.guide.loc.detach().double()
        eye = torch.eye(mean.shape[0], dtype=torch.float64, device=mean.device)
        self.state = Gaussian(mean, init_scale**2 * eye)
        #: updates refused because they left the covariance non-positive-definite
        self.rejected_updates = 0
        self.write_guide()

    def start_from(self, start: StartingGaussian) -> None:
        """Take the run's starting Gaussian (:mod:`~pyro_elbo_lab.fitters.start`) as q₀."""
        self.state = Gaussian(start.mean.to(self.state.mean), start.covariance.to(self.state.mean))
        self.write_guide()

    @property
    def model_evals(self) -> int:
        return self.density.evaluations

    @property
    def gradient_evals(self) -> int:
        return self.density.gradient_evaluations

    def scores_at(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log densities and scores at ``points`` (float64), and which rows are finite:
        a draw outside the model's numerical domain is dropped, not allowed to poison
        the update."""
        log_density, score = self.density.log_density_and_score(points.float())
        log_density, score = log_density.double(), score.double()
        finite = log_density.isfinite() & score.isfinite().all(-1)
        return log_density, score, finite

    def accept(self, proposal: Gaussian) -> None:
        """Take ``proposal`` if it is a valid Gaussian, else keep the state (counted)."""
        if proposal.is_valid():
            self.state = proposal
            self.write_guide()
        else:
            self.rejected_updates += 1

    def write_guide(self) -> None:
        """The guide's ``loc``, ``scale`` and ``scale_tril`` set to the state, in place (the
        param store holds the same tensors)."""
        with torch.no_grad():
            self.guide.loc.copy_(self.state.mean.to(self.guide.loc.dtype))
            write_cholesky(self.guide, self.state.cholesky)


class BatchScoreFitter(GaussianFitter):
    """An iteration draws a batch from q, scores it, and updates q in closed form (GSM, BaM).

    Subclasses give :meth:`update`: the next Gaussian from the current one, the batch's
    finite points ``[B, D]`` and scores ``[B, D]`` (float64).
    """

    reports_loss = False

    def __init__(
        self,
        model: LatentVariableModel,
        guide: AutoMultivariateNormal,
        batch_size: int,
        init_scale: float,
    ) -> None:
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ConfigError(f"fitter.batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.iteration = 0
        super().__init__(model, guide, init_scale)

    def update(self, points: torch.Tensor, scores: torch.Tensor) -> Gaussian:
        raise NotImplementedError

    def step(self) -> float:
        points = self.state.sample(self.batch_size)
        _, scores, finite = self.scores_at(points)
        if finite.any():
            self.accept(self.update(points[finite], scores[finite]))
        else:
            self.rejected_updates += 1
        self.iteration += 1
        return float("nan")
