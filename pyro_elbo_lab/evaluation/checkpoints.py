"""The anytime metric: one cheap, common measurement of a guide at checkpoints of a fit.

Every run of a comparison records the same metric at the same fractions of its budget,
so curves of different objectives share their axis (steps, seconds, model
evaluations). The metric is the best truth the model has: ``kl_to_posterior``, in
closed form where guide and posterior are Gaussian
(:func:`~pyro_elbo_lab.evaluation.exact_kl.closed_form_kl`), else log p(x) − ELBO where
the evidence is exact; else the ``iwae`` bound with many
particles (Burda et al. 2016: a tight lower bound on log p(x)); and
``posterior_mean_error``, ``posterior_w1_mean`` and ``posterior_gaussian_w2``
(:func:`~pyro_elbo_lab.evaluation.reference_distances.reference_distances`) against a
fixed set of exact or reference posterior draws where the model has them. A model that
learns its parameters θ changes its evidence as it trains, so its metric is the test
log-likelihood per image instead
(``test_loglik``: IWAE-``iwae_particles`` on the held-out images, and
``exact_test_loglik`` where the evidence is exact).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pyro_elbo_lab.engine import random_streams_restored
from pyro_elbo_lab.errors import require_count_fields
from pyro_elbo_lab.evaluation.bounds import (
    estimate_elbo,
    estimate_iwae,
    particle_batch_for,
    particles_within,
)
from pyro_elbo_lab.evaluation.exact_kl import closed_form_kl
from pyro_elbo_lab.evaluation.learned_model import infers_new_points, per_image_bounds
from pyro_elbo_lab.evaluation.posterior_error import (
    guide_draws,
    reference_draws,
    standardized_errors,
)
from pyro_elbo_lab.evaluation.reference_distances import reference_distances
from pyro_elbo_lab.models.base import LatentVariableModel


@dataclass
class CheckpointSettings:
    """The ``checkpoints`` node of the lab's config; ``count: 0`` records no curve.

    ``count`` checkpoints, log-spaced from 1% of the budget to its end (the last is
    always the end of the fit, whatever stopped it).
    """

    count: int = 0
    elbo_particles: int = 500
    iwae_particles: int = 1000
    posterior_samples: int = 500
    particle_batch: int = 1000
    test_batch: int = 100
    #: particles × training points per estimate (:func:`particles_within`)
    max_point_evals: int = 10_000_000

    def __post_init__(self) -> None:
        require_count_fields(self, "checkpoints", optional=("count",))


class CheckpointProbe:
    """Measures a guide with the anytime metric, leaving the fit's random stream alone.

    The reference draws are drawn once, so the curve's noise is the guide's alone.
    """

    def __init__(self, model: LatentVariableModel, settings: CheckpointSettings) -> None:
        self.model = model
        self.settings = settings
        self.log_evidence = None if model.learns_parameters else model.exact_log_evidence()
        with random_streams_restored():
            self.reference = reference_draws(model, settings.posterior_samples)

    def __call__(self, guide: Callable[..., Any]) -> dict[str, float]:
        """The metric of ``guide`` now; Pyro's, torch's and numpy's RNGs are restored after."""
        with random_streams_restored(), torch.no_grad(), self.model.without_subsampling():
            return self._measure(guide)

    def _measure(self, guide: Callable[..., Any]) -> dict[str, float]:
        model, settings = self.model, self.settings
        target, args = model.evaluation_model, (model.train_data,)
        particle_batch = particle_batch_for(settings.particle_batch, model.train_data)
        common = {"max_plate_nesting": model.max_plate_nesting, "particle_batch": particle_batch}
        metrics: dict[str, float] = {}
        if model.learns_parameters:
            return self._test_loglik(guide) if infers_new_points(guide) else {}

        def within(requested: int) -> int:
            return particles_within(requested, args[0].shape[0], settings.max_point_evals)

        exact = closed_form_kl(model, guide) if self.log_evidence is not None else None
        if exact is not None:
            metrics["kl_to_posterior"] = exact
        elif self.log_evidence is not None:
            elbo = estimate_elbo(
                target, guide, args, num_particles=within(settings.elbo_particles), **common
            )
            metrics["kl_to_posterior"] = self.log_evidence - elbo.value
        else:
            iwae = estimate_iwae(
                target, guide, args, num_particles=within(settings.iwae_particles),
                num_repeats=1, **common,
            )  # fmt: skip
            metrics["iwae"] = iwae.value
        if self.reference is not None:
            draws = guide_draws(
                target, guide, args, list(self.reference), settings.posterior_samples,
                model.max_plate_nesting,
            )  # fmt: skip
            errors = standardized_errors(draws, self.reference)
            metrics["posterior_mean_error"] = max(e["mean_error_max"] for e in errors.values())
            distances = reference_distances(draws, self.reference)
            metrics["posterior_w1_mean"] = distances["w1_mean"]
            metrics["posterior_gaussian_w2"] = distances["gaussian_w2"]
        return metrics

    def _test_loglik(self, guide: Callable[..., Any]) -> dict[str, float]:
        model, settings, test = self.model, self.settings, self.model.heldout_data
        values = per_image_bounds(
            model, guide, test, num_particles=settings.iwae_particles,
            image_batch=settings.test_batch, particle_batch=settings.particle_batch,
        ).iwae  # fmt: skip
        metrics = {"test_loglik": float(values.mean())}
        exact = model.exact_log_evidence(test)
        if exact is not None:
            metrics["exact_test_loglik"] = exact / test.shape[0]
        return metrics
