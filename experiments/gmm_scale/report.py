"""Tables and the quality plot of the GMM-at-scale benchmark (see benchmark.py)."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SPEED_COLUMNS = (
    "n",
    "k",
    "d",
    "method",
    "steps_per_s",
    "ratio_to_ours_compiled",
    "setup_s",
    "rss_before_mb",
    "peak_rss_mb",
    "error",
)
QUALITY_COLUMNS = (
    "n",
    "k",
    "d",
    "method",
    "wall_s",
    "heldout",
    "iterations",
    "time_to_bgmm_s",
    "time_to_gmm_s",
    "peak_rss_mb",
    "error",
)
TOLERANCE = 0.01  # nats per point


def read_runs(path: Path) -> tuple[list[dict], list[dict]]:
    """The speed and quality measurements of a ``runs.jsonl`` (or a log of them)."""
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    return [r for r in runs if r["kind"] == "speed"], [r for r in runs if r["kind"] == "quality"]


def _ratios(rows: list[dict]) -> None:
    ours = {
        (r["n"], r["k"], r["d"]): r.get("steps_per_s")
        for r in rows
        if r["method"] == "ours_compiled"
    }
    for row in rows:
        base = ours.get((row["n"], row["k"], row["d"]))
        speed = row.get("steps_per_s")
        row["ratio_to_ours_compiled"] = speed / base if speed and base else None


def _time_to(curve: list[list[float]], target: float | None) -> float | None:
    if target is None:
        return None
    return next((t for t, value in curve if value >= target - TOLERANCE), None)


def _targets(quality: list[dict]) -> None:
    for row in quality:
        same = [q for q in quality if q["n"] == row["n"] and "heldout" in q]
        target = {q["method"]: q["heldout"] for q in same}
        curve = row.get("curve", [])
        row["time_to_bgmm_s"] = _time_to(curve, target.get("sklearn_bgmm"))
        row["time_to_gmm_s"] = _time_to(curve, target.get("sklearn_gmm"))


def _write_csv(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _cell(value, column: str = "") -> str:
    if value is None or value == "":
        return "—"
    if column == "heldout":
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _markdown(rows: list[dict], columns: tuple[str, ...]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c), c) for c in columns) + " |" for row in rows]
    return lines


def summary(rows: list[dict]) -> list[str]:
    """One line per (N, K, D): steps/s of each method and ours against the goals."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    speed = {(r["n"], r["k"], r["d"], r["method"]): r.get("steps_per_s") for r in rows}
    header = ["N", "K", "D", *methods, "ours / TraceEnum", "ours / NumPyro"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for n, k, d in dict.fromkeys((r["n"], r["k"], r["d"]) for r in rows):
        ours, enum, numpyro = (
            speed.get((n, k, d, m)) for m in ("ours_compiled", "pyro_trace_enum", "numpyro_jit")
        )
        ratios = [
            ours / enum if ours and enum else None,
            ours / numpyro if ours and numpyro else None,
        ]
        cells = [_cell(speed.get((n, k, d, m))) for m in methods] + [_cell(x) for x in ratios]
        lines.append(f"| {n:.0e} | {k} | {d} | " + " | ".join(cells) + " |")
    return lines


def plot_quality(quality: list[dict], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for row in quality:
        curve = row.get("curve") or []
        if not curve:
            continue
        times, values = zip(*curve, strict=True)
        style = "o" if len(curve) == 1 else "-"
        axis.plot(times, values, style, label=f"{row['method']} (N={row['n']:.0e})")
    axis.set_xlabel("wall time (s, excluding set-up and evaluation)")
    axis.set_ylabel("held-out log-likelihood per point")
    axis.set_xscale("log")
    finite = [v for row in quality for _, v in row.get("curve") or []]
    if finite:
        top = max(finite)
        axis.set_ylim(top - 0.5, top + 0.05)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_reports(rows: list[dict], quality: list[dict], output: Path, machine: str) -> None:
    _ratios(rows)
    _targets(quality)
    _write_csv(output / "results.csv", rows, SPEED_COLUMNS)
    _write_csv(output / "quality.csv", quality, QUALITY_COLUMNS)
    if quality:
        plot_quality(quality, output / "quality.png")
    lines = [
        "# GMM at scale: results",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine}. GPU rows: not measured "
        "(no GPU was available to this run).",
        "",
        "## Steps per second (higher is better)",
        "",
        *summary(rows),
        "",
        "## Every measurement (ratio = method / ours_compiled; RSS in MiB)",
        "",
        *_markdown(rows, SPEED_COLUMNS),
        "",
        f"## Time to scikit-learn's held-out log-likelihood (within {TOLERANCE} nats/point)",
        "",
        *_markdown(quality, QUALITY_COLUMNS),
        "",
    ]
    (output / "results.md").write_text("\n".join(lines))
