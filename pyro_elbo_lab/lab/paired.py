r"""Paired comparisons of two configurations over the seeds they share.

Runs with the same seed share their data and their initialisation stream, so the
difference :math:`d_s = m^A_s - m^B_s` of a metric cancels what the seed alone
decides. Over n shared seeds: the mean difference :math:`\bar d`, a 95% percentile
bootstrap interval (Efron & Tibshirani 1993, ch. 13; the seeds resampled with
replacement, a fixed generator so a report is reproducible), the two-sided Wilcoxon
signed-rank test of a difference centred on zero (Wilcoxon 1945; exact for the few
seeds a sweep has; unlike the paired t-test it does not assume normal differences,
and the differences of KLs and errors are skewed), and Holm's step-down correction
(Holm 1979) across the comparisons of one table, which bounds the chance of any false
claim among them by the level. A claim needs both: the adjusted p below the level and the interval
clear of zero; otherwise "no difference detected", which says the seeds cannot tell,
not that the two are equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

LEVEL = 0.05
BOOTSTRAP_DRAWS = 10_000


@dataclass(frozen=True)
class PairedDifference:
    """``first − second`` on one metric over ``seeds`` shared seeds."""

    seeds: int
    mean: float
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float = math.nan

    @property
    def detected(self) -> bool:
        """A difference at the level after Holm's correction, its interval clear of zero."""
        clear = self.ci_low > 0 or self.ci_high < 0
        return clear and self.p_adjusted < LEVEL

    def interval(self, digits: int = 2) -> str:
        return f"{self.mean:+.{digits}g} [{self.ci_low:+.{digits}g}, {self.ci_high:+.{digits}g}]"


def paired_difference(
    first: Mapping[object, float], second: Mapping[object, float], bootstrap_seed: int = 0
) -> PairedDifference | None:
    """The difference over the seeds both have, or None when fewer than two are shared."""
    shared = sorted(set(first) & set(second), key=str)
    if len(shared) < 2:
        return None
    differences = np.array([first[seed] - second[seed] for seed in shared], dtype=float)
    generator = np.random.default_rng(bootstrap_seed)
    resampled = generator.choice(differences, size=(BOOTSTRAP_DRAWS, len(differences)))
    low, high = np.quantile(resampled.mean(axis=1), [LEVEL / 2, 1 - LEVEL / 2])
    mean = float(differences.mean())
    # the signed-rank test drops zero differences: with nothing left, nothing differs
    p_value = float(stats.wilcoxon(differences).pvalue) if differences.any() else 1.0
    return PairedDifference(len(shared), mean, float(low), float(high), p_value)


def holm(
    comparisons: Sequence[PairedDifference | None],
) -> list[PairedDifference | None]:
    """The comparisons with ``p_adjusted`` by Holm's step-down method over all of them."""
    present = [(i, c) for i, c in enumerate(comparisons) if c is not None]
    order = sorted(present, key=lambda item: item[1].p_value)
    adjusted: list[PairedDifference | None] = list(comparisons)
    running = 0.0
    for rank, (index, comparison) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * comparison.p_value))
        adjusted[index] = replace(comparison, p_adjusted=running)
    return adjusted


def within_estimation_error(comparison: PairedDifference, estimation_error: float) -> bool:
    """Whether a paired difference is no larger than twice the error with which each run
    measured the metric: then the runs cannot tell the methods apart, whatever the test."""
    return estimation_error > 0 and abs(comparison.mean) <= 2 * estimation_error


def verdict(
    first: str,
    second: str,
    metric: str,
    comparison: PairedDifference | None,
    lower_is_better: bool,
    estimation_error: float = 0.0,
) -> str:
    """``A beats B on M by Δ [CI]``, ``A trails B ...``, ``no difference detected``, or,
    where the mean difference is within ``estimation_error`` (the error with which the
    runs measured M, e.g. a Monte Carlo KL's), ``within the estimates' error``."""
    if comparison is None:
        return f"{first} vs {second}: too few shared seeds to compare on {metric}"
    if within_estimation_error(comparison, estimation_error):
        return (
            f"{first} vs {second} on {metric}: within the estimates' error "
            f"(Δ {comparison.interval()}, each run's {metric} known to ±{estimation_error:.2g}; "
            f"{comparison.seeds} seeds)"
        )
    if not comparison.detected:
        return (
            f"{first} vs {second} on {metric}: no difference detected "
            f"(Δ {comparison.interval()}, p_Holm={comparison.p_adjusted:.2g}, "
            f"{comparison.seeds} seeds)"
        )
    better = (comparison.mean < 0) == lower_is_better
    word = "beats" if better else "trails"
    return (
        f"{first} {word} {second} on {metric} by {comparison.interval()} "
        f"(p_Holm={comparison.p_adjusted:.2g}, {comparison.seeds} seeds)"
    )
