"""``python -m pyro_elbo_lab.conformance [--equivalence] [--keywords]``: the outcome table.

One row per registered objective: how many catalogue cases it agrees on, refuses, or
fails (a crash, a NaN or a disagreement; the failures are listed below the table).
With ``--equivalence``, also the ELBO-equivalence checks, one row per configuration;
with ``--keywords``, a table of every objective built with each of Pyro's ELBO keyword
sets (:data:`PYRO_KEYWORD_SETS`) and run on a case: agree, or the refusal's line.
"""

from __future__ import annotations

import argparse
import collections
import sys
import warnings

import pyro

from pyro_elbo_lab.conformance.catalogue import all_cases
from pyro_elbo_lab.conformance.checks import (
    ELBO_EQUIVALENTS,
    PYRO_KEYWORD_SETS,
    ConformanceFailure,
    check_case,
    check_elbo_equivalence,
)
from pyro_elbo_lab.registry import objectives


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--equivalence", action="store_true", help="also the ELBO checks")
    parser.add_argument("--keywords", action="store_true", help="Pyro's ELBO keywords only")
    options = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if options.keywords:
        return keyword_table()
    cases = all_cases()
    checks = [(name, lambda case, name=name: check_case(name, case)) for name in objectives.names()]
    if options.equivalence:
        checks += [
            (f"{spec.label} = ELBO", lambda case, spec=spec: check_elbo_equivalence(spec, case))
            for spec in ELBO_EQUIVALENTS
        ]
    failures: list[str] = []
    print(f"{len(cases)} cases\n\n| objective | agree | refuse | fail |\n|---|---|---|---|")
    with pyro.validation_enabled(True):
        for label, check in checks:
            counts: collections.Counter[str] = collections.Counter()
            for case in cases:
                try:
                    counts[check(case).verdict] += 1
                except ConformanceFailure as failure:
                    counts["fail"] += 1
                    failures.append(str(failure).splitlines()[0])
            print(f"| {label} | {counts['agree']} | {counts['refuse']} | {counts['fail']} |")
    for failure in failures:
        print(f"- {failure}")
    return 1 if failures else 0


#: the case every keyword construction runs on: a plate, a local and a global latent
KEYWORD_CASE = "several_sites/auto_normal"


def keyword_table() -> int:
    """Objective × Pyro keyword set: ``agree`` on :data:`KEYWORD_CASE`, or the refusal."""
    case = next(case for case in all_cases() if case.name == KEYWORD_CASE)
    names = list(PYRO_KEYWORD_SETS)
    print(f"| objective | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    refusals: dict[str, str] = {}
    failed = False
    with pyro.validation_enabled(True):
        for objective in objectives.names():
            cells = []
            for keywords in PYRO_KEYWORD_SETS.values():
                try:
                    outcome = check_case(objective, case, **keywords)
                except ConformanceFailure as failure:
                    failed = True
                    cells.append(f"FAIL: {str(failure).splitlines()[0]}")
                    continue
                if outcome.verdict == "agree":
                    cells.append("agree")
                else:
                    label = refusals.setdefault(outcome.message, f"refused ({len(refusals) + 1})")
                    cells.append(label)
            print(f"| {objective} | {' | '.join(cells)} |")
    for message, label in refusals.items():
        print(f"- {label}: {message}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
