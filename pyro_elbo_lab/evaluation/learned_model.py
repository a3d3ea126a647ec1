r"""Evaluation of learned models (θ fitted with φ): test log-likelihood, bound gaps,
active units.

Test log-likelihood per image, Burda et al.'s protocol: the IWAE bound with K = 5 000
particles of the fitted guide on each held-out image,

.. math::

    \log \hat p(x_n) = \log \frac1K \sum_{k=1}^K \frac{p_\theta(x_n, z_k)}{q_\phi(z_k \mid x_n)},
    \qquad z_k \sim q_\phi(\cdot \mid x_n),

a stochastic lower bound whose bias shrinks as K grows; where the model's log evidence is
exact (``sbn``) the exact value is recorded beside it. Images go through in batches of
``test_batch`` and particles in chunks of ``particle_batch``, so memory is
O(test_batch × particle_batch × pixels) whatever K and the test set's size. The training
bound :math:`\mathcal L_K` (K the objective's particles) is measured on the training
images the same way, and the ELBO with it from the same draws (:func:`per_image_bounds`:
the mean of the K log weights beside their log-mean-exp), so the gap between what was
optimised and what the model achieves on new data is on record.

Active units (Burda et al. 2016, §5.2): coordinate u of a latent site is active when
:math:`A_u = \operatorname{Cov}_x\big(E_{q(z \mid x)}[z_u]\big) > 10^{-2}` over the test
images, with :math:`E_q[z \mid x]` read exactly from an amortised guide's encoder.

References: Y. Burda, R. Grosse, R. Salakhutdinov, "Importance Weighted Autoencoders",
ICLR 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pyro
import torch
from pyro.infer.util import is_validation_enabled

from pyro_elbo_lab.engine import sample_log_weights
from pyro_elbo_lab.evaluation.ais import annealed_importance_sampling
from pyro_elbo_lab.guides.amortized import AmortizedEncoderGuide
from pyro_elbo_lab.guides.empty import AutoEmpty
from pyro_elbo_lab.models.base import LatentVariableModel

ACTIVE_UNIT_THRESHOLD = 1e-2


class PerImageBounds(NamedTuple):
    """Two bounds per image from the same K draws, ``[N]`` each."""

    #: :math:`\\log \\frac1K \\sum_k w_{kn}` (IWAE-K)
    iwae: torch.Tensor
    #: :math:`\\frac1K \\sum_k \\log w_{kn}` (the ELBO, averaged over the K draws)
    elbo: torch.Tensor


def per_image_bounds(
    model: LatentVariableModel,
    guide: Callable[..., Any],
    images: torch.Tensor,
    *,
    num_particles: int,
    image_batch: int,
    particle_batch: int,
) -> PerImageBounds:
    """IWAE-K and the ELBO of each image from one pass of K draws (no gradients)."""
    iwae, elbo = [], []
    validate = is_validation_enabled()
    with torch.no_grad():
        for rows in images.split(image_batch):
            running = torch.full((rows.shape[0],), -math.inf, dtype=torch.float64)
            running = running.to(rows.device)
            total = torch.zeros_like(running)
            for index, size in enumerate(_chunks(num_particles, particle_batch)):
                # the first chunk checks these images and the programme; the next ones
                # only draw new particles for them (the checks were ~20% of their time)
                with pyro.validation_enabled(validate and index == 0):
                    weights = sample_log_weights(
                        model.evaluation_model,
                        guide,
                        (rows,),
                        {},
                        num_particles=size,
                        max_plate_nesting=model.max_plate_nesting,
                        data_plate=model.data_plate,
                    )
                chunk = weights.local_log_weights().double()
                running = torch.logaddexp(running, chunk.logsumexp(0))
                total += chunk.sum(0)
            iwae.append(running - math.log(num_particles))
            elbo.append(total / num_particles)
    return PerImageBounds(torch.cat(iwae), torch.cat(elbo))


def _chunks(total: int, size: int) -> Iterator[int]:
    for start in range(0, total, size):
        yield min(size, total - start)


def encoder_of(guide: Any) -> AmortizedEncoderGuide | None:
    """The amortised encoder part of ``guide`` (itself, or a part of an AutoGuideList)."""
    if isinstance(guide, AmortizedEncoderGuide):
        return guide
    for part in guide if isinstance(guide, torch.nn.ModuleList) else ():
        if isinstance(part, AmortizedEncoderGuide):
            return part
    return None


def infers_new_points(guide: Any) -> bool:
    """Whether ``guide`` can weigh images it was not fitted on: an amortised encoder, or
    no latents to infer at all (``guide=none``). A guide with parameters per training
    point (``guide=normal`` on a vae) has nothing for a new image."""
    return encoder_of(guide) is not None or isinstance(guide, AutoEmpty)


def active_units(guide: Any, images: torch.Tensor) -> dict[str, dict[str, Any]] | None:
    """Per latent site of the amortised encoder: the number of active units, their
    count out of all, and every unit's :math:`A_u`; None without such an encoder."""
    encoder = encoder_of(guide)
    if encoder is None:
        return None
    result = {}
    for name, means in encoder.local_means(images).items():
        activity = means.reshape(means.shape[0], -1).double().var(0)
        result[name] = {
            "active": int((activity > ACTIVE_UNIT_THRESHOLD).sum()),
            "units": int(activity.numel()),
            "activity": [round(float(a), 6) for a in activity],
        }
    return result


