r"""VSBC: is the fitted approximation calibrated, on average, for data from the model?

Variational simulation-based calibration (Yao, Vehtari, Simpson, Gelman 2018, "Yes, but
did it work?: Evaluating variational inference", §3). For m = 1..M: draw
:math:`\theta^{(m)} \sim p(\theta)` and :math:`y^{(m)} \sim p(y \mid \theta^{(m)})` from
the model itself (:meth:`~pyro_elbo_lab.models.base.LatentVariableModel.prior_predictive`),
fit the run's guide to :math:`y^{(m)}` with the run's fitter and budget, and record each
coordinate's quantile :math:`p_{jm} = \Pr_{q_m}(\theta_j < \theta_j^{(m)})` from
``posterior_samples`` guide draws. Were q the exact posterior, :math:`p_{jm}` would be
uniform; VI is rarely exact, so VSBC asks for less: that the distribution of
:math:`p_j` is symmetric around 1/2, i.e. that q is not biased in one direction. The
test is the two-sample Kolmogorov–Smirnov test of :math:`\{p_{jm}\}` against
:math:`\{1 - p_{jm}\}`; a small p-value says q is biased for :math:`\theta_j`
(mean quantile above 1/2: q sits below the truth).

A run with ``vsbc.datasets`` > 0 does this instead of one fit, and records ``vsbc`` (per
coordinate: the quantiles, their mean, the KS p-value) and the summaries
``vsbc_min_pvalue`` and ``vsbc_max_asymmetry`` (the largest :math:`|\bar p_j - 1/2|`).
Fits that diverge are counted and left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from scipy.stats import ks_2samp

from pyro_elbo_lab.errors import require_positive_int
from pyro_elbo_lab.evaluation.posterior_error import guide_draws
from pyro_elbo_lab.evaluation.reference_distances import coordinate_names
from pyro_elbo_lab.lab.components import build_components, evaluation_guide
from pyro_elbo_lab.lab.fit import FitPlan, fit


@dataclass
class VSBCSettings:
    """The ``vsbc`` node of the lab's config: ``datasets`` simulated data sets (0: off)."""

    datasets: int = 0
    posterior_samples: int = 1000

    def __post_init__(self) -> None:
        require_positive_int("vsbc.datasets", self.datasets, minimum=0)
        require_positive_int("vsbc.posterior_samples", self.posterior_samples)


def simulation_based_calibration(
    config: Any, plan: FitPlan, settings: VSBCSettings
) -> dict[str, Any]:
    """VSBC of ``config``'s model, guide and fitter over ``settings.datasets`` data sets
    (see module doc). Data set m uses seed ``config.seed``·10⁶ + m for its simulation
    and fit, so the result is reproducible and data sets differ across seeds."""
    quantiles: dict[str, list[float]] = {}
    diverged = 0
    for index in range(settings.datasets):
        pyro.clear_param_store()
        pyro.set_rng_seed(config.seed * 1_000_000 + index)
        components = build_components(config)
        model = components.model
        truth, data = model.prior_predictive()
        model.train_data = data
        result = fit(components, plan, progress_bar=False)
        if result.diverged:
            diverged += 1
            continue
        draws = guide_draws(
            model.evaluation_model, evaluation_guide(components), (data,), list(truth),
            settings.posterior_samples, model.max_plate_nesting,
        )  # fmt: skip
        for name, value in truth.items():
            flat = value.reshape(-1)
            below = (draws[name] < flat.to(draws[name].device)).double().mean(0)
            for label, quantile in zip(
                coordinate_names(name, flat.numel()), below.tolist(), strict=True
            ):
                quantiles.setdefault(label, []).append(quantile)
    per_parameter = {}
    for label, values in quantiles.items():
        values_tensor = torch.tensor(values, dtype=torch.float64)
        reflected = (1 - values_tensor).tolist()
        per_parameter[label] = {
            "mean_quantile": float(values_tensor.mean()),
            "ks_pvalue": float(ks_2samp(values, reflected).pvalue) if len(values) > 1 else math.nan,
            "quantiles": values,
        }
    return {
        "datasets": settings.datasets,
        "diverged": diverged,
        "parameters": per_parameter,
        "min_pvalue": min((p["ks_pvalue"] for p in per_parameter.values()), default=math.nan),
        "max_asymmetry": max(
            (abs(p["mean_quantile"] - 0.5) for p in per_parameter.values()), default=math.nan
        ),
    }
