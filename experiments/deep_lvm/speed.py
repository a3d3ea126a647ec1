"""Cost of a VAE training step with K = 50 particles: the lab's IWAE through Pyro's SVI
against a hand-written PyTorch IWAE step with the same networks, batch, K and optimiser.

The hand-written step (:func:`handwritten_iwae_step`) is the reference: encoder
(ReLU MLP to loc and softplus scale, as ``guide=amortized``), reparameterised draws
``[K, B, L]``, tanh MLP decoder, per-image log-mean-exp over K, the minibatch sum scaled
by N / B as Pyro scales a subsampled plate, and one Adam update. Both are timed in the
same process, interleaved, after warm-up; the ratios are median step times (lab / hand,
and DReG / IWAE: issue 31 D's goal is iwae_dreg within 1.15x an iwae step), formed within
each of ``--processes`` fresh processes (3 by default) and reported as their median and
min–max, with each process's machine facts (:mod:`pyro_elbo_lab.lab.provenance`).

    python experiments/deep_lvm/speed.py [--device cuda] [--quick] [--particles 5 50]

writes ``speed.md`` and ``speed.json`` beside this file (or ``--output DIR``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI
from pyro.optim import Adam
from torch.nn.functional import binary_cross_entropy_with_logits, softplus

from pyro_elbo_lab.devices import resolve_device
from pyro_elbo_lab.lab.provenance import (
    ISA_FLAGS,
    Provenance,
    provenance,
    require_same_machine,
    spread,
    spread_text,
    wait_until_quiet,
)
from pyro_elbo_lab.registry import guides, models, objectives

LATENT, HIDDEN, BATCH, LEARNING_RATE = 50, [200, 200], 100, 1e-3


def lab_step(
    device: torch.device, name: str, compile_step: bool, particles: int
) -> Callable[[], None]:
    """One SVI step of objective ``name`` (K ``particles``, per datapoint) on the vae model."""
    pyro.clear_param_store()
    model = models.build(
        "vae", latent_dim=LATENT, hidden=HIDDEN, num_train=4000, num_heldout=0,
        subsample_size=BATCH, device=str(device),
    )  # fmt: skip
    guide = guides.build("amortized", model, hidden=HIDDEN)
    options = {"compile": True} if compile_step else {}
    objective = objectives.build(
        name, num_particles=particles, per_datapoint=True, max_plate_nesting=1, **options
    )
    svi = SVI(model, guide, Adam({"lr": LEARNING_RATE}), objective)
    return lambda: svi.step(model.train_data)


def handwritten_iwae_step(device: torch.device, particles: int) -> Callable[[], None]:
    """The same IWAE-K step written directly in PyTorch (the benchmark's reference)."""
    model = models.build(
        "vae", latent_dim=LATENT, hidden=HIDDEN, num_train=4000, num_heldout=0,
        subsample_size=BATCH, device=str(device),
    )  # fmt: skip
    data, pixels = model.train_data, model.num_pixels
    encoder = _relu_mlp([pixels, *HIDDEN, 2 * LATENT]).to(device)
    decoder = model.decoder
    optimiser = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], LEARNING_RATE)
    scale_factor = data.shape[0] / BATCH

    def step() -> None:
        rows = data[torch.randperm(data.shape[0], device=device)[:BATCH]]
        loc, raw_scale = encoder(rows).chunk(2, dim=-1)
        scale = softplus(raw_scale)
        noise = torch.randn((particles, *loc.shape), device=device)
        z = loc + scale * noise
        logits = decoder(z)
        log_likelihood = -binary_cross_entropy_with_logits(
            logits, rows.expand_as(logits), reduction="none"
        ).sum(-1)
        log_prior = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
        log_guide = (-0.5 * (noise.pow(2) + math.log(2 * math.pi)) - scale.log()).sum(-1)
        log_weights = log_likelihood + log_prior - log_guide
        bound = (log_weights.logsumexp(0) - math.log(particles)).sum() * scale_factor
        optimiser.zero_grad()
        (-bound).backward()
        optimiser.step()

    return step