def learned_model_metrics(
    model: LatentVariableModel,
    guide: Callable[..., Any],
    settings: Any,
    training_particles: int,
) -> tuple[dict[str, Any], list[str]]:
    """Metrics of a model that learned θ, per image (see the module doc): ``test_loglik``
    (IWAE-``settings.test_particles``, named in ``test_loglik_estimator``) with
    ``test_loglik_sd`` (its spread over images),
    ``exact_test_loglik`` and ``test_loglik_gap`` where log p(x) is exact,
    ``test_loglik_ais`` (AIS over ``settings.ais_test_images`` images, when
    ``settings.ais_temperatures`` > 0), ``train_bound`` (:math:`\\mathcal L_K`, K =
    ``training_particles``) and ``train_elbo`` (the ELBO averaged over the same K draws
    per image: one pass for both), ``bound_to_test_gap``, and
    ``active_units`` (with ``active_units_count``, their sum over sites). Returns the
    metrics and warnings."""
    metrics: dict[str, Any] = {}
    warnings: list[str] = []
    test, train = model.heldout_data, model.train_data
    common = {"image_batch": settings.test_batch, "particle_batch": settings.particle_batch}
    if not infers_new_points(guide):
        warnings.append(
            "this guide has parameters per training image and none for new ones: no test "
            "log-likelihood; use guide=amortized (an encoder) to measure it"
        )
        # its plate covers the training images only: weigh them in one batch
        common["image_batch"] = train.shape[0]
    elif test.shape[0]:
        test_values = per_image_bounds(
            model, guide, test, num_particles=settings.test_particles, **common
        ).iwae
        metrics["test_loglik"] = float(test_values.mean())
        metrics["test_loglik_estimator"] = f"IWAE-{settings.test_particles} per test image"
        metrics["test_loglik_sd"] = float(test_values.std()) if test.shape[0] > 1 else 0.0
        exact = model.exact_log_evidence(test)
        if exact is not None:
            metrics["exact_test_loglik"] = exact / test.shape[0]
            metrics["test_loglik_gap"] = metrics["test_loglik"] - metrics["exact_test_loglik"]
        if settings.ais_temperatures:
            metrics.update(_ais_test_loglik(model, guide, test, settings))
        units = active_units(guide, test)
        if units is None:
            warnings.append("active units need an amortised guide (guide=amortized)")
        else:
            metrics["active_units"] = units
            metrics["active_units_count"] = sum(site["active"] for site in units.values())
    else:
        warnings.append("model.num_heldout = 0: no test log-likelihood")
    metrics["train_bound_particles"] = training_particles
    bounds = per_image_bounds(model, guide, train, num_particles=training_particles, **common)
    metrics["train_bound"] = float(bounds.iwae.mean())
    metrics["train_elbo"] = float(bounds.elbo.mean())
    if "test_loglik" in metrics:
        metrics["bound_to_test_gap"] = metrics["train_bound"] - metrics["test_loglik"]
    return metrics, warnings


def _ais_test_loglik(
    model: LatentVariableModel, guide: Callable[..., Any], test: torch.Tensor, settings: Any
) -> dict[str, float]:
    """AIS from the guide (Wu et al. 2017's check of IWAE test figures) over the first
    ``settings.ais_test_images`` test images, batch by batch; per image."""
    images = test[: settings.ais_test_images]
    total, variance = 0.0, 0.0
    for rows in images.split(settings.test_batch):
        result = annealed_importance_sampling(
            model.evaluation_model,
            guide,
            (rows,),
            max_plate_nesting=model.max_plate_nesting,
            num_chains=settings.ais_chains,
            num_temperatures=settings.ais_temperatures,
        )
        total += result.log_evidence
        variance += result.std_error**2
    count = images.shape[0]
    return {
        "test_loglik_ais": total / count,
        "test_loglik_ais_se": math.sqrt(variance) / count,
        "ais_test_images": count,
    }
