"""Where the cold set-up of the compiled GMM step goes (issue 34 D).

Each run is a fresh process with a compile cache folder of its own (nothing compiled
before, as a sweep's first job on a new machine): it builds ``benchmark.py``'s
``ours_compiled`` step and runs its two warm-up steps, and splits that set-up by torch's
own compile timers (``torch._dynamo.utils.compilation_time_metrics``):

- ``imports, model, eager step, tracing, check``: everything outside ``torch.compile``:
  imports, building the model and guide, the eager first step (it initialises the guide
  and runs Pyro's validation), tracing the update on fake tensors, the first-use check of
  the compiled graph against the traced one and the second step;
- ``dynamo``: TorchDynamo's pass over the traced graph (bytecode tracing, guards);
- ``AOT autograd``: functionalisation and partitioning before inductor;
- ``inductor``: lowering, scheduling and generating the C++ kernels and wrapper;
- ``C++ compiler``: building that source into a shared library;
- ``ISA probe`` (``--isa-probe``): inductor's check of the compiler for every vector ISA
  the CPU lists, ten small C++ builds once per cache folder, which the lab now skips
  (``cpp.vec_isa_ok``, :func:`pyro_elbo_lab.engine.compiled.compile_options_for`); timed
  apart, before the step, by asking inductor for its ISA list with the probe on, and
  left out of ``set-up``.

    python experiments/gmm_scale/cold_start.py [--sizes 1000 100000] [--runs 3] [--isa-probe]

prints a markdown table: median (min–max) seconds per phase over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHASES = (
    "set-up",
    "ISA probe",
    "imports, model, eager step, tracing, check",
    "dynamo",
    "AOT autograd",
    "inductor",
    "C++ compiler",
)


def phases(n: int, k: int, d: int, isa_probe: bool) -> dict[str, float]:
    """One cold set-up, split into :data:`PHASES` (seconds); run in a fresh process."""
    start = time.perf_counter()
    from torch._dynamo.utils import compilation_time_metrics as timers
    from torch._inductor.cpu_vec_isa import valid_vec_isa_list

    probe = 0.0
    if isa_probe:
        began = time.perf_counter()
        valid_vec_isa_list()  # the probe, with inductor's defaults; cached in the process
        probe = time.perf_counter() - began
        timers.clear()  # its builds are not the step's
    sys.path.insert(0, str(HERE))
    from benchmark import speed_step

    step = speed_step("ours_compiled", n, k, d)
    step()
    step()
    setup = time.perf_counter() - start - probe

    def total(name: str) -> float:
        return sum(timers.get(name, []))

    compiling = total("_compile.compile_inner")
    backend = total("OutputGraph.call_user_compiler")
    aot = total("create_aot_dispatcher_function")
    inductor = total("compile_fx_inner")
    compiler = total("compile_file")
    return {
        "set-up": setup,
        "ISA probe": probe,
        "imports, model, eager step, tracing, check": setup - compiling,
        "dynamo": compiling - backend,
        "AOT autograd": aot - inductor,
        "inductor": inductor - compiler,
        "C++ compiler": compiler,
    }


def run(n: int, k: int, d: int, isa_probe: bool) -> dict[str, float]:
    """:func:`phases` in a fresh process on an empty cache folder."""
    with tempfile.TemporaryDirectory(prefix="gmm_cold_") as cache:
        environment = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        job = json.dumps({"n": n, "k": k, "d": d, "isa_probe": isa_probe})
        done = subprocess.run(
            [sys.executable, __file__, "--worker", job],
            capture_output=True,
            text=True,
            env=environment,
            check=True,
        )
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**5])
    parser.add_argument("--shape", default="5x2", help="K x D")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--isa-probe", action="store_true")
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(phases(job["n"], job["k"], job["d"], job["isa_probe"])))
        return
    sys.path.insert(0, str(HERE.parents[1]))
    from pyro_elbo_lab.lab.provenance import provenance, spread, spread_text, wait_until_quiet

    k, d = (int(value) for value in args.shape.split("x"))
    measured = {}
    for n in args.sizes:
        runs = []
        for _ in range(args.runs):
            wait_until_quiet()
            runs.append(run(n, k, d, args.isa_probe))
        measured[n] = runs
    facts = provenance()
    print(
        f"{facts.cpu_model}, CPU budget {facts.cpu_budget}, torch {facts.torch}; K = {k}, D = {d}"
    )
    print("| phase | " + " | ".join(f"N = {n:.0e}" for n in args.sizes) + " |")
    print("|---|" + "---|" * len(args.sizes))
    for phase in PHASES:
        if phase == "ISA probe" and not args.isa_probe:
            continue
        cells = [spread_text(spread(run[phase] for run in measured[n]), ".1f") for n in args.sizes]
        print(f"| {phase} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