def _relu_mlp(sizes: list[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for index in range(len(sizes) - 1):
        if index:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(sizes[index], sizes[index + 1]))
    return torch.nn.Sequential(*layers)


def median_step_seconds(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


HAND, IWAE = "hand-written PyTorch IWAE", "lab iwae (eager)"


def candidates(device: torch.device, particles: int) -> dict[str, Callable[[], Callable[[], None]]]:
    """The steps timed at K = ``particles``, by name (builders, so each starts fresh)."""
    return {
        HAND: lambda: handwritten_iwae_step(device, particles),
        IWAE: lambda: lab_step(device, "iwae", False, particles),
        "lab iwae (compile=true)": lambda: lab_step(device, "iwae", True, particles),
        "lab iwae_dreg (eager)": lambda: lab_step(device, "iwae_dreg", False, particles),
        "lab rws_dreg (eager)": lambda: lab_step(device, "rws_dreg", False, particles),
    }


def time_steps(
    builders: dict[str, Callable[[], Callable[[], None]]],
    device: torch.device,
    warmup: int,
    repeats: int,
    rounds: int,
) -> dict[str, float]:
    """Median seconds per step of each candidate, over interleaved rounds (drifts of the
    machine hit every candidate alike)."""
    steps = {}
    for name, build in builders.items():
        pyro.set_rng_seed(0)
        steps[name] = build()
        for _ in range(warmup):
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in builders}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(median_step_seconds(step, repeats, device))
    return {name: statistics.median(values) for name, values in times.items()}


def measure(device: torch.device, particles: list[int], quick: bool) -> dict:
    """One process's median step times (ms) per K and candidate, with its machine facts
    taken before the first step."""
    facts = provenance().record()
    warmup, repeats, rounds = (2, 3, 1) if quick else (10, 20, 5)
    return {
        "provenance": facts,
        "rounds": rounds,
        "repeats_per_round": repeats,
        "step_ms": {
            str(k): {
                name: 1000 * seconds
                for name, seconds in time_steps(
                    candidates(device, k), device, warmup, repeats, rounds
                ).items()
            }
            for k in particles
        },
    }


def fresh_processes(args: argparse.Namespace) -> list[dict]:
    """:func:`measure` in ``args.processes`` fresh Python processes, one after another,
    each once the load the one before left has decayed (:func:`wait_until_quiet`)."""
    found = []
    for index in range(args.processes):
        wait_until_quiet()
        target = args.output / f"process_{index}.json"
        command = [sys.executable, __file__, "--worker", str(target), "--device", args.device]
        command += ["--particles", *map(str, args.particles)] + (["--quick"] if args.quick else [])
        subprocess.run(command, check=True)
        found.append(json.loads(target.read_text()))
        target.unlink()
    return found


def aggregate(runs: list[dict]) -> dict:
    """Per K and candidate: the spread over processes of the step time and of its ratios
    to the hand-written step and to the lab's IWAE step (each formed within one process)."""
    require_same_machine([run["provenance"] for run in runs])
    table: dict = {}
    for k in runs[0]["step_ms"]:
        table[k] = {}
        for name in runs[0]["step_ms"][k]:
            times = [run["step_ms"][k] for run in runs]
            table[k][name] = {
                "step_ms": spread(t[name] for t in times),
                "x_handwritten": spread(t[name] / t[HAND] for t in times),
                "x_lab_iwae": spread(t[name] / t[IWAE] for t in times),
            }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="few repeats (a smoke run)")
    parser.add_argument("--particles", type=int, nargs="+", default=[5, 50])
    parser.add_argument("--processes", type=int, default=3, help="fresh processes (median)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.worker is not None:
        args.worker.write_text(json.dumps(measure(device, args.particles, args.quick)))
        return
    args.output.mkdir(parents=True, exist_ok=True)
    runs = fresh_processes(args)
    table = aggregate(runs)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else runs[0]["provenance"]["cpu_model"]
    )
    results = {
        "setting": {
            "model": f"vae latent {LATENT}, decoder tanh {HIDDEN}, encoder ReLU {HIDDEN}",
            "batch": BATCH,
            "particles": args.particles,
            "optimiser": f"Adam lr {LEARNING_RATE}",
            "device": str(device),
            "machine": machine,
            "pyro": pyro.__version__,
            "processes": args.processes,
            "rounds": runs[0]["rounds"],
            "repeats_per_round": runs[0]["repeats_per_round"],
        },
        "provenance": [run["provenance"] for run in runs],
        "steps": table,
    }
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    (args.output / f"speed{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    warnings = [
        f"- process {index}: {warning}"
        for index, run in enumerate(runs)
        if (warning := Provenance.from_record(run["provenance"]).load_warning())
    ]
    facts = runs[0]["provenance"]
    lines = [
        f"# VAE step cost, K = {' and '.join(map(str, args.particles))} ({machine})",
        "",
        "Command: `python experiments/deep_lvm/speed.py"
        + (" --quick" if args.quick else "")
        + (f" --device {args.device}`" if device.type != "cpu" else "`"),
        "",
        *[f"- {key}: {value}" for key, value in results["setting"].items()],
        f"- ISA: {', '.join(facts['isa']) or 'none of ' + ', '.join(ISA_FLAGS)}; CPU budget "
        f"{facts['cpu_budget']}, torch threads {facts['threads']}, torch {facts['torch']}",
        "- load average at the start of each process: "
        + ", ".join(f"{run['provenance']['load_average']:.2f}" for run in runs),
        *(["", "Warnings:", *warnings] if warnings else []),
        "",
        f"Median over {args.processes} fresh processes (min–max); each ratio is formed within "
        "one process, from its interleaved rounds.",
        "",
        "| K | step | ms | × hand-written | × lab iwae |",
        "|---|---|---|---|---|",
        *[
            f"| {k} | {name} | {spread_text(cell['step_ms'], '.1f')} | "
            f"{spread_text(cell['x_handwritten'])} | {spread_text(cell['x_lab_iwae'])} |"
            for k, row in table.items()
            for name, cell in row.items()
        ],
    ]
    (args.output / f"speed{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
