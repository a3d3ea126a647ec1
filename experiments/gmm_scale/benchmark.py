"""GMM at scale: steps/s against Pyro, a hand-written PyTorch step and NumPyro; time to
scikit-learn's held-out log-likelihood; peak memory.

Same model everywhere: the lab's Bayesian GMM (``pyro_elbo_lab.models.GaussianMixture``,
Dirichlet weights, Normal means, LogNormal diagonal scales), mean-field Normal guide over
the unconstrained latents (``AutoNormal``), Adam(lr) and one particle:

- ``ours_eager``: the engine's ELBO (``iwae``, K = 1) on the marginalised model through
  ``pyro.infer.SVI`` with ``pyro.optim.Adam``;
- ``ours_compiled``: the same with ``compile=true`` and ``FusedAdam`` through
  ``CompiledSVI`` (the lab's path for ``objective.compile=true optim=fused_adam``): loss,
  gradients and the Adam update in one compiled graph;
- ``pyro_trace_enum`` / ``pyro_jit_trace_enum``: Pyro's ``(Jit)TraceEnum_ELBO`` on the
  enumerated model (Pyro's way);
- ``torch_eager``: the same ELBO written by hand in PyTorch, eager, ``torch.optim.Adam``;
- ``numpyro_jit``: NumPyro's ``Trace_ELBO`` on the marginalised model, the whole
  update under ``jax.jit``.

Each measurement runs in its own process (clean peak RSS); each ``ours_compiled`` grid
job compiles into a cache folder of its own (cold), which its ``cached`` twin, a new
process, then reuses (a sweep's later job)::

    python experiments/gmm_scale/benchmark.py            # the committed grid
    python experiments/gmm_scale/benchmark.py --quick    # N = 1e3 only, a smoke run

scikit-learn, NumPyro and JAX are benchmark-only extras (``pip install
'pyro-elbo-lab[benchmark]'``); methods whose library is missing are recorded as such.
Writes ``results.csv``, ``results.md``, ``quality.csv``, ``quality.png`` and the raw
measurements ``runs.jsonl`` beside this file (``--report-only runs.jsonl`` rebuilds the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEED_METHODS = (
    "ours_compiled",
    "ours_eager",
    "pyro_trace_enum",
    "pyro_jit_trace_enum",
    "torch_eager",
    "numpyro_jit",
)
PARTICLE_METHODS = (
    "ours_compiled",
    "ours_eager",
    "pyro_trace_enum",
    "pyro_jit_trace_enum",
    "numpyro_jit",
)
QUALITY_METHODS = ("sklearn_bgmm", "sklearn_gmm", "ours_minibatch")
LEARNING_RATE = 0.05
HELDOUT = 10_000
MIN_SECONDS = 2.0
MIN_STEPS = 3


def make_model(n: int, k: int, d: int, **options):
    from pyro_elbo_lab.models import GaussianMixture

    return GaussianMixture(
        num_components=k, dim=d, num_train=n, num_heldout=HELDOUT, seed=0, **options
    )


def initial_locs(data, k: int, seed: int = 0):
    """K distinct training points as the initial component means (sklearn's
    ``random_from_data``): a symmetric start leaves every component on the data mean."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return data[torch.randperm(data.shape[0], generator=generator)[:k]]


def autonormal(model, data, k: int):
    from pyro.infer.autoguide import AutoNormal, init_to_value

    return AutoNormal(model, init_loc_fn=init_to_value(values={"locs": initial_locs(data, k)}))


# -- one step callable per method --------------------------------------------------------
def ours(
    n: int,
    k: int,
    d: int,
    compiled: bool,
    subsample_size: int | None = None,
    particles: int = 1,
):
    import pyro
    from pyro.infer import SVI
    from pyro.optim import Adam

    from pyro_elbo_lab.engine import CompiledSVI
    from pyro_elbo_lab.objectives import IWAE
    from pyro_elbo_lab.optim import FusedAdam

    model = make_model(n, k, d, subsample_size=subsample_size)
    guide = autonormal(model, model.train_data, k)
    objective = IWAE(num_particles=particles, compile=compiled)
    if compiled:  # the lab's fast path: loss, gradients and Adam in one compiled graph
        svi = CompiledSVI(model, guide, FusedAdam({"lr": LEARNING_RATE}), objective)
    else:
        svi = SVI(model, guide, Adam({"lr": LEARNING_RATE}), objective)
    pyro.set_rng_seed(0)
    return model, guide, lambda: svi.step(model.train_data)


