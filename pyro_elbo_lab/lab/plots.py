"""Figures: the sweep report's (loss curves per configuration, final metrics with error
bars, anytime curves) and a run's (the fitted mixture of a GMM run)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

if TYPE_CHECKING:
    from pyro_elbo_lab.lab.rows import Row


def plot_loss_curves(rows: Sequence[Row], path: Path) -> None:
    """One panel per (model, guide): each row's loss curve, mean over its finished seeds."""
    panel_keys = ("model.name", "guide.name")
    panels: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        panels[tuple(row.settings[k] for k in panel_keys)].append(row)
    figure, axes = plt.subplots(
        1, len(panels), figsize=(10 * len(panels), 4.5), squeeze=False, constrained_layout=True
    )
    for axis, (panel, panel_rows) in zip(axes[0], sorted(panels.items(), key=str), strict=True):
        tails = []
        for row in panel_rows:
            curves = [r["fit"]["loss_history"] for r in row.ok() if r.get("fit")]
            if not curves:
                continue
            length = min(len(c["loss"]) for c in curves)
            steps = np.asarray(curves[0]["step"][:length])
            mean = np.mean([c["loss"][:length] for c in curves], axis=0)
            axis.plot(steps, mean, label=row.label(("objective.name",)))
            if length >= 5:
                tails.append(mean[length // 5 :])
        if tails:
            # Early losses dwarf the rest: frame the curves after the first fifth of training.
            low = min(float(np.nanpercentile(t, 1)) for t in tails)
            high = max(float(np.nanpercentile(t, 99)) for t in tails)
            if math.isfinite(low) and math.isfinite(high) and high > low:
                margin = 0.1 * (high - low)
                axis.set_ylim(low - margin, high + margin)
        axis.set_title(f"model={panel[0]}, guide={panel[1]}")
        axis.set_xlabel("step")
        axis.set_ylabel("loss (objective's own scale)")
        axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_metrics(rows: Sequence[Row], metrics: Sequence[tuple[str, str, str]], path: Path) -> None:
    """A panel per metric: each row's mean over seeds with standard-error bars."""
    present = [m for m in metrics if any(row.values(m[0], m[2]) for row in rows)]
    if not present:
        return
    figure, axes = plt.subplots(
        1,
        len(present),
        figsize=(3.5 * len(present) + 3, 1.5 + 0.35 * len(rows)),
        squeeze=False,
        sharey=True,
        constrained_layout=True,
    )
    positions = np.arange(len(rows))
    for axis, (key, title, section) in zip(axes[0], present, strict=True):
        means, errors = [], []
        for row in rows:
            values = list(row.values(key, section).values())
            means.append(float(np.mean(values)) if values else np.nan)
            errors.append(
                float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
            )
        axis.errorbar(means, positions, xerr=errors, fmt="o", capsize=3)
        axis.set_title(title)
        axis.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(positions, [row.label() for row in rows], fontsize="small")
    axes[0][0].invert_yaxis()
    figure.savefig(path, dpi=120)
    plt.close(figure)


ANYTIME_AXES = (("step", "steps"), ("model_evals", "model evaluations"), ("seconds", "fit seconds"))


def plot_anytime(rows: Sequence[Row], path: Path) -> None:
    """The anytime metric against steps, model evaluations and fit seconds, one line
    per row: the median over seeds at each checkpoint, the band from min to max.

    Checkpoints sit at the same fractions of every run's budget, so a row's seeds are
    aligned by checkpoint index; the x position is their median.
    """
    curves = {}
    for row in rows:
        runs = [r["fit"]["checkpoints"] for r in row.ok() if r.get("fit", {}).get("checkpoints")]
        if runs:
            curves[row.label()] = runs
    if not curves:
        return
    metrics = [k for k in ("kl_to_posterior", "iwae", "posterior_mean_error",
                           "posterior_w1_mean", "test_loglik", "exact_test_loglik")
               if any(k in c[0] for runs in curves.values() for c in runs)]  # fmt: skip
    figure, axes = plt.subplots(
        len(metrics), 3, figsize=(16, 4 * len(metrics)), squeeze=False, constrained_layout=True
    )
    for metric_axes, metric in zip(axes, metrics, strict=True):
        for axis, (x_key, x_title) in zip(metric_axes, ANYTIME_AXES, strict=True):
            for index, (label, runs) in enumerate(curves.items()):
                length = min(len(run) for run in runs)
                x = np.median([[p[x_key] for p in run[:length]] for run in runs], axis=0)
                y = np.array(  # a record stores a non-finite value as null
                    [[_number(p.get(metric)) for p in run[:length]] for run in runs], dtype=float
                )
                colour = f"C{index % 10}"
                axis.plot(x, np.median(y, axis=0), marker=".", color=colour, label=label)
                axis.fill_between(x, y.min(axis=0), y.max(axis=0), color=colour, alpha=0.15)
            axis.set_xscale("log")
            if metric == "kl_to_posterior":  # its estimate can dip below zero by Monte Carlo error
                axis.set_yscale("symlog", linthresh=1e-4)
                axis.set_ylim(bottom=max(axis.get_ylim()[0], -1e-4))
            elif metric == "posterior_mean_error":
                axis.set_yscale("log")
            axis.set_xlabel(x_title)
            axis.set_ylabel(metric)
            axis.grid(alpha=0.3)
        metric_axes[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_mixture(
    points: torch.Tensor,
    labels: torch.Tensor,
    locs: torch.Tensor,
    scale: torch.Tensor,
    full: bool,
    path: Path,
) -> None:
    """Points coloured by component and each component's 1- and 2-sd ellipses (first two
    coordinates; one-dimensional data are drawn against zero)."""
    from matplotlib.patches import Ellipse

    points, labels, locs, scale = (t.detach().cpu() for t in (points, labels, locs, scale))
    two_d = points.shape[1] >= 2
    xy = points[:, :2] if two_d else torch.stack([points[:, 0], torch.zeros(len(points))], 1)
    figure, axis = plt.subplots(figsize=(5, 5))
    shown = torch.randperm(len(xy), generator=torch.Generator().manual_seed(0))[:5000]
    colours = [f"C{int(label) % 10}" for label in labels[shown]]
    axis.scatter(xy[shown, 0], xy[shown, 1], c=colours, s=4, alpha=0.5)
    for k in range(locs.shape[0]):
        if full:
            covariance = (scale[k] @ scale[k].T)[:2, :2]
        else:
            covariance = torch.diag(scale[k, : min(2, scale.shape[1])] ** 2)
        if not two_d:
            covariance = torch.diag(torch.stack([covariance[0, 0], torch.tensor(1e-6)]))
        values, vectors = torch.linalg.eigh(covariance)
        angle = float(torch.rad2deg(torch.atan2(vectors[1, 1], vectors[0, 1])))
        centre = (float(locs[k, 0]), float(locs[k, 1]) if two_d else 0.0)
        for radius in (1, 2):
            width, height = (2 * radius * values.clamp(min=0).sqrt()).flip(0).tolist()
            axis.add_patch(
                Ellipse(centre, width, height, angle=angle, fill=False, color=f"C{k % 10}")
            )
        axis.plot(*centre, "k+")
    axis.set_title(f"fitted mixture: {locs.shape[0]} components (posterior median)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_image_grid(rows: Sequence[torch.Tensor], titles: Sequence[str], path: Path) -> None:
    """Rows of greyscale images (each ``[n, H, W]`` in [0, 1]) one above the other, each
    row titled; written as a PNG."""
    columns = max(int(row.shape[0]) for row in rows)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(columns * 0.9, len(rows) * 1.1), squeeze=False
    )
    for axis_row, images, title in zip(axes, rows, titles, strict=True):
        axis_row[0].set_title(title, loc="left", fontsize=8)
        for column, axis in enumerate(axis_row):
            axis.axis("off")
            if column < images.shape[0]:
                axis.imshow(images[column].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else np.nan
