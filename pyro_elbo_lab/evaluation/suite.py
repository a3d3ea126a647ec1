"""The evaluation every run gets: bounds, held-out likelihood and gaps to the truth."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pyro_elbo_lab.errors import require_positive_int
from pyro_elbo_lab.evaluation.bounds import estimate_elbo, estimate_iwae
from pyro_elbo_lab.evaluation.predictive import heldout_log_likelihood
from pyro_elbo_lab.models.base import LatentVariableModel


@dataclass
class EvaluationSettings:
    """Sample sizes of the evaluation (recorded with the metrics they produce).

    Also the ``evaluation`` node of the lab's typed config.
    """

    elbo_particles: int = 1000
    iwae_particles: int = 100
    iwae_repeats: int = 20
    heldout_particles: int = 1000
    particle_batch: int = 1000

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            require_positive_int(f"evaluation.{name}", value)


def evaluate_guide(
    model: LatentVariableModel, guide: Callable[..., Any], settings: EvaluationSettings
) -> dict[str, Any]:
    """Metrics of a fitted ``guide`` on ``model``'s training and held-out data.

    Returns flat metrics (``elbo``, ``iwae``, ``heldout_loglik`` with ``*_se`` standard
    errors; ``exact_log_evidence``, ``elbo_gap``, ``iwae_gap``, ``exact_heldout_loglik``,
    ``heldout_gap`` where the model knows the truth) and ``samples``, the sample sizes.
    Importance weights use :meth:`LatentVariableModel.marginal_model`, so models that
    enumerate discrete latents in training are measured on the same continuous joint.
    """
    target = model.marginal_model
    args = (model.train_data,)
    common = {
        "max_plate_nesting": model.max_plate_nesting,
        "particle_batch": settings.particle_batch,
    }
    elbo = estimate_elbo(target, guide, args, num_particles=settings.elbo_particles, **common)
    iwae = estimate_iwae(
        target,
        guide,
        args,
        num_particles=settings.iwae_particles,
        num_repeats=settings.iwae_repeats,
        **common,
    )
    heldout = heldout_log_likelihood(
        target,
        guide,
        model.train_data,
        model.heldout_data,
        num_particles=settings.heldout_particles,
        data_plate=model.data_plate,
        **common,
    )
    metrics: dict[str, Any] = {
        "elbo": elbo.value,
        "elbo_se": elbo.std_error,
        "iwae": iwae.value,
        "iwae_se": iwae.std_error,
        "heldout_loglik": heldout.value,
        "heldout_loglik_se": heldout.std_error,
    }
    exact = model.exact_log_evidence()
    if exact is not None:
        metrics.update(
            exact_log_evidence=exact, elbo_gap=elbo.value - exact, iwae_gap=iwae.value - exact
        )
    exact_predictive = model.exact_predictive_log_likelihood(model.heldout_data)
    if exact_predictive is not None:
        exact_heldout = float(exact_predictive.mean())
        metrics.update(
            exact_heldout_loglik=exact_heldout, heldout_gap=heldout.value - exact_heldout
        )
    metrics["samples"] = {
        "elbo_particles": settings.elbo_particles,
        "iwae_particles": settings.iwae_particles,
        "iwae_repeats": settings.iwae_repeats,
        "heldout_particles": settings.heldout_particles,
        "heldout_points": int(model.heldout_data.shape[0]),
    }
    return metrics
