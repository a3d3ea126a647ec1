"""Tables and the quality plot of the GMM-at-scale benchmark (see benchmark.py)."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pyro_elbo_lab.lab.provenance import ISA_FLAGS, Provenance, require_same_machine

SPEED_COLUMNS = (
    "series",
    "n",
    "k",
    "d",
    "particles",
    "subsample",
    "method",
    "steps_per_s",
    "ratio_to_ours_compiled",
    "setup_s",
    "setup_again_s",
    "rss_before_mb",
    "peak_rss_mb",
    "steady_peak_rss_mb",
    "error",
)
GRID_COLUMNS = (
    "n",
    "k",
    "d",
    "method",
    "steps_per_s",
    "ratio_to_ours_compiled",
    "setup_s",
    "rss_before_mb",
    "peak_rss_mb",
    "steady_peak_rss_mb",
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
    speed = [{"series": "grid", **r} for r in runs if r["kind"] == "speed"]
    return speed, [r for r in runs if r["kind"] == "quality"]


def series(rows: list[dict], name: str) -> list[dict]:
    return [row for row in rows if row.get("series", "grid") == name]


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


def _speed(rows: list[dict]) -> dict[tuple, float | None]:
    return {
        (r["n"], r["k"], r["d"], r.get("particles", 1), r["method"]): r.get("steps_per_s")
        for r in rows
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def latency(rows: list[dict]) -> list[str]:
    """Set-up before the steady state: cold, from the on-disk cache in a new process,
    again in the same process; NumPyro's (its JIT caches nothing across processes)."""
    grid = {(r["n"], r["k"], r["d"], r["method"]): r for r in series(rows, "grid")}
    body = []
    for row in series(rows, "cached"):
        key = (row["n"], row["k"], row["d"])
        cold = grid.get((*key, "ours_compiled"), {}).get("setup_s")
        numpyro = grid.get((*key, "numpyro_jit"), {}).get("setup_s")
        body.append(
            [f"{key[0]:.0e}", *key[1:], cold, row.get("setup_s"), row.get("setup_again_s"), numpyro]
        )
    header = ["N", "K", "D", "cold", "cached (new process)", "again (same process)", "NumPyro"]
    return _table(header, body)


def minibatch(rows: list[dict]) -> list[str]:
    """A minibatch step at N = 10⁶ against a full-data step at N = subsample."""
    speed = _speed(series(rows, "grid"))
    body = []
    for row in series(rows, "minibatch"):
        full = speed.get((row["subsample"], row["k"], row["d"], 1, "ours_compiled"))
        body.append(
            [row["k"], row["d"], row.get("steps_per_s"), full, _ratio(full, row.get("steps_per_s"))]
        )
    header = ["K", "D", "N = 10⁶, B = 10⁴ (steps/s)", "full N = 10⁴ (steps/s)", "step-time ratio"]
    return _table(header, body)


def memory(rows: list[dict]) -> list[str]:
    """Peak and steady-state RSS at the largest N, every method."""
    grid = series(rows, "grid")
    largest = max((r["n"] for r in grid), default=None)
    keys = ("k", "d", "method", "peak_rss_mb", "steady_peak_rss_mb", "rss_before_mb")
    body = [[row.get(key) for key in keys] for row in grid if row["n"] == largest]
    header = ["K", "D", "method", "peak RSS (MiB)", "steady-state peak (MiB)", "before (MiB)"]
    return _table(header, body)


def particles(rows: list[dict]) -> list[str]:
    """Steps/s with 1…256 vectorised particles; each method's cost against its own K = 1."""
    measured = series(rows, "particles")
    methods = list(dict.fromkeys(r["method"] for r in measured))
    speed = _speed(measured)
    body = []
    for count in sorted({r["particles"] for r in measured}):
        values = [speed.get((10**4, 5, 2, count, m)) for m in methods]
        growth = [
            _ratio(speed.get((10**4, 5, 2, 1, m)), v) for m, v in zip(methods, values, strict=True)
        ]
        body.append([count, *values, *growth])
    return _table(["particles", *methods, *(f"{m}: × its 1-particle step" for m in methods)], body)


def _table(header: list[str], body: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(value) for value in cells) + " |" for cells in body]


