"""Issue 34's targets, measured: the compiled step against NumPyro-JIT over the gmm_scale
grid in fresh processes, idle and beside a spinning process, and the cold start.

Per (N, K, D) cell, every measurement a fresh process of ``benchmark.py``'s worker
(same model, guide, start, Adam 0.05, one particle; steps/s after two warm-up steps,
``setup_s`` from building the model to the end of the second step), each started once
other processes keep at most half a core per core of the budget busy
(:func:`~pyro_elbo_lab.lab.provenance.wait_until_quiet`):

- ``idle``: ``ours_compiled`` ``--repeats`` times, the first ``--cold`` of them each
  compiling into a cache folder of its own (cold: the set-up a sweep's first job pays),
  the rest on the first one's folder (a sweep's later job in a new process) and once more
  in that process (``setup_again_s``: a later job under the lab's sequential launcher);
  ``numpyro_jit`` ``--repeats`` times (cold: JAX keeps no compile cache across processes
  unless told to); ``ours_eager`` ``--contended-repeats`` times (the eager engine's idle
  speed, for its contended ratio);
- ``contended``: ``ours_compiled``, ``numpyro_jit`` and ``ours_eager``
  ``--contended-repeats`` times each with another process spinning on one core from
  before the worker starts to after it ends (a sweep beside another job, a laptop).

The methods alternate within each repeat, so a drift of the machine reaches all alike.
Targets (B, C, D of issue 34): idle median of ``ours_compiled`` ≥ 1.0× NumPyro's median
and its slowest run ≥ 0.8× that median; contended ``ours_compiled`` ≥ contended NumPyro
and ≥ 0.4× its own idle median; cold set-up ≤ NumPyro's for N ≤ 10⁵; set-up again in the
same process ≤ 3 s::

    python experiments/gmm_scale/targets.py                  # ~90 min on 2 cores
    python experiments/gmm_scale/targets.py --sizes 1000     # one row of the grid
    python experiments/gmm_scale/targets.py --report-only experiments/gmm_scale/targets.jsonl

writes ``targets.jsonl`` (a line per process, appended as it ends) and ``targets.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmark import spawn  # noqa: E402

from pyro_elbo_lab.lab.provenance import (  # noqa: E402
    Provenance,
    require_same_machine,
    spread,
    spread_text,
    wait_until_quiet,
)

SHAPES = [(5, 2), (5, 10), (10, 2), (10, 10)]
TARGETS = {"ratio": 1.0, "slowest": 0.8, "contended_own": 0.4, "again_s": 3.0}
COLD_UP_TO = 10**5  # the cold-start target's largest N


@contextmanager
def spinning(enabled: bool) -> Iterator[None]:
    """Another process keeping one core busy for the duration (nothing if not ``enabled``)."""
    if not enabled:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def cell_jobs(n: int, k: int, d: int, args: argparse.Namespace, caches: Path) -> list[dict]:
    """A cell's processes in the order they run: idle repeats, then contended repeats."""
    base = {"kind": "speed", "n": n, "k": k, "d": d}
    first_cache = str(caches / f"{n}_{k}_{d}_0")
    jobs = []
    for repeat in range(args.repeats):
        cold = repeat < args.cold
        ours = {
            **base,
            "series": "idle",
            "method": "ours_compiled",
            "repeat": repeat,
            "cold": cold,
            "cache_dir": str(caches / f"{n}_{k}_{d}_{repeat}") if cold else first_cache,
            "again": not cold,
        }
        jobs += [ours, {**base, "series": "idle", "method": "numpyro_jit", "repeat": repeat}]
        if repeat < args.contended_repeats:
            jobs.append({**base, "series": "idle", "method": "ours_eager", "repeat": repeat})
    for repeat in range(args.contended_repeats):
        for method in ("ours_compiled", "numpyro_jit", "ours_eager"):
            job = {**base, "series": "contended", "method": method, "repeat": repeat}
            if method == "ours_compiled":  # its own folder: the graph has other threads
                job["cache_dir"] = str(caches / f"{n}_{k}_{d}_contended")
            jobs.append(job)
    return jobs


def measure(args: argparse.Namespace) -> list[dict]:
    runs = args.output / "targets.jsonl"
    rows = []
    caches = Path(tempfile.mkdtemp(prefix="gmm_targets_cache_"))
    for n in args.sizes:
        for k, d in SHAPES:
            for job in cell_jobs(n, k, d, args, caches):
                wait_until_quiet()
                with spinning(job["series"] == "contended"):
                    row = spawn(job, args.timeout)
                rows.append(row)
                print(json.dumps(row), flush=True)
                with runs.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
    return rows


# -- the report -----------------------------------------------------------------------------
def _values(rows: list[dict], key: str, **match: object) -> list[float]:
    return [
        row[key]
        for row in rows
        if all(row.get(field) == value for field, value in match.items())
        and row.get(key) is not None
        and "error" not in row
    ]


def _spread_cell(values: list[float], form: str) -> str:
    return spread_text(spread(values), form) if values else "—"


def _verdict(value: float | None, target: float, at_most: bool = False) -> str:
    if value is None:
        return "—"
    met = value <= target if at_most else value >= target
    return f"{value:.2f} {'met' if met else 'missed'}"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio_of_medians(values: list[float], baseline: list[float]) -> float | None:
    return statistics.median(values) / statistics.median(baseline) if values and baseline else None