def pyro_enum(n: int, k: int, d: int, jit: bool, particles: int = 1):
    import pyro
    from pyro import poutine
    from pyro.infer import SVI, JitTraceEnum_ELBO, TraceEnum_ELBO
    from pyro.optim import Adam

    model = make_model(n, k, d, assignment="enumerated")
    guide = autonormal(poutine.block(model, hide=["assignment"]), model.train_data, k)
    elbo = (JitTraceEnum_ELBO if jit else TraceEnum_ELBO)(
        max_plate_nesting=1, num_particles=particles, vectorize_particles=particles > 1
    )
    svi = SVI(model, guide, Adam({"lr": LEARNING_RATE}), elbo)
    pyro.set_rng_seed(0)
    return lambda: svi.step(model.train_data)


def torch_eager(n: int, k: int, d: int):
    """The ELBO by hand: reparameterised draws, log prior + log likelihood + entropy."""
    import torch
    from torch.distributions import (
        Categorical,
        Dirichlet,
        Independent,
        LogNormal,
        MixtureSameFamily,
        Normal,
        biject_to,
        constraints,
    )

    model = make_model(n, k, d)
    data = model.train_data
    to_simplex, to_positive = biject_to(constraints.simplex), biject_to(constraints.positive)
    params = {
        "w_loc": torch.zeros(k - 1),
        "w_scale": torch.full((k - 1,), -2.3),
        "m_loc": initial_locs(data, k).clone(),
        "m_scale": torch.full((k, d), -2.3),
        "s_loc": torch.zeros(k, d),
        "s_scale": torch.full((k, d), -2.3),
    }
    for value in params.values():
        value.requires_grad_(True)
    optimizer = torch.optim.Adam(params.values(), lr=LEARNING_RATE)
    softplus = torch.nn.functional.softplus

    def negative_elbo():
        entropy_terms, values = [], {}
        for name, transform in (("w", to_simplex), ("m", None), ("s", to_positive)):
            q = Normal(params[f"{name}_loc"], softplus(params[f"{name}_scale"]))
            u = q.rsample()
            entropy_terms.append(-q.log_prob(u).sum())
            if transform is None:
                values[name] = u
            else:
                values[name] = transform(u)
                entropy_terms.append(transform.log_abs_det_jacobian(u, values[name]).sum())
        weights, locs, scales = values["w"], values["m"], values["s"]
        log_prior = (
            Dirichlet(torch.full((k,), model.weight_concentration)).log_prob(weights)
            + Normal(0.0, model.loc_prior_scale).log_prob(locs).sum()
            + LogNormal(0.0, model.scale_prior_scale).log_prob(scales).sum()
        )
        mixture = MixtureSameFamily(Categorical(weights), Independent(Normal(locs, scales), 1))
        return -(log_prior + mixture.log_prob(data).sum() + sum(entropy_terms))

    def step():
        optimizer.zero_grad()
        loss = negative_elbo()
        loss.backward()
        optimizer.step()
        return float(loss)

    return step


