"""Wall time of a 30-step run of each learned model at its defaults, as a user types it.

Issue 31 C's goal: ``elbo-lab hydra.mode=RUN model=vae steps=30`` and the same for
``model=sbn`` finish, fit and evaluation included, within 60 s on 2 CPU cores, and the
record still holds a test log-likelihood. Each command runs as its own process (start-up,
imports and data loading included) in a scratch directory, ``repeats`` times; the table
gives the median wall time, the record's fit and evaluation seconds, and its test
log-likelihood with the estimator that made it. Printed and written, never asserted.

    python experiments/deep_lvm/default_runs.py [--repeats 3]

writes ``default_runs.md`` and ``default_runs.json`` beside this file (or ``--output DIR``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pyro
import torch

from pyro_elbo_lab.lab.provenance import (
    ISA_FLAGS,
    Provenance,
    provenance,
    require_same_machine,
    spread,
    spread_text,
    wait_until_quiet,
)

COMMANDS = {
    "vae": ["elbo-lab", "hydra.mode=RUN", "model=vae", "steps=30"],
    "sbn": ["elbo-lab", "hydra.mode=RUN", "model=sbn", "steps=30"],
}


def timed_run(command: list[str]) -> dict[str, object]:
    """Run ``command`` in an empty directory; its wall time, what its record says and the
    machine's facts (load average included) as it started, once the load that the run
    before left has decayed (:func:`wait_until_quiet`)."""
    wait_until_quiet()
    facts = provenance().record()
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        subprocess.run(command, cwd=scratch, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        (path,) = Path(scratch).glob("outputs/*/*/record.json")
        record = json.loads(path.read_text())
    metrics = record.get("metrics", {})
    return {
        "provenance": facts,
        "wall_s": wall,
        "status": record["status"],
        "fit_s": record["fit"]["wall_time_s"],
        "evaluation_s": record.get("evaluation_time_s"),
        "guide": record["components"]["guide"],
        "bound": record.get("bound"),
        "test_loglik": metrics.get("test_loglik"),
        "test_loglik_estimator": metrics.get("test_loglik_estimator"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    if shutil.which("elbo-lab") is None:
        raise SystemExit("elbo-lab is not on PATH: install the package first (README)")
    runs = {
        name: [timed_run(command) for _ in range(args.repeats)]
        for name, command in COMMANDS.items()
    }
    every = [run["provenance"] for records in runs.values() for run in records]
    require_same_machine(every)
    results = {
        "machine": f"{every[0]['cpu_model']}, CPU budget {every[0]['cpu_budget']}",
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "commands": {name: " ".join(command) for name, command in COMMANDS.items()},
        "runs": runs,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "default_runs.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# 30-step learned-model runs at their defaults ({results['machine']})",
        "",
        "Command: `python experiments/deep_lvm/default_runs.py"
        + (f" --repeats {args.repeats}`" if args.repeats != 3 else "`"),
        f"(torch {torch.__version__}, pyro {pyro.__version__}; median of {args.repeats} "
        "fresh processes)",
        "",
        f"ISA: {', '.join(every[0]['isa']) or 'none of ' + ', '.join(ISA_FLAGS)}; "
        "load average at each run's start: "
        + ", ".join(f"{facts['load_average']:.2f}" for facts in every),
        *[
            f"- warning: {warning}"
            for facts in every
            if (warning := Provenance.from_record(facts).load_warning())
        ],
        "",
        "| command | wall s (min–max) | fit s | evaluation s | guide | bound | test log-lik "
        "| estimator |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, records in runs.items():
        last = records[-1]
        lines.append(
            f"| `{results['commands'][name]}` "
            f"| {spread_text(spread(r['wall_s'] for r in records), '.1f')} "
            f"| {statistics.median(r['fit_s'] for r in records):.1f} "
            f"| {statistics.median(r['evaluation_s'] for r in records):.1f} "
            f"| {last['guide']} | {last['bound'] or 'ELBO (K = 1)'} | {last['test_loglik']:.2f} "
            f"| {last['test_loglik_estimator']} |"
        )
    (args.output / "default_runs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