def plot_scaling(rows: list[dict], path: Path) -> None:
    """Steps/s against N for each (K, D), and against the particle count at N = 10⁴."""
    grid = series(rows, "grid")
    shapes = list(dict.fromkeys((r["k"], r["d"]) for r in grid))
    colour = {method: f"C{i}" for i, method in enumerate(dict.fromkeys(r["method"] for r in rows))}
    figure, axes = plt.subplots(1, len(shapes) + 1, figsize=(4 * (len(shapes) + 1), 3.6))
    for axis, (k, d) in zip(axes, shapes, strict=False):
        for method in dict.fromkeys(r["method"] for r in grid):
            points = sorted(
                (r["n"], r["steps_per_s"])
                for r in grid
                if (r["k"], r["d"], r["method"]) == (k, d, method) and r.get("steps_per_s")
            )
            if points:
                axis.plot(*zip(*points, strict=True), "o-", label=method, color=colour[method])
        axis.set(xscale="log", yscale="log", xlabel="N (data points)", title=f"K = {k}, D = {d}")
    axes[0].set_ylabel("steps per second")
    measured = series(rows, "particles")
    axis = axes[-1]
    for method in dict.fromkeys(r["method"] for r in measured):
        points = sorted(
            (r["particles"], r["steps_per_s"])
            for r in measured
            if r["method"] == method and r.get("steps_per_s")
        )
        if points:
            axis.plot(*zip(*points, strict=True), "o-", label=method, color=colour[method])
    axis.set(xscale="log", yscale="log", xlabel="particles (N = 10⁴, K = 5, D = 2)")
    axis.set_title("vectorised particles")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def provenance_notes(rows: list[dict]) -> list[str]:
    """The machine facts the rows recorded (one machine, or no ratio is formed) and a line
    for every row that started on a loaded machine; nothing for rows made before rows
    carried them."""
    recorded = [row for row in rows if "provenance" in row]
    if not recorded:
        return []
    require_same_machine([row["provenance"] for row in recorded])
    facts = recorded[0]["provenance"]
    lines = [
        f"Rows carry their machine's facts: {facts['cpu_model']}, ISA "
        f"{', '.join(facts['isa']) or 'none of ' + ', '.join(ISA_FLAGS)}, CPU budget "
        f"{facts['cpu_budget']}, torch {facts['torch']} (threads per row in runs.jsonl).",
    ]
    for row in recorded:
        warning = Provenance.from_record(row["provenance"]).load_warning()
        if warning:
            lines.append(f"- {row['method']} N={row['n']} K={row['k']} D={row['d']}: {warning}")
    return [*lines, ""]


def write_reports(rows: list[dict], quality: list[dict], output: Path, machine: str) -> None:
    grid = series(rows, "grid")
    _ratios(grid)
    _targets(quality)
    _write_csv(output / "results.csv", rows, SPEED_COLUMNS)
    _write_csv(output / "quality.csv", quality, QUALITY_COLUMNS)
    if quality:
        plot_quality(quality, output / "quality.png")
    plot_scaling(rows, output / "scaling.png")
    lines = [
        "# GMM at scale: results",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine}. GPU rows: not measured "
        "(no GPU was available to this run).",
        "",
        *provenance_notes(rows + quality),
        "## Steps per second (higher is better)",
        "",
        *summary(grid),
        "",
        "## Set-up before the steady state (seconds)",
        "",
        *latency(rows),
        "",
        "## Minibatches: a step at N = 10⁶ on 10⁴ points against a full step at N = 10⁴",
        "",
        *minibatch(rows),
        "",
        "## Memory at the largest N",
        "",
        *memory(rows),
        "",
        "## Vectorised particles (N = 10⁴, K = 5, D = 2; steps per second)",
        "",
        *particles(rows),
        "",
        "Scaling curves: `scaling.png`.",
        "",
        "## Every grid measurement (ratio = method / ours_compiled; RSS in MiB)",
        "",
        *_markdown(grid, GRID_COLUMNS),
        "",
        f"## Time to scikit-learn's held-out log-likelihood (within {TOLERANCE} nats/point)",
        "",
        *_markdown(quality, QUALITY_COLUMNS),
        "",
    ]
    (output / "results.md").write_text("\n".join(lines))
