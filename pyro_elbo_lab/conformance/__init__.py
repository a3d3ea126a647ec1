"""The conformance suite: every registered objective against a catalogue of valid Pyro
programs (:mod:`~pyro_elbo_lab.conformance.catalogue`), each case ending in agreement
or a one-line refusal (:mod:`~pyro_elbo_lab.conformance.checks`).

``python -m pyro_elbo_lab.conformance`` prints the outcome table (objective × agree /
refuse); the tests run the same checks case by case.
"""

from pyro_elbo_lab.conformance.catalogue import Case, Program, all_cases
from pyro_elbo_lab.conformance.checks import (
    ELBO_EQUIVALENTS,
    ConformanceFailure,
    Outcome,
    check_case,
    check_elbo_equivalence,
)

__all__ = [
    "ELBO_EQUIVALENTS",
    "Case",
    "ConformanceFailure",
    "Outcome",
    "Program",
    "all_cases",
    "check_case",
    "check_elbo_equivalence",
]
