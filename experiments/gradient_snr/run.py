"""Signal-to-noise ratio of the φ and θ gradients against K (Rainforth et al. 2018).

A small VAE on the package's MNIST digits is trained partway with IWAE (K = 8), then
frozen; at that point, on one fixed minibatch, each objective's gradient is drawn M times
for every K, and per coordinate SNR = |mean| / sd. The group's SNR is the mean over a
fixed random subset of its coordinates (the same subset for every K and objective). The
log-log slope of SNR against K is fitted by least squares, with a 95% percentile
bootstrap interval (the M draws of every K resampled). Rainforth et al.'s Theorem 1
predicts, for IWAE, SNR_φ = O(1/√K) and SNR_θ = O(√K) (slopes −½ and +½); Tucker et
al.'s DReG removes the fall of φ (slope ≥ 0).

    python experiments/gradient_snr/run.py [--draws 1000] [--quick]

writes ``results.json``, ``results.md`` and ``snr.png`` beside this file (or ``--output``).

References: T. Rainforth et al., "Tighter Variational Bounds are Not Necessarily Better",
ICML 2018; G. Tucker et al., "Doubly Reparameterized Gradient Estimators for Monte Carlo
Objectives", ICLR 2019; J. Bornschein, Y. Bengio, "Reweighted Wake-Sleep", ICLR 2015.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyro
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_elbo_lab.evaluation.gradients import gradient_draws, mean_snr
from pyro_elbo_lab.registry import guides, models, objectives

OBJECTIVES = ("iwae", "iwae_dreg", "rws_score")
PARTICLES = (1, 4, 16, 64, 256, 1024)
GROUPS = {"guide": "φ (guide)", "model": "θ (model)"}
#: the predicted slopes (Rainforth et al. 2018 Theorem 1; Tucker et al. 2019 for DReG)
EXPECTED = {("iwae", "guide"): "≈ −0.5", ("iwae", "model"): "≈ +0.5", ("iwae_dreg", "guide"): "≥ 0"}


def train_partway(args: argparse.Namespace):
    """The VAE and its guide after ``args.pretrain_steps`` IWAE-8 steps."""
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model = models.build(
        "vae", latent_dim=10, hidden=[50], num_train=2000, num_heldout=0,
        subsample_size=100, seed=args.seed,
    )  # fmt: skip
    guide = guides.build("amortized", model, hidden=[50])
    objective = objectives.build("iwae", num_particles=8, per_datapoint=True, max_plate_nesting=1)
    svi = SVI(model, guide, Adam({"lr": 3e-3}), objective)
    for _ in range(args.pretrain_steps):
        loss = svi.step(model.train_data)
    return model, guide, loss


def fitted_slope(log_particles: np.ndarray, log_snr: np.ndarray) -> float:
    return float(np.polyfit(log_particles, log_snr, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=1000, help="gradient draws per (objective, K)")
    parser.add_argument("--batch", type=int, default=4, help="images in the fixed minibatch")
    parser.add_argument("--coordinates", type=int, default=2000, help="coordinates per group")
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 30 draws, K <= 16")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    particles = [k for k in PARTICLES if k <= 16] if args.quick else list(PARTICLES)
    draws = 30 if args.quick else args.draws
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    model, guide, pretrain_loss = train_partway(args)
    batch = model.train_data[: args.batch]
    chooser = torch.Generator().manual_seed(args.seed)
    subsets: dict[str, torch.Tensor] = {}
    estimates: dict[tuple[str, int, str], torch.Tensor] = {}
    with model.without_subsampling():
        for name in OBJECTIVES:
            for k in particles:
                if name == "rws_score" and k == 1:
                    continue  # one particle self-normalises to weight 1: wake-φ is not defined
                objective = objectives.build(
                    name, num_particles=k, per_datapoint=True, max_plate_nesting=1
                )
                pyro.set_rng_seed(args.seed + k)
                by_group = gradient_draws(objective, model, guide, (batch,), draws)
                for group, values in by_group.items():
                    if group not in subsets:
                        size = min(args.coordinates, values.shape[1])
                        subsets[group] = torch.randperm(values.shape[1], generator=chooser)[:size]
                    estimates[name, k, group] = values[:, subsets[group]]
                print(f"{name} K={k}: {time.perf_counter() - start:.0f} s", flush=True)
    rows, slopes = [], {}
    resampler = np.random.default_rng(args.seed)
    for name in OBJECTIVES:
        for group in GROUPS:
            ks = [k for k in particles if (name, k, group) in estimates]
            snr = np.array([mean_snr(estimates[name, k, group]) for k in ks])
            rows += [
                {"objective": name, "group": group, "K": k, "snr": float(value)}
                for k, value in zip(ks, snr, strict=True)
            ]
            log_k = np.log(ks)
            boot = []
            for _ in range(args.bootstrap):
                resampled = [
                    estimates[name, k, group][torch.as_tensor(resampler.integers(0, draws, draws))]
                    for k in ks
                ]
                boot.append(fitted_slope(log_k, np.log([mean_snr(e) for e in resampled])))
            low, high = np.percentile(boot, [2.5, 97.5])
            slopes[name, group] = {
                "slope": fitted_slope(log_k, np.log(snr)),
                "ci95": [float(low), float(high)],
                "expected": EXPECTED.get((name, group), "—"),
            }
    elapsed = time.perf_counter() - start
    write_results(args, particles, draws, rows, slopes, pretrain_loss, elapsed)


def write_results(args, particles, draws, rows, slopes, pretrain_loss, elapsed) -> None:
    args.output.mkdir(parents=True, exist_ok=True)
    setting = {
        "model": "vae latent_dim=10 hidden=[50], 2000 training digits (seed 0)",
        "guide": "amortized hidden=[50]",
        "point": f"after {args.pretrain_steps} steps of IWAE-8 (Adam 3e-3, batch 100); "
        f"final training loss {pretrain_loss:.1f}",
        "minibatch_images": args.batch,
        "gradient_draws": draws,
        "coordinates_per_group": args.coordinates,
        "bootstrap": args.bootstrap,
        "particles": particles,
        "objectives": "per_datapoint=true for all three",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}",
        "seconds": round(elapsed, 1),
    }
    table = [{"objective": n, "group": g, **v} for (n, g), v in slopes.items()]
    (args.output / "results.json").write_text(
        json.dumps({"setting": setting, "snr": rows, "slopes": table}, indent=2) + "\n"
    )
    lines = [
        "# Gradient SNR against K",
        "",
        "Command: `python experiments/gradient_snr/run.py` "
        + ("--quick" if args.quick else f"(--draws {draws})"),
        "",
        *[f"- {key}: {value}" for key, value in setting.items()],
        "",
        "| objective | group | " + " | ".join(f"K={k}" for k in particles) + " | slope [95% CI] | "
        "predicted |",
        "|---|---|" + "---|" * len(particles) + "---|---|",
    ]
    for (name, group), fit in slopes.items():
        values = {r["K"]: r["snr"] for r in rows if r["objective"] == name and r["group"] == group}
        cells = [f"{values[k]:.3g}" if k in values else "—" for k in particles]
        low, high = fit["ci95"]
        lines.append(
            f"| {name} | {GROUPS[group]} | " + " | ".join(cells)
            + f" | {fit['slope']:+.2f} [{low:+.2f}, {high:+.2f}] | {fit['expected']} |"
        )  # fmt: skip
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    plot(rows, slopes, args.output / "snr.png")


def plot(rows, slopes, path: Path) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for axis, (group, title) in zip(axes, GROUPS.items(), strict=True):
        for index, name in enumerate(OBJECTIVES):
            points = [
                (r["K"], r["snr"]) for r in rows if r["objective"] == name and r["group"] == group
            ]
            if not points:
                continue
            ks, values = zip(*points, strict=True)
            fit = slopes[name, group]
            axis.plot(ks, values, marker="o", color=f"C{index}",
                      label=f"{name}: slope {fit['slope']:+.2f}")  # fmt: skip
        reference_k = np.array([1, 1024])
        anchor = next(r["snr"] for r in rows if (r["objective"], r["group"]) == ("iwae", group))
        for power, style in ((-0.5, ":"), (0.5, "--")):
            axis.plot(reference_k, anchor * reference_k**power, style, color="grey", lw=0.8,
                      label=f"K^{power:+.1f}")  # fmt: skip
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("K (particles)")
        axis.set_ylabel("mean SNR over coordinates")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
