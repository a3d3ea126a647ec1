r"""Checking a model against draws from its posterior without running MCMC: Stein identities.

For a density :math:`p(u)` on :math:`\mathbb R^D` that vanishes at infinity, integration
by parts gives, with the score :math:`s(u) = \nabla_u \log p(u)` and any mean :math:`\mu`,

.. math::

    \mathbb E_p[s(u)] = 0, \qquad \mathbb E_p[s(u)\,(u - \mu)^\top] = -I .

Here :math:`p` is the model's posterior in its unconstrained space, Jacobian included
(:class:`~pyro_elbo_lab.engine.unconstrained.UnconstrainedDensity`), and the expectations
are averages over reference draws from the true posterior (posteriordb's NUTS runs). A port
whose prior, constraint or likelihood differs from the program that made the draws has a
different score, and the averages move away from 0 and :math:`-I` by more than their Monte
Carlo error. Each entry is turned into a z-score with its own standard error
(:math:`\mathrm{sd}/\sqrt S`, the draws taken as independent: posteriordb's are thinned
to near-independence), so one threshold serves every model.

Reference: C. Stein, "A bound for the error in the normal approximation...", 1972; the
identity as a goodness-of-fit check: Q. Liu, J. Lee, M. Jordan, "A Kernelized Stein
Discrepancy for Goodness-of-fit Tests", ICML 2016 (here with linear test functions).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch

from pyro_elbo_lab.engine.unconstrained import UnconstrainedDensity
from pyro_elbo_lab.models.base import LatentVariableModel


@dataclass(frozen=True)
class SteinCheck:
    """z-scores of the two identities: ``mean_score_z`` ``[D]`` and ``covariance_z``
    ``[D, D]`` (of :math:`\\mathbb E[s (u-\\bar u)^\\top] + I`), with the draw count."""

    mean_score_z: torch.Tensor
    covariance_z: torch.Tensor
    num_draws: int
    #: draws whose log density or score was not finite (dropped; a port's domain error)
    non_finite: int

    @property
    def worst_z(self) -> float:
        """The largest absolute z-score over both identities."""
        return float(torch.cat([self.mean_score_z.abs(), self.covariance_z.abs().flatten()]).max())

    def threshold(self, false_alarm: float = 1e-3) -> float:
        """Bonferroni threshold on :attr:`worst_z` for an overall false-alarm rate
        ``false_alarm`` under the null (normal z-scores)."""
        tests = self.mean_score_z.numel() + self.covariance_z.numel()
        quantile = torch.tensor(1 - false_alarm / (2 * tests), dtype=torch.float64)
        return float(torch.distributions.Normal(0.0, 1.0).icdf(quantile))


def stein_check(
    model: LatentVariableModel, draws: dict[str, torch.Tensor] | None = None, batch: int = 2000
) -> SteinCheck:
    """The Stein identities of ``model``'s posterior at its reference draws (or ``draws``:
    values of its latent sites, ``[S, *site_shape]``), scores in batches of ``batch``."""
    if draws is None:
        reference = model.reference_posterior_draws()
        if reference is None:
            raise ValueError(f"{type(model).__name__} has no reference draws to check")
        draws = model.latents_from_reference(reference)
    with pyro.get_param_store().scope():  # the layout's guide leaves the user's store alone
        density = UnconstrainedDensity(
            model.model, (model.train_data,), max_plate_nesting=model.max_plate_nesting
        )
        points = density.pack(draws).double()
        scores = torch.cat(
            [
                density.log_density_and_score(chunk.float())[1].double()
                for chunk in points.split(batch)
            ]
        )
    finite = scores.isfinite().all(-1)
    points, scores = points[finite], scores[finite]
    count = points.shape[0]
    centred = points - points.mean(0)
    products = scores[:, :, None] * centred[:, None, :]  # [S, D, D]: s_i (u_j - ū_j)
    eye = torch.eye(points.shape[1], dtype=points.dtype, device=points.device)
    return SteinCheck(
        mean_score_z=scores.mean(0) / (scores.std(0) / count**0.5),
        covariance_z=(products.mean(0) + eye) / (products.std(0) / count**0.5),
        num_draws=count,
        non_finite=int((~finite).sum()),
    )
