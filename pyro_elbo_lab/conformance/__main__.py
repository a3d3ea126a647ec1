"""``python -m pyro_elbo_lab.conformance [--equivalence]``: the outcome table.

One row per registered objective: how many catalogue cases it agrees on, refuses, or
fails (a crash, a NaN or a disagreement; the failures are listed below the table).
With ``--equivalence``, also the ELBO-equivalence checks, one row per configuration.
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
    ConformanceFailure,
    check_case,
    check_elbo_equivalence,
)
from pyro_elbo_lab.registry import objectives


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--equivalence", action="store_true", help="also the ELBO checks")
    options = parser.parse_args(argv)
    warnings.simplefilter("ignore")
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


if __name__ == "__main__":
    sys.exit(main())