def numpyro_jit(n: int, k: int, d: int, particles: int = 1):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.infer.initialization import init_to_value

    model_spec = make_model(n, k, d)
    data = jnp.asarray(model_spec.train_data.numpy())
    locs0 = jnp.asarray(initial_locs(model_spec.train_data, k).numpy())

    def model(x):
        weights = numpyro.sample(
            "weights", nd.Dirichlet(jnp.full(k, model_spec.weight_concentration))
        )
        with numpyro.plate("components", k):
            locs = numpyro.sample(
                "locs", nd.Normal(jnp.zeros(d), model_spec.loc_prior_scale).to_event(1)
            )
            scales = numpyro.sample(
                "scales", nd.LogNormal(jnp.zeros(d), model_spec.scale_prior_scale).to_event(1)
            )
        components = nd.Normal(locs, scales).to_event(1)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample(
                "obs", nd.MixtureSameFamily(nd.Categorical(probs=weights), components), obs=x
            )

    guide = AutoNormal(model, init_loc_fn=init_to_value(values={"locs": locs0}))
    svi = SVI(model, guide, numpyro.optim.Adam(LEARNING_RATE), Trace_ELBO(num_particles=particles))
    state = [svi.init(jax.random.PRNGKey(0), data)]
    update = jax.jit(svi.update)

    def step():
        state[0], loss = update(state[0], data)
        return float(loss.block_until_ready())

    return step


