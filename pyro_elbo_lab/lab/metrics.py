"""The metrics a report compares: where each lives in a record and which way is better."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyro_elbo_lab.lab.rows import Row


@dataclass(frozen=True)
class Metric:
    """A metric of the record: its key, title, record section and direction, and where
    a run records the metric's own estimation error (``error_key``), if it has one."""

    key: str
    title: str
    section: str = "metrics"
    lower_is_better: bool = False
    error_key: str | None = None


METRICS: tuple[Metric, ...] = (
    Metric("elbo", "ELBO"),
    Metric("iwae", "IWAE-K"),
    Metric("exact_log_evidence", "log p(x)"),
    Metric("elbo_gap", "ELBO − log p(x)"),
    Metric("cubo_gap", "CUBO − log p(x)", lower_is_better=True),
    Metric("kl_to_posterior", "KL(q‖p)", lower_is_better=True, error_key="kl_to_posterior_se"),
    Metric("psis_khat", "PSIS k̂", lower_is_better=True),
    Metric("heldout_loglik", "held-out LL/pt"),
    Metric("test_loglik", "test LL/image"),
    Metric("exact_test_loglik", "exact test LL/image"),
    Metric("train_bound", "train bound/image"),
    Metric("bound_to_test_gap", "train bound − test LL", lower_is_better=True),
    Metric("active_units_count", "active units"),
    Metric("posterior_mean_error", "max mean error (sd)", lower_is_better=True),
    Metric("posterior_sd_error", "max sd error", lower_is_better=True),
    Metric("posterior_w1_mean", "mean W1 (sd)", lower_is_better=True),
    Metric("posterior_w1_max", "max W1 (sd)", lower_is_better=True),
    Metric("posterior_sliced_w1", "sliced W1 (sd)", lower_is_better=True),
    Metric("posterior_gaussian_w2", "Gaussian W2 (sd)", lower_is_better=True),
    Metric("posterior_sd_ratio_min", "min sd ratio"),
    Metric("posterior_sd_ratio_max", "max sd ratio"),
    Metric(
        "posterior_mean_error_resampled", "resampled: max mean error (sd)", lower_is_better=True
    ),
    Metric("posterior_sd_error_resampled", "resampled: max sd error", lower_is_better=True),
    Metric("vsbc_min_pvalue", "VSBC min KS p"),
    Metric("vsbc_max_asymmetry", "VSBC max asymmetry", lower_is_better=True),
    Metric("final_loss", "final loss", "fit", lower_is_better=True),
    Metric("model_evals", "model evals", "fit"),
    Metric("gradient_evals", "gradient evals", "fit"),
    Metric("wall_time_s", "fit seconds", "fit", lower_is_better=True),
    Metric("setup_time_s", "set-up seconds", "fit", lower_is_better=True),
    Metric("steps_per_second", "steps/s", "fit"),
)
BY_KEY = {metric.key: metric for metric in METRICS}
#: the headline metric: the first of these that the sweep's runs have
HEADLINE_METRICS = (
    "exact_test_loglik",
    "test_loglik",
    "kl_to_posterior",
    "posterior_mean_error",
    "heldout_loglik",
    "iwae",
)


def headline_metric(rows: Sequence[Row]) -> Metric:
    """The first of :data:`HEADLINE_METRICS` that the rows have (else the ELBO)."""
    for key in HEADLINE_METRICS:
        metric = BY_KEY[key]
        if any(row.values(metric.key, metric.section) for row in rows):
            return metric
    return BY_KEY["elbo"]
