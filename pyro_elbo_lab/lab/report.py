"""Sweep report: aggregate run records into a comparison against the ``trace`` baseline.

Works from the records on disk alone, so it also serves sweeps that crashed, ran on
several machines, or were launched in pieces: ``elbo-lab-report DIR``.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyro_elbo_lab.lab.plots import plot_loss_curves, plot_metrics
from pyro_elbo_lab.lab.record import read_records

REFERENCE_OBJECTIVE = "trace"
#: (metric key in the record, column title, where it lives in the record)
METRICS: tuple[tuple[str, str, str], ...] = (
    ("elbo", "ELBO", "metrics"),
    ("iwae", "IWAE-K", "metrics"),
    ("elbo_gap", "ELBO − log p(x)", "metrics"),
    ("cubo_gap", "CUBO − log p(x)", "metrics"),
    ("kl_to_posterior", "KL(q‖p)", "metrics"),
    ("psis_khat", "PSIS k̂", "metrics"),
    ("heldout_loglik", "held-out LL/pt", "metrics"),
    ("posterior_mean_error", "max mean error (sd)", "metrics"),
    ("posterior_sd_error", "max sd error", "metrics"),
    ("posterior_mean_error_resampled", "resampled: max mean error (sd)", "metrics"),
    ("posterior_sd_error_resampled", "resampled: max sd error", "metrics"),
    ("final_loss", "final loss", "fit"),
    ("steps_per_second", "steps/s", "fit"),
)
IGNORED_KEYS = ("seed", "progress_bar", "num_threads")


NAME_KEYS = ("objective.name", "guide.name", "model.name")


@dataclass
class Row:
    """One configuration: its varying settings and the records of its seeds.

    ``distinct`` holds its values of the settings that vary across the sweep (component
    names aside, and leaving out settings it does not have); they label it.
    """

    settings: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    distinct: dict[str, Any] = field(default_factory=dict)

    def label(self, names: Sequence[str] = NAME_KEYS) -> str:
        """``objective/guide/model (key=value, ...)`` with only the given name keys."""
        text = "/".join(str(self.settings[key]) for key in names)
        if self.distinct:
            text += " (" + ", ".join(f"{k}={v}" for k, v in self.distinct.items()) + ")"
        return text

    @property
    def objective(self) -> Any:
        return self.records[0]["components"]["objective"]

    def ok(self) -> list[dict[str, Any]]:
        return [record for record in self.records if record["status"] == "ok"]

    def values(self, key: str, section: str) -> dict[Any, float]:
        """Metric ``key`` by seed over the runs that finished."""
        values = {}
        for record in self.ok():
            value = record.get(section, {}).get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                values[record["seed"]] = float(value)
        return values


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = repr(value) if isinstance(value, list) else value
    return flat


def group_records(records: Sequence[dict[str, Any]]) -> tuple[list[Row], list[str]]:
    """Rows keyed by every setting that varies across the sweep (seed aside)."""
    flats = [
        {k: v for k, v in _flatten(r["config"]).items() if k.split(".")[0] not in IGNORED_KEYS}
        for r in records
    ]
    keys = sorted({key for flat in flats for key in flat})
    varying = list(NAME_KEYS) + [
        k for k in keys if k not in NAME_KEYS and len({repr(flat.get(k)) for flat in flats}) > 1
    ]
    rows: dict[tuple, Row] = {}
    for record, flat in zip(records, flats, strict=True):
        settings = {key: flat.get(key) for key in varying}
        key = tuple(repr(settings[k]) for k in varying)
        rows.setdefault(key, Row(settings)).records.append(record)
    for row in rows.values():
        row.distinct = {
            key.split(".", 1)[1] if key.startswith("objective.") else key: value
            for key, value in row.settings.items()
            if key not in NAME_KEYS and value is not None
        }
    return list(rows.values()), varying


def _reference(row: Row, rows: list[Row]) -> Row | None:
    """The ``trace`` row that differs from ``row`` only in objective settings."""

    def context(r: Row) -> dict[str, Any]:
        return {k: v for k, v in r.settings.items() if not k.startswith("objective.")}

    candidates = [
        r for r in rows if r.objective == REFERENCE_OBJECTIVE and context(r) == context(row)
    ]
    candidates.sort(key=lambda r: r.settings.get("objective.num_particles") or 0)
    return candidates[0] if candidates else None


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    if len(values) == 1:
        return values[0], math.nan
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def _difference(row: dict[Any, float], reference: dict[Any, float]) -> tuple[float, float]:
    """Mean ± s.e. of the seed-paired difference (unpaired if no seeds are shared)."""
    shared = sorted(set(row) & set(reference), key=str)
    if shared:
        return _mean_se([row[seed] - reference[seed] for seed in shared])
    mean_row, se_row = _mean_se(list(row.values()))
    mean_ref, se_ref = _mean_se(list(reference.values()))
    return mean_row - mean_ref, math.hypot(se_row, se_ref)


def comparison_table(
    records: Sequence[dict[str, Any]],
) -> tuple[list[str], list[list[Any]], list[Row]]:
    """Header, lines and their rows: settings, run counts, each metric and its Δ to ``trace``.

    Metric cells are ``(mean, standard error)`` pairs; the speed column is a ratio. The
    ``trace`` rows come first.
    """
    rows, varying = group_records(records)
    rows.sort(key=lambda r: (r.objective != REFERENCE_OBJECTIVE, r.label()))
    present = [m for m in METRICS if any(r.values(m[0], m[2]) for r in rows)]
    header = [*varying, "runs ok/diverged/failed"]
    for key, title, _ in present:
        header += [title, "× trace" if key == "steps_per_second" else f"Δ {title}"]
    table = []
    for row in rows:
        counts = [sum(r["status"] == s for r in row.records) for s in ("ok", "diverged", "failed")]
        line: list[Any] = [row.settings[k] for k in varying]
        line.append("/".join(map(str, counts)))
        reference = _reference(row, rows)
        for key, _, section in present:
            values = row.values(key, section)
            line.append(_mean_se(list(values.values())))
            reference_values = reference.values(key, section) if reference else {}
            if not reference_values or not values:
                line.append(math.nan)
            elif key == "steps_per_second":
                line.append(line[-1][0] / _mean_se(list(reference_values.values()))[0])
            else:
                line.append(_difference(values, reference_values))
        table.append(line)
    return header, table, rows


def _cell(value: Any) -> str:
    if isinstance(value, tuple):
        mean, se = value
        if math.isnan(mean):
            return "–"
        return f"{mean:.4g} ± {se:.2g}" if not math.isnan(se) else f"{mean:.4g}"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3g}"
    if value is None:
        return "–"
    return str(value)


def to_markdown(header: list[str], table: list[list[Any]], rows: Sequence[Row]) -> str:
    """The table with the setting columns folded into one ``settings`` column."""
    first_metric = header.index("runs ok/diverged/failed")
    compact_header = ["objective", "guide", "model", "settings", *header[first_metric:]]
    lines = ["| " + " | ".join(compact_header) + " |", "|" + "---|" * len(compact_header)]
    for row, line in zip(rows, table, strict=True):
        settings = ", ".join(f"{k}={v}" for k, v in row.distinct.items()) or "–"
        names = [str(row.settings[key]) for key in NAME_KEYS]
        cells = [*names, settings, *(_cell(v) for v in line[first_metric:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(header: list[str], table: list[list[Any]], path: Path) -> None:
    """Machine-readable table: each (mean, se) column becomes a column and an ``se`` column."""
    paired = [any(isinstance(line[i], tuple) for line in table) for i in range(len(header))]
    csv_header: list[str] = []
    for title, is_pair in zip(header, paired, strict=True):
        csv_header += [title, f"{title} se"] if is_pair else [title]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(csv_header)
        for line in table:
            cells: list[Any] = []
            for value, is_pair in zip(line, paired, strict=True):
                if is_pair:
                    cells += list(value) if isinstance(value, tuple) else [value, math.nan]
                else:
                    cells.append(value)
            writer.writerow(cells)


def failures(records: Sequence[dict[str, Any]]) -> list[str]:
    return [
        f"- `{r.get('path', '?')}` {r['status']}: {r.get('message')}"
        for r in records
        if r["status"] != "ok"
    ]


def build_report(sweep_dir: str | Path, print_table: bool = True) -> str:
    """Write ``comparison.{csv,md}`` and plots into ``sweep_dir``; return the Markdown."""
    sweep_dir = Path(sweep_dir)
    records = list(read_records(sweep_dir))
    if not records:
        raise FileNotFoundError(f"no run records (record.json) under {sweep_dir}")
    header, table, rows = comparison_table(records)
    markdown = "\n".join(
        [
            f"# Comparison against `{REFERENCE_OBJECTIVE}` ({len(records)} runs)",
            "",
            "Mean ± standard error over seeds; Δ is the seed-paired difference to the "
            f"`{REFERENCE_OBJECTIVE}` row with the same model, guide and optimiser.",
            "",
            to_markdown(header, table, rows),
        ]
    )
    if any("psis_khat" in r.get("metrics", {}) for r in records):
        markdown += (
            "\n\nPSIS k̂ > 0.7 says importance sampling with the guide is unreliable; a small "
            "k̂ does not prove the guide covers the posterior: a mode the guide never samples "
            "leaves no trace in its weights."
        )
    failed = failures(records)
    if failed:
        markdown += "\n\n## Runs that did not finish\n" + "\n".join(failed)
    (sweep_dir / "comparison.md").write_text(markdown + "\n")
    write_csv(header, table, sweep_dir / "comparison.csv")
    plot_loss_curves(rows, sweep_dir / "loss_curves.png")
    plot_metrics(rows, [m for m in METRICS if m[0] != "final_loss"], sweep_dir / "metrics.png")
    if print_table:
        print(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    """``elbo-lab-report DIR``: rebuild a sweep's report from its run records."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "sweep_dir", type=Path, help="directory holding the runs' record.json files"
    )
    arguments = parser.parse_args(argv)
    try:
        build_report(arguments.sweep_dir)
    except FileNotFoundError as error:
        parser.exit(2, f"elbo-lab-report: {error}\n")
