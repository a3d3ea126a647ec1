"""Threads per compiled graph (issue 34 B): the GMM's compiled update with its kernels
on 1, 2, ... threads up to the CPU budget, against the lab's rule
(:mod:`pyro_elbo_lab.engine.graph_threads`).

Per (N, K, D) cell of the gmm_scale grid, one fresh process builds ``ours_compiled``
(``CompiledSVI``: loss, gradients and Adam in one graph; one particle; AutoNormal; Adam
0.05; the benchmark's model and start) once per candidate thread count
(``compile_options={"options": {"cpp.threads": T}}``), then times them interleaved:
``--rounds`` rounds, each candidate stepping for ``--seconds`` per round; steps/s is the
median over rounds. Interleaving in one process pairs the candidates against the same
machine state, which is what a choice between them needs; so the cells run back to back
(the one-minute load average at each start still counts the cell before: it lags).

    python experiments/gmm_scale/threads.py [--sizes 1000 10000] [--rounds 5]
    python experiments/gmm_scale/threads.py --engine eager --sizes 20 100 1000 10000
    python experiments/gmm_scale/threads.py --report-only a.json b.json   # merge, re-tabulate

writes ``threads.md`` and ``threads.json`` beside this file (or ``--output DIR``); the
table's rule column is the rule as the code states it now.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmark import LEARNING_RATE, autonormal, make_model  # noqa: E402

from pyro_elbo_lab.engine.graph_threads import (  # noqa: E402
    ELEMENTS_PER_THREAD,
    available_threads,
    largest_tensor,
)
from pyro_elbo_lab.lab.provenance import provenance  # noqa: E402

GRID = [(5, 2), (5, 10), (10, 2), (10, 10)]


def interleaved_rates(
    step_on: Callable[[int], Callable[[], object]],
    candidates: list[int],
    rounds: int,
    seconds: float,
) -> dict[int, list[float]]:
    """Steps/s per candidate thread count and round: each round steps every candidate in
    turn (``step_on(threads)`` readies it and gives its step) for ``seconds`` (≥ 3 steps)."""
    rates: dict[int, list[float]] = {threads: [] for threads in candidates}
    for _ in range(rounds):
        for threads in candidates:
            step = step_on(threads)
            steps, start = 0, time.perf_counter()
            while steps < 3 or time.perf_counter() - start < seconds:
                step()
                steps += 1
            rates[threads].append(steps / (time.perf_counter() - start))
    return rates


def measure_cell(n: int, k: int, d: int, rounds: int, seconds: float) -> dict:
    """Steps/s of the compiled update per candidate thread count, interleaved."""
    import pyro
    import torch

    from pyro_elbo_lab.engine import CompiledSVI
    from pyro_elbo_lab.objectives import IWAE
    from pyro_elbo_lab.optim import FusedAdam

    facts = provenance().record()
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    model = make_model(n, k, d)
    guide = autonormal(model, model.train_data, k)
    candidates = list(range(1, available_threads() + 1))
    steppers, setup = {}, {}
    for threads in candidates:
        objective = IWAE(
            num_particles=1, compile=True, compile_options={"options": {"cpp.threads": threads}}
        )
        svi = CompiledSVI(model, guide, FusedAdam({"lr": LEARNING_RATE}), objective)
        start = time.perf_counter()
        for _ in range(2):  # trace, then compile the update
            svi.step(model.train_data)
        setup[threads] = time.perf_counter() - start
        steppers[threads] = svi
    (graph,) = steppers[candidates[0]].compiled_graphs()
    rates = interleaved_rates(
        lambda threads: lambda: steppers[threads].step(model.train_data),
        candidates, rounds, seconds,
    )  # fmt: skip
    return {
        "n": n, "k": k, "d": d, "provenance": facts,
        "largest_tensor": largest_tensor(graph.traced),
        "setup_s": setup,
        "steps_per_s": {threads: statistics.median(found) for threads, found in rates.items()},
        "rounds": rates,
    }  # fmt: skip


def measure_eager_cell(n: int, k: int, d: int, rounds: int, seconds: float) -> dict:
    """Steps/s of the eager engine (``ours_eager``: SVI, Adam) with torch on 1, 2, ...
    threads, interleaved: whether ATen's grain size (ops under 32,768 elements run on
    one thread whatever the count) already keeps small steps off the thread team."""
    import pyro
    import torch
    from pyro.infer import SVI
    from pyro.optim import Adam

    from pyro_elbo_lab.objectives import IWAE

    facts = provenance().record()
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    model = make_model(n, k, d)
    guide = autonormal(model, model.train_data, k)
    svi = SVI(model, guide, Adam({"lr": LEARNING_RATE}), IWAE(num_particles=1))
    for _ in range(2):
        svi.step(model.train_data)

    def on_threads(threads: int) -> Callable[[], object]:
        torch.set_num_threads(threads)
        return lambda: svi.step(model.train_data)

    candidates = list(range(1, available_threads() + 1))
    rates = interleaved_rates(on_threads, candidates, rounds, seconds)
    return {
        "engine": "eager", "n": n, "k": k, "d": d, "provenance": facts,
        "steps_per_s": {threads: statistics.median(found) for threads, found in rates.items()},
        "rounds": rates,
    }  # fmt: skip


def report(cells: list[dict], args: argparse.Namespace) -> str:
    """The table: steps/s per thread count, the faster one, and the rule's choice."""
    machine = cells[0]["provenance"]
    lines = [
        "# Threads per compiled graph: the GMM's compiled update (issue 34 B)",
        "",
        f"Command: `python experiments/gmm_scale/threads.py --sizes "
        f"{' '.join(map(str, args.sizes))} --rounds {args.rounds}`",
        "",
        f"Machine: {machine['cpu_model']}; ISA {', '.join(machine['isa']) or 'none'}; "
        f"CPU budget {machine['cpu_budget']}; torch {machine['torch']}. One fresh process "
        f"per cell; steps/s is the median of {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s per candidate. Rule: T = min(budget, max(1, S // "
        f"{ELEMENTS_PER_THREAD:,})), S the elements of the graph's largest tensor.",
        "",
    ]
    eager = [cell for cell in cells if cell.get("engine") == "eager"]
    cells = [cell for cell in cells if cell.get("engine", "compiled") == "compiled"]
    threads = sorted({int(t) for cell in cells for t in cell["steps_per_s"]})
    head = " | ".join(f"{t} thread{'s' if t > 1 else ''} steps/s" for t in threads)
    lines += [
        f"| N | K | D | largest tensor S | {head} | faster | rule | rule's loss | load at start |",
        "|" + "---|" * (7 + len(threads)),
    ]
    for cell in cells:
        rates = {int(t): rate for t, rate in cell["steps_per_s"].items()}
        best = max(rates, key=rates.get)
        rule = max(1, min(max(rates), cell["largest_tensor"] // ELEMENTS_PER_THREAD))
        loss = 1 - rates[rule] / rates[best]
        lines.append(
            f"| {cell['n']:,} | {cell['k']} | {cell['d']} | {cell['largest_tensor']:,} | "
            + " | ".join(f"{rates[t]:.0f}" for t in threads)
            + f" | {best} | {rule} | {loss:.0%} | {cell['provenance']['load_average']:.2f} |"
        )
    lines += [
        "",
        "\"rule's loss\": how much slower the rule's choice ran than the faster candidate "
        "in that cell (0% where it chose the faster). The load at start includes the "
        "previous cell's process (the one-minute average lags); the candidates of a cell "
        "are compared within one process, interleaved.",
    ]
    if eager:
        threads = sorted({int(t) for cell in eager for t in cell["steps_per_s"]})
        lines += [
            "",
            "## The eager engine (`ours_eager`, `--engine eager`): torch's threads, all ops",
            "",
            "| N | K | D | " + " | ".join(f"{t} thread(s) steps/s" for t in threads)
            + " | 2 threads / 1 thread |",
            "|" + "---|" * (4 + len(threads)),
        ]  # fmt: skip
        for cell in eager:
            rates = {int(t): rate for t, rate in cell["steps_per_s"].items()}
            lines.append(
                f"| {cell['n']:,} | {cell['k']} | {cell['d']} | "
                + " | ".join(f"{rates[t]:.0f}" for t in threads)
                + f" | {rates[max(rates)] / rates[min(rates)]:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--output", type=Path, default=HERE)
    parser.add_argument("--engine", choices=["compiled", "eager"], default="compiled")
    parser.add_argument("--report-only", type=Path, nargs="+", help="threads.json files")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        measure = measure_eager_cell if job.pop("engine") == "eager" else measure_cell
        print(json.dumps(measure(**job)))
        return
    if args.report_only:
        cells = [cell for path in args.report_only for cell in json.loads(path.read_text())]
        cells.sort(key=lambda cell: (cell.get("engine", ""), cell["n"], cell["k"], cell["d"]))
        args.sizes = sorted({cell["n"] for cell in cells})
        write(cells, args)
        return
    cells = []
    for n in args.sizes:
        for k, d in GRID:
            job = {"n": n, "k": k, "d": d, "rounds": args.rounds, "seconds": args.seconds,
                   "engine": args.engine}  # fmt: skip
            done = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(job)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            cells.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(report(cells, args).splitlines()[-3], flush=True)
    write(cells, args)


def write(cells: list[dict], args: argparse.Namespace) -> None:
    """``threads.json`` (every cell) and ``threads.md`` (the table) in ``args.output``."""
    (args.output / "threads.json").write_text(json.dumps(cells, indent=1) + "\n")
    (args.output / "threads.md").write_text(report(cells, args))
    print(report(cells, args))


if __name__ == "__main__":
    main()