def speed_step(
    method: str, n: int, k: int, d: int, particles: int = 1, subsample: int | None = None
) -> Callable[[], float]:
    """A step of ``method`` with ``particles`` Monte Carlo draws (vectorised) per step;
    ``subsample``: minibatches of that many points (``ours_compiled`` only)."""
    if method in ("ours_eager", "ours_compiled"):
        compiled = method == "ours_compiled"
        return ours(n, k, d, compiled, subsample_size=subsample, particles=particles)[2]
    if subsample is not None:
        raise ValueError(f"{method} is not measured with minibatches")
    if method in ("pyro_trace_enum", "pyro_jit_trace_enum"):
        return pyro_enum(n, k, d, jit=method == "pyro_jit_trace_enum", particles=particles)
    if method == "torch_eager" and particles == 1:
        return torch_eager(n, k, d)
    if method == "numpyro_jit":
        return numpyro_jit(n, k, d, particles=particles)
    raise ValueError(f"{method} with {particles} particles is not measured")


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Start the kernel's peak-RSS count (VmHWM) afresh (Linux)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def vm_peak_mb() -> float:
    """VmHWM: the peak RSS since the last :func:`reset_peak_rss` (or the start), MiB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def measure_speed(
    method: str,
    n: int,
    k: int,
    d: int,
    particles: int = 1,
    subsample: int | None = None,
    again: bool = False,
) -> dict:
    """Set up, warm up (compilation, tracing), then time steps for MIN_SECONDS.

    ``setup_s``: from building the model to the end of the second step (everything a
    run pays before its steady state). Memory: the peak RSS of the whole process and,
    apart from it, the peak over the timed (steady-state) steps. ``again``: then set up
    the same run once more in this process and time that (a sweep's later jobs under
    a sequential launcher: compiler state warm in memory, not only on disk).
    """
    start = time.perf_counter()
    step = speed_step(method, n, k, d, particles, subsample)
    baseline = current_rss_mb()
    for _ in range(2):
        step()
    setup = time.perf_counter() - start
    setup_peak = peak_rss_mb()  # read first: resetting VmHWM resets ru_maxrss too
    reset_peak_rss()
    steps, start = 0, time.perf_counter()
    while steps < MIN_STEPS or time.perf_counter() - start < MIN_SECONDS:
        loss = step()
        steps += 1
    elapsed = time.perf_counter() - start
    result = {
        "steps_per_s": steps / elapsed,
        "setup_s": setup,
        "final_loss": loss,
        "rss_before_mb": baseline,
        "peak_rss_mb": max(setup_peak, vm_peak_mb()),
        "steady_peak_rss_mb": vm_peak_mb(),
    }
    if again:
        import pyro

        pyro.clear_param_store()
        start = time.perf_counter()
        step = speed_step(method, n, k, d, particles, subsample)
        for _ in range(2):
            step()
        result["setup_again_s"] = time.perf_counter() - start
    return result


# -- time to scikit-learn's held-out log-likelihood -------------------------------------------
def plugin_heldout(model, guide) -> float:
    """Mean held-out log p(x | θ̂) per point at the guide's median θ̂ (sklearn's score)."""
    import torch

    with torch.no_grad():
        median = guide.median(model.train_data)
        mixture = model.likelihood(
            median["weights"], median["locs"].unsqueeze(-3), median["scales"].unsqueeze(-3)
        )
        return float(mixture.log_prob(model.heldout_data).mean())


def measure_quality(method: str, n: int, k: int, d: int, budget_s: float, batch: int) -> dict:
    if method.startswith("sklearn"):
        from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

        model = make_model(n, k, d)
        estimator = (BayesianGaussianMixture if method == "sklearn_bgmm" else GaussianMixture)(
            n_components=k, covariance_type="diag", max_iter=500, random_state=0
        )
        start = time.perf_counter()
        estimator.fit(model.train_data.numpy())
        wall = time.perf_counter() - start
        heldout = float(estimator.score(model.heldout_data.numpy()))
        return {
            "wall_s": wall,
            "heldout": heldout,
            "iterations": int(estimator.n_iter_),
            "curve": [[wall, heldout]],
            "peak_rss_mb": peak_rss_mb(),
        }
    model, guide, step = ours(n, k, d, compiled=True, subsample_size=batch)
    step()  # set up and compile; not counted (reported as setup_s)
    start = time.perf_counter()
    step()
    setup = time.perf_counter() - start
    curve, clock, steps = [], 0.0, 0
    while clock < budget_s:
        start = time.perf_counter()
        for _ in range(100):
            step()
        clock += time.perf_counter() - start
        steps += 100
        curve.append([clock, plugin_heldout(model, guide)])
    return {
        "wall_s": clock,
        "heldout": curve[-1][1],
        "iterations": steps,
        "curve": curve,
        "peak_rss_mb": peak_rss_mb(),
        "batch": batch,
        "setup_s": setup,
    }


# -- driver ---------------------------------------------------------------------------------
def run_worker(job: dict) -> dict:
    import torch

    from pyro_elbo_lab.lab.provenance import provenance

    torch.manual_seed(0)
    job = {**job, "provenance": provenance().record()}  # before the method loads the CPUs
    try:
        if job["kind"] == "speed":
            if job.get(
                "cache_dir"
            ):  # this job's own compile cache: cold, or warm from a job before
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = job["cache_dir"]
            measured = measure_speed(
                job["method"],
                job["n"],
                job["k"],
                job["d"],
                job.get("particles", 1),
                job.get("subsample"),
                job.get("again", False),
            )
            return {**job, **measured}
        return {
            **job,
            **measure_quality(
                job["method"], job["n"], job["k"], job["d"], job["budget_s"], job["batch"]
            ),
        }
    except ImportError as error:
        return {**job, "error": f"not installed: {error.name}"}
    except Exception as error:  # the table records a failed method instead of dying
        return {**job, "error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}


def spawn(job: dict, timeout: float) -> dict:
    command = [sys.executable, __file__, "--worker", json.dumps(job)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**job, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {**job, "error": f"worker failed: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="N = 1e3 grid only")
    parser.add_argument("--output", type=Path, default=HERE)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=["5x2", "5x10", "10x2", "10x10"],
        help="K x D pairs of components and dimensions",
    )
    parser.add_argument("--quality-sizes", type=int, nargs="+", default=[10**5, 10**6])
    parser.add_argument("--particles", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument(
        "--grid-only", action="store_true", help="the grid (and cached) rows of --sizes only"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace the re-measured rows in --output's runs.jsonl, keep the others",
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--report-only", type=Path, help="rebuild the reports from a runs.jsonl of measurements"
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    from report import read_runs, write_reports  # beside this script

    from pyro_elbo_lab.lab.provenance import wait_until_quiet

    if args.report_only:
        rows, quality = read_runs(args.report_only)
        write_reports(rows, quality, args.output, machine())
        return
    sizes = [10**3] if args.quick else args.sizes
    args.output.mkdir(parents=True, exist_ok=True)
    runs = args.output / "runs.jsonl"
    kept = runs.read_text().splitlines() if args.merge and runs.exists() else []
    runs.unlink(missing_ok=True)
    shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes]
    caches = Path(tempfile.mkdtemp(prefix="gmm_scale_compile_cache_"))
    rows = []
    only_grid = args.quick or args.grid_only
    for job in speed_jobs(sizes, shapes, args.particles, only_grid, caches):
        wait_until_quiet()  # the job before has ended, and nothing else runs
        rows.append(spawn(job, args.timeout))
        log(rows[-1], args.output)
    shutil.rmtree(caches, ignore_errors=True)
    if args.merge:
        rows, quality = merge(kept, runs)
        write_reports(rows, quality, args.output, machine())
        return
    quality = []
    for n in [] if only_grid else args.quality_sizes:
        for method in QUALITY_METHODS:
            bgmm = [q for q in quality if q["method"] == "sklearn_bgmm" and q["n"] == n]
            # three times BGMM's wall time: long enough to see when (or whether) ours gets there
            budget = max(5.0, 3 * bgmm[0]["wall_s"]) if bgmm and "wall_s" in bgmm[0] else 60.0
            job = {
                "kind": "quality",
                "method": method,
                "n": n,
                "k": 5,
                "d": 2,
                "budget_s": budget,
                "batch": 10_000,
            }
            wait_until_quiet()
            quality.append(spawn(job, args.timeout * 4))
            log(quality[-1], args.output)
    write_reports(rows, quality, args.output, machine())


def identity(run: dict) -> tuple:
    """What a measurement measured (a re-measurement replaces the row with the same)."""
    keys = ("kind", "series", "method", "n", "k", "d", "particles", "subsample")
    return tuple(run.get(key) for key in keys)


def merge(kept: list[str], runs: Path) -> tuple[list[dict], list[dict]]:
    """``runs`` (new measurements) merged into the ``kept`` lines of the old file, each
    new row in its old row's place; written back to ``runs``; returns the reports' rows."""
    from report import read_runs

    new = {identity(json.loads(line)): line for line in runs.read_text().splitlines()}
    lines = [new.pop(identity(json.loads(line)), line) for line in kept]
    runs.write_text("\n".join([*lines, *new.values()]) + "\n")
    return read_runs(runs)


def speed_jobs(
    sizes: list[int],
    shapes: list[tuple[int, int]],
    particles: list[int],
    grid_only: bool,
    caches: Path,
) -> list[dict]:
    """Every speed measurement, in order.

    - ``grid``: each method at each (N, K, D); ``ours_compiled`` with a compile cache
      of its own (cold: nothing cached), then ``cached``: the same run in a new process
      on that cache (a sweep's later job), and once more in that process (``again``);
    - ``minibatch``: ``ours_compiled`` at N = 10⁶ on minibatches of 10⁴ (against the
      full-data step at N = 10⁴ of the grid);
    - ``particles``: ours, Pyro and NumPyro with 1…256 vectorised particles at N = 10⁴,
      K = 5, D = 2 (the scaling curve in particles).
    """
    jobs = []
    for n in sizes:
        for k, d in shapes:
            for method in SPEED_METHODS:
                job = {"kind": "speed", "series": "grid", "method": method, "n": n, "k": k, "d": d}
                if method == "ours_compiled":
                    job["cache_dir"] = str(caches / f"{n}_{k}_{d}")
                    jobs += [job, {**job, "series": "cached", "again": True}]
                else:
                    jobs.append(job)
    if grid_only:
        return jobs
    for k, d in shapes:
        jobs.append(
            {
                "kind": "speed",
                "series": "minibatch",
                "method": "ours_compiled",
                "n": 10**6,
                "k": k,
                "d": d,
                "subsample": 10**4,
            }
        )
    for count in particles:
        for method in PARTICLE_METHODS:
            jobs.append(
                {
                    "kind": "speed",
                    "series": "particles",
                    "method": method,
                    "n": 10**4,
                    "k": 5,
                    "d": 2,
                    "particles": count,
                }
            )
    return jobs


def log(result: dict, output: Path) -> None:
    """Print one measurement and append it to ``runs.jsonl`` (the raw record of a run)."""
    line = json.dumps(result)
    print(line, flush=True)
    with (output / "runs.jsonl").open("a") as runs:
        runs.write(line + "\n")


def machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"python {platform.python_version()}"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
