"""The evaluation every run gets: bounds, held-out likelihood and gaps to the truth."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyro_elbo_lab.errors import require_count_fields, require_positive_int
from pyro_elbo_lab.evaluation.ais import annealed_importance_sampling
from pyro_elbo_lab.evaluation.bounds import (
    draw_log_weights,
    iwae_from_log_weights,
    particle_batch_for,
    particles_within,
)
from pyro_elbo_lab.evaluation.diagnostics import CUBO_MIN_SAMPLES, cubo_from_log_weights
from pyro_elbo_lab.evaluation.estimate import Estimate
from pyro_elbo_lab.evaluation.exact_kl import closed_form_kl
from pyro_elbo_lab.evaluation.gradients import gradient_statistics
from pyro_elbo_lab.evaluation.learned_model import learned_model_metrics
from pyro_elbo_lab.evaluation.posterior_error import (
    gaussian_kl,
    guide_draws,
    importance_resampled_draws,
    reference_draws,
    standardized_errors,
)
from pyro_elbo_lab.evaluation.predictive import heldout_log_likelihood
from pyro_elbo_lab.evaluation.reference_distances import reference_distances
from pyro_elbo_lab.fitters.psis import pareto_smoothed_log_weights
from pyro_elbo_lab.models.base import LatentVariableModel

#: the joint and per-parameter distance summaries a run records as ``posterior_{key}``
DISTANCE_SUMMARIES = (
    "w1_mean",
    "w1_max",
    "sliced_w1",
    "gaussian_w2",
    "sd_ratio_min",
    "sd_ratio_max",
)


@dataclass
class EvaluationSettings:
    """Sample sizes of the evaluation (recorded with the metrics they produce).

    Also the ``evaluation`` node of the lab's typed config. ``iwae_ladder`` lists the K
    of the IWAE bounds in the sandwich. The ELBO, CUBO, PSIS k̂ and every IWAE bound
    come from one set of draws, each from the first ones it needs (``elbo_particles``,
    K × ``iwae_repeats``): one pass instead of one per estimate, and the ladder's rungs
    share their draws, so their differences carry less noise. ``gradient_estimates``
    (gradient SNR) and ``ais_temperatures`` (AIS) cost extra passes and are off at 0.
    """

    elbo_particles: int = 1000
    iwae_particles: int = 100
    iwae_repeats: int = 20
    iwae_ladder: list[int] = field(default_factory=lambda: [1, 10])
    heldout_particles: int = 1000
    posterior_samples: int = 1000
    particle_batch: int = 1000
    gradient_estimates: int = 0
    ais_temperatures: int = 0
    ais_chains: int = 100
    resample_particles: int = 0
    test_particles: int = 5000
    test_batch: int = 100
    ais_test_images: int = 100
    #: particles × training points per estimate: larger data sets get fewer particles
    max_point_evals: int = 10_000_000

    def __post_init__(self) -> None:
        for k in self.iwae_ladder:
            require_positive_int("evaluation.iwae_ladder entries", k)
        optional = ("gradient_estimates", "ais_temperatures", "resample_particles")
        require_count_fields(self, "evaluation", optional, skip=("iwae_ladder",))

    def for_data(self, num_points: int) -> tuple[EvaluationSettings, list[str]]:
        """These settings with the estimates over ``num_points`` training points cut to
        ``max_point_evals`` point evaluations each (:func:`particles_within`; IWAE loses
        repeats before K), and a warning per cut."""

        def cut(requested: int) -> int:
            return particles_within(requested, num_points, self.max_point_evals)

        iwae_particles = cut(self.iwae_particles)
        scaled = dataclasses.replace(
            self,
            elbo_particles=cut(self.elbo_particles),
            iwae_particles=iwae_particles,
            iwae_repeats=max(1, min(self.iwae_repeats, cut(iwae_particles * self.iwae_repeats)
                                    // iwae_particles)),
        )  # fmt: skip
        warnings = [
            f"evaluation.{name}={getattr(self, name)} cut to {getattr(scaled, name)}: "
            f"{num_points} training points, evaluation.max_point_evals={self.max_point_evals}"
            for name in ("elbo_particles", "iwae_particles", "iwae_repeats")
            if getattr(scaled, name) != getattr(self, name)
        ]
        return scaled, warnings


def evaluate_guide(
    model: LatentVariableModel,
    guide: Callable[..., Any],
    settings: EvaluationSettings,
    objective: Any = None,
) -> dict[str, Any]:
    """Metrics of a fitted ``guide`` on ``model``'s training and held-out data.

    The bounds sandwich: ``elbo`` ≤ ``iwae`` (K = ``iwae_particles``; ``iwae_by_particles``
    for the ladder) ≤ log p(x) ≤ ``cubo`` (χ² upper bound, biased low at small S), each
    with ``*_se``; against the truth ``exact_log_evidence`` (or ``ais_log_evidence``)
    with ``*_gap`` and ``kl_to_posterior`` (exact where :func:`closed_form_kl` applies,
    else log p(x) − ELBO; see :func:`kl_metrics`). Also ``psis_khat``,
    ``heldout_loglik`` (global-latent models), ``posterior_error`` per site (against the
    exact posterior or reference draws; ``posterior_mean_error`` and
    ``posterior_sd_error`` are the largest over all sites), ``posterior_distances``
    (per parameter: standardised mean error, sd ratio, W1; jointly: sliced W1 and the
    Gaussian W2, see :func:`reference_distances`) with its summaries as
    ``posterior_w1_mean`` etc., ``posterior_error_resampled`` (and every summary with
    that suffix) the same for the
    importance-resampled guide (``resample_particles`` particles per draw, stratified
    as ``objective`` trains: the posterior that importance-weighted objectives fit, see
    :func:`importance_resampled_draws`), ``gaussian_kl`` per site where both are
    Gaussian, ``gradient`` SNR/variance of ``objective`` per
    parameter group, and ``samples``, every sample size used. Importance weights use
    :meth:`LatentVariableModel.marginal_model`, so models that enumerate discrete
    latents in training are measured on the same continuous joint (models whose guide
    samples the discrete latents are measured on that joint: ``evaluation_model``).
    """
    target = model.evaluation_model
    args = (model.train_data,)
    settings, warnings = settings.for_data(model.train_data.shape[0])
    particle_batch = particle_batch_for(settings.particle_batch, model.train_data)
    common = {"max_plate_nesting": model.max_plate_nesting, "particle_batch": particle_batch}
    # one set of draws serves every estimate (each takes the first draws it needs)
    repeats = settings.iwae_repeats
    draws = draw_log_weights(
        target, guide, args,
        num_particles=max(
            settings.elbo_particles, repeats * max([settings.iwae_particles, *settings.iwae_ladder])
        ),
        **common,
    )  # fmt: skip
    log_weights = draws[: settings.elbo_particles]
    elbo = Estimate.from_draws(log_weights)
    iwae = iwae_from_log_weights(draws, settings.iwae_particles, repeats)
    metrics: dict[str, Any] = {
        "elbo": elbo.value,
        "elbo_se": elbo.std_error,
        "iwae": iwae.value,
        "iwae_se": iwae.std_error,
        "iwae_by_particles": {
            str(k): iwae_from_log_weights(draws, k, repeats).value for k in settings.iwae_ladder
        },
        "cubo": cubo_from_log_weights(log_weights),
        "psis_khat": pareto_smoothed_log_weights(log_weights)[1],
    }
    if settings.elbo_particles < CUBO_MIN_SAMPLES:
        warnings.append(
            f"cubo from {settings.elbo_particles} samples is likely biased low (below log p(x)); "
            f"use evaluation.elbo_particles >= {CUBO_MIN_SAMPLES}"
        )
    exact = truth = model.exact_log_evidence()
    learned = model.learns_parameters
    if learned:
        learned_metrics, learned_warnings = learned_model_metrics(
            model, guide, settings, getattr(objective, "num_particles", 1)
        )
        metrics.update(learned_metrics)
        warnings += learned_warnings
        if exact is not None:
            metrics["exact_train_loglik"] = exact / model.train_data.shape[0]
    if settings.ais_temperatures and not learned:
        ais = annealed_importance_sampling(
            target, guide, args, max_plate_nesting=model.max_plate_nesting,
            num_chains=settings.ais_chains, num_temperatures=settings.ais_temperatures,
        )  # fmt: skip
        metrics.update(
            ais_log_evidence=ais.log_evidence,
            ais_se=ais.std_error,
            ais_ess=ais.effective_sample_size,
        )
        metrics["ais_acceptance"] = ais.acceptance_rate
        truth = ais.log_evidence if truth is None else truth
    if truth is not None:
        metrics["exact_log_evidence" if exact is not None else "reference_log_evidence"] = truth
        metrics.update(
            elbo_gap=elbo.value - truth,
            iwae_gap=iwae.value - truth,
            cubo_gap=metrics["cubo"] - truth,
        )
        metrics.update(kl_metrics(model, guide, truth, elbo))
        metrics["iwae_by_particles_gap"] = {
            k: value - truth for k, value in metrics["iwae_by_particles"].items()
        }
    else:
        warnings.append(
            "no exact or reference log evidence for this model: gaps to log p(x) and "
            "KL(q || p) are not measured (evaluation.ais_temperatures > 0 estimates log p(x))"
        )
    metrics.update(_heldout(model, target, guide, settings, common))
    metrics.update(_posterior_errors(model, target, guide, args, settings, objective))
    if "posterior_error" not in metrics:
        warnings.append(
            "no exact posterior or reference draws for this model: posterior error is not measured"
        )
    exact_posterior = model.exact_posterior()
    if exact_posterior is not None:
        metrics["gaussian_kl"] = gaussian_kl(guide, args, exact_posterior)
    if objective is not None and settings.gradient_estimates:
        metrics["gradient"] = gradient_statistics(
            objective, model, guide, args, settings.gradient_estimates
        )
    metrics["warnings"] = warnings
    metrics["samples"] = {
        "elbo_particles": settings.elbo_particles,
        "cubo_particles": settings.elbo_particles,
        "iwae_particles": settings.iwae_particles,
        "iwae_repeats": settings.iwae_repeats,
        "heldout_particles": settings.heldout_particles,
        "heldout_points": int(model.heldout_data.shape[0]),
        "posterior_samples": settings.posterior_samples,
        "resample_particles": settings.resample_particles,
        "gradient_estimates": settings.gradient_estimates,
        "ais_chains": settings.ais_chains if settings.ais_temperatures else 0,
        "test_particles": settings.test_particles if learned else 0,
        "ais_temperatures": settings.ais_temperatures,
        "particle_batch": particle_batch,
    }
    return metrics


#: float32's relative resolution: log p(x) − ELBO cannot resolve less than this × |log p(x)|
FLOAT32_RESOLUTION = 2.0**-23


def kl_metrics(
    model: LatentVariableModel, guide: Callable[..., Any], log_evidence: float, elbo: Estimate
) -> dict[str, Any]:
    """``kl_to_posterior`` with its standard error and how it was found: in closed form
    where guide and exact posterior are Gaussian (``kl_to_posterior_mc``, log p(x) − ELBO,
    beside it), else log p(x) − ELBO, whose error is the ELBO's Monte Carlo error and the
    float32 resolution of log densities of the size of log p(x)."""
    estimate = log_evidence - elbo.value
    exact = closed_form_kl(model, guide)
    if exact is not None:
        return {
            "kl_to_posterior": exact,
            "kl_to_posterior_se": 0.0,
            "kl_to_posterior_method": "closed form",
            "kl_to_posterior_mc": estimate,
        }
    resolution = FLOAT32_RESOLUTION * abs(log_evidence)
    return {
        "kl_to_posterior": estimate,
        "kl_to_posterior_se": math.hypot(elbo.std_error, resolution),
        "kl_to_posterior_method": "monte carlo",
    }


def _heldout(model, target, guide, settings, common) -> dict[str, float]:
    metrics = {}
    if model.heldout_data.shape[0] and not model.has_local_latents:
        heldout = heldout_log_likelihood(
            target, guide, model.train_data, model.heldout_data,
            num_particles=settings.heldout_particles, data_plate=model.data_plate, **common,
        )  # fmt: skip
        metrics.update(heldout_loglik=heldout.value, heldout_loglik_se=heldout.std_error)
    exact = (
        model.exact_predictive_log_likelihood(model.heldout_data)
        if model.heldout_data.shape[0]
        else None
    )
    if exact is not None:
        metrics["exact_heldout_loglik"] = float(exact.mean())
        if "heldout_loglik" in metrics:
            metrics["heldout_gap"] = metrics["heldout_loglik"] - metrics["exact_heldout_loglik"]
    return metrics


def _posterior_errors(model, target, guide, args, settings, objective) -> dict[str, Any]:
    reference = reference_draws(model, settings.posterior_samples)
    if reference is None:
        return {}
    sites, size, depth = list(reference), settings.posterior_samples, model.max_plate_nesting
    draws = guide_draws(target, guide, args, sites, size, depth)
    errors = {"posterior_error": standardized_errors(draws, reference)}
    distances = {"": reference_distances(draws, reference)}
    if settings.resample_particles:
        resampled = importance_resampled_draws(
            target, guide, args, sites, size,
            num_particles=settings.resample_particles, max_plate_nesting=depth,
            particle_batch=particle_batch_for(settings.particle_batch, model.train_data),
            stratify=getattr(objective, "supports_stratified", False),
        )  # fmt: skip
        errors["posterior_error_resampled"] = standardized_errors(resampled, reference)
        distances["_resampled"] = reference_distances(resampled, reference)
    summaries = {}
    for key, per_site in errors.items():
        suffix = key.removeprefix("posterior_error")
        for error in ("mean", "sd"):
            worst = max(site[f"{error}_error_max"] for site in per_site.values())
            summaries[f"posterior_{error}_error{suffix}"] = worst
    for suffix, found in distances.items():
        summaries[f"posterior_distances{suffix}"] = found
        for key in DISTANCE_SUMMARIES:
            summaries[f"posterior_{key}{suffix}"] = found[key]
    return errors | summaries