def report(rows: list[dict]) -> list[str]:
    """Markdown: the B, C and D tables (medians, min–max, runs) and the machine."""
    require_same_machine([row["provenance"] for row in rows if "provenance" in row])
    cells = list(dict.fromkeys((row["n"], row["k"], row["d"]) for row in rows))
    speed_b, speed_c, setup_d = [], [], []
    for n, k, d in cells:
        at = {"n": n, "k": k, "d": d}
        ours = _values(rows, "steps_per_s", series="idle", method="ours_compiled", **at)
        numpyro = _values(rows, "steps_per_s", series="idle", method="numpyro_jit", **at)
        ratio = _ratio_of_medians(ours, numpyro)
        slowest = _ratio_of_medians([min(ours)], numpyro) if ours else None
        speed_b.append(
            f"| {n:.0e} | {k} | {d} | {_spread_cell(ours, '.3g')} | {len(ours)} | "
            f"{_spread_cell(numpyro, '.3g')} | {len(numpyro)} | "
            f"{_verdict(ratio, TARGETS['ratio'])} | {_verdict(slowest, TARGETS['slowest'])} |"
        )
        busy = {
            method: _values(rows, "steps_per_s", series="contended", method=method, **at)
            for method in ("ours_compiled", "numpyro_jit", "ours_eager")
        }
        eager = _values(rows, "steps_per_s", series="idle", method="ours_eager", **at)
        versus = _ratio_of_medians(busy["ours_compiled"], busy["numpyro_jit"])
        own = _ratio_of_medians(busy["ours_compiled"], ours)
        eager_own = _ratio_of_medians(busy["ours_eager"], eager)
        speed_c.append(
            f"| {n:.0e} | {k} | {d} | {_spread_cell(busy['ours_compiled'], '.3g')} | "
            f"{_spread_cell(busy['numpyro_jit'], '.3g')} | "
            f"{_spread_cell(busy['ours_eager'], '.3g')} | {_verdict(versus, 1.0)} | "
            f"{_verdict(own, TARGETS['contended_own'])} | "
            f"{'—' if eager_own is None else f'{eager_own:.2f}'} |"
        )
        cold = _values(rows, "setup_s", series="idle", method="ours_compiled", cold=True, **at)
        numpyro_setup = _values(rows, "setup_s", series="idle", method="numpyro_jit", **at)
        cached = _values(rows, "setup_s", series="idle", method="ours_compiled", cold=False, **at)
        again = _values(rows, "setup_again_s", series="idle", method="ours_compiled", **at)
        cold_ratio = _ratio_of_medians(cold, numpyro_setup) if n <= COLD_UP_TO else None
        setup_d.append(
            f"| {n:.0e} | {k} | {d} | {_spread_cell(cold, '.1f')} | "
            f"{_spread_cell(numpyro_setup, '.1f')} | {_verdict(cold_ratio, 1.0, at_most=True)} | "
            f"{_spread_cell(cached, '.1f')} | {_spread_cell(again, '.1f')} | "
            f"{_verdict(_median(again), TARGETS['again_s'], at_most=True)} |"
        )
    facts = next(row["provenance"] for row in rows if "provenance" in row)
    idle_warnings = [
        warning
        for row in rows
        if row.get("series") == "idle" and "provenance" in row
        if (warning := Provenance.from_record(row["provenance"]).load_warning())
    ]
    errors = [
        f"{row['method']} {row['series']} N={row['n']:.0e} K={row['k']} D={row['d']}: "
        f"{row['error']}"
        for row in rows
        if "error" in row
    ]
    return [
        "# Issue 34's targets: compiled step against NumPyro-JIT, fresh processes",
        "",
        f"Machine: {facts['cpu_model']}, ISA {', '.join(facts['isa']) or 'none listed'}, "
        f"CPU budget {facts['cpu_budget']}, torch {facts['torch']}. "
        f"{len(rows)} processes; idle rows started on a loaded machine: {len(idle_warnings)}."
        + (f" Failed: {'; '.join(errors)}." if errors else ""),
        "",
        "## B. Idle steps/s: median (min–max) of fresh processes",
        "",
        "| N | K | D | ours_compiled | runs | NumPyro-JIT | runs | median / NumPyro's "
        "(≥ 1.0) | slowest / NumPyro's median (≥ 0.8) |",
        "|---|---|---|---|---|---|---|---|---|",
        *speed_b,
        "",
        "## C. Beside a process spinning on one core: steps/s, median (min–max)",
        "",
        "| N | K | D | ours_compiled | NumPyro-JIT | ours_eager | compiled / NumPyro "
        "(≥ 1.0) | compiled / its idle median (≥ 0.4) | eager / its idle median |",
        "|---|---|---|---|---|---|---|---|---|",
        *speed_c,
        "",
        "## D. Set-up (s): model built to the end of the second step, median (min–max)",
        "",
        "| N | K | D | ours cold | NumPyro (cold) | cold / NumPyro's (≤ 1.0, N ≤ 1e5) | "
        "ours, new process on the cache | again in the same process | again (≤ 3 s) |",
        "|---|---|---|---|---|---|---|---|---|",
        *setup_d,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold", type=int, default=3, help="of the repeats, how many cold")
    parser.add_argument("--contended-repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--output", type=Path, default=HERE)
    parser.add_argument("--report-only", type=Path, help="tabulate a targets.jsonl")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        rows = [json.loads(line) for line in args.report_only.read_text().splitlines()]
    else:
        rows = measure(args)
    (args.output / "targets.md").write_text("\n".join(report(rows)) + "\n")


if __name__ == "__main__":
    main()
