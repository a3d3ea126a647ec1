"""Paired statistics of the report: bootstrap intervals, the paired test, Holm."""

from __future__ import annotations

import numpy as np
import pytest

from pyro_elbo_lab.lab.paired import PairedDifference, holm, paired_difference, verdict


def _pairs(difference: float, seeds: int, generator: np.random.Generator) -> tuple[dict, dict]:
    """Seed effects shared by both arms (what pairing cancels), plus independent noise."""
    shared = generator.normal(0.0, 5.0, seeds)
    first = shared + difference + generator.normal(0.0, 1.0, seeds)
    second = shared + generator.normal(0.0, 1.0, seeds)
    return dict(enumerate(first)), dict(enumerate(second))


def test_the_paired_interval_covers_a_known_difference_about_95_percent_of_the_time():
    generator = np.random.default_rng(7)
    repetitions, seeds, difference = 300, 20, 0.8
    covered = 0
    for repetition in range(repetitions):
        comparison = paired_difference(
            *_pairs(difference, seeds, generator), bootstrap_seed=repetition
        )
        covered += comparison.ci_low <= difference <= comparison.ci_high
    # The percentile bootstrap under-covers a little at n = 20 (about 0.93 for normal
    # differences); 300 repetitions give a binomial s.e. of 0.013 at 0.95.
    assert 0.88 <= covered / repetitions <= 0.99


def test_pairing_detects_a_difference_that_the_seed_spread_would_hide():
    first, second = _pairs(1.5, 10, np.random.default_rng(0))
    comparison = holm([paired_difference(first, second)])[0]
    assert comparison.detected and comparison.mean == pytest.approx(1.5, abs=0.8)
    assert "beats" in verdict("A", "B", "M", comparison, lower_is_better=False)
    assert "trails" in verdict("A", "B", "M", comparison, lower_is_better=True)


def test_no_difference_is_claimed_between_equal_configurations():
    first, second = _pairs(0.0, 10, np.random.default_rng(3))
    comparison = holm([paired_difference(first, second)])[0]
    assert not comparison.detected
    assert "no difference detected" in verdict("A", "B", "M", comparison, lower_is_better=True)


def test_only_shared_seeds_are_paired_and_two_are_needed():
    assert paired_difference({0: 1.0, 1: 2.0}, {1: 1.0, 2: 3.0}) is None
    comparison = paired_difference({0: 1.0, 1: 3.0, 5: 9.0}, {0: 0.0, 1: 1.0})
    assert comparison.seeds == 2 and comparison.mean == pytest.approx(1.5)


def test_holm_adjusts_step_down_and_stays_monotone():
    def at(p):
        return PairedDifference(5, 1.0, 0.5, 1.5, p)

    adjusted = holm([at(0.01), None, at(0.04), at(0.03)])
    # sorted p: 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert adjusted[1] is None
    assert [adjusted[i].p_adjusted for i in (0, 3, 2)] == pytest.approx([0.03, 0.06, 0.06])


def test_a_difference_within_the_estimates_error_is_not_a_verdict():
    rng = np.random.default_rng(0)
    ours, theirs = _pairs(-1e-6, 8, rng)
    ours = {seed: value * 1e-9 - 1e-6 for seed, value in ours.items()}  # tiny, all detected
    theirs = {seed: value * 1e-9 for seed, value in theirs.items()}
    comparison = holm([paired_difference(ours, theirs)])[0]
    assert comparison.detected  # the test alone would call it
    line = verdict("A", "B", "KL", comparison, lower_is_better=True, estimation_error=3e-6)
    assert "within the estimates' error" in line and "beats" not in line
    assert "beats" in verdict("A", "B", "KL", comparison, lower_is_better=True)
