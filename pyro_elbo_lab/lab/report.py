"""Sweep report: the runs' records as verdicts against the ``trace`` baseline.

Works from the records on disk alone, so it also serves sweeps that crashed, ran on
several machines, or were launched in pieces: ``elbo-lab-report DIR``. The headline
is one metric (the best truth the model has, :data:`HEADLINE_METRICS`), compared
seed-paired (:mod:`pyro_elbo_lab.lab.paired`) at the sweep's budget; every other
metric goes to the details section and the CSV files.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyro_elbo_lab.lab.metrics import BY_KEY, METRICS, Metric, headline_metric
from pyro_elbo_lab.lab.paired import (
    PairedDifference,
    holm,
    paired_difference,
    verdict,
    within_estimation_error,
)
from pyro_elbo_lab.lab.plots import plot_anytime, plot_loss_curves, plot_metrics
from pyro_elbo_lab.lab.record import flatten, read_records, version_differences
from pyro_elbo_lab.lab.resume import latest_records
from pyro_elbo_lab.lab.rows import REFERENCE_OBJECTIVE, Row, group_records, reference_row


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    if len(values) == 1:
        return values[0], math.nan
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def _cell(value: Any) -> str:
    if isinstance(value, tuple):
        mean, se = value
        if math.isnan(mean):
            return "–"
        return f"{mean:.4g} ± {se:.2g}" if not math.isnan(se) else f"{mean:.4g}"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3g}"
    return "–" if value is None else str(value)


@dataclass
class Comparison:
    """The sweep's rows, its headline metric and each row's paired difference to trace."""

    rows: list[Row]
    varying: list[str]
    metric: Metric
    to_reference: list[PairedDifference | None]

    @classmethod
    def of(cls, records: Sequence[dict[str, Any]], metric: str | None = None) -> Comparison:
        rows, varying = group_records(records)
        chosen = BY_KEY[metric] if metric else headline_metric(rows)
        differences = []
        for row in rows:
            reference = reference_row(row, rows)
            differences.append(
                None
                if reference is None or reference is row
                else paired_difference(
                    row.values(chosen.key, chosen.section),
                    reference.values(chosen.key, chosen.section),
                )
            )
        return cls(rows, varying, chosen, holm(differences))

    def best(self) -> Row | None:
        """The row with the best mean headline metric."""
        scored = [
            (statistics.fmean(values.values()), row)
            for row in self.rows
            if (values := row.values(self.metric.key, self.metric.section))
        ]
        if not scored:
            return None
        sign = 1 if self.metric.lower_is_better else -1
        return min(scored, key=lambda item: sign * item[0])[1]

    def verdict_line(self) -> str:
        """The best row against every other row, Holm-corrected over those pairs."""
        best = self.best()
        if best is None:
            return f"No run finished with {self.metric.title}: no verdict."
        key, section = self.metric.key, self.metric.section
        others = [row for row in self.rows if row is not best and row.values(key, section)]
        ours = best.values(key, section)
        pairs = holm([paired_difference(ours, row.values(key, section)) for row in others])
        mean = self._value(best)
        lines = [f"**Verdict.** Best mean {self.metric.title}: `{best.label()}` ({mean})."]
        lines += [
            "- " + (not_converged(best, row, self.metric.title, pair) or verdict(
                f"`{best.label()}`", f"`{row.label()}`", self.metric.title, pair,
                self.metric.lower_is_better, self.estimation_error(best, row)))
            for row, pair in zip(others, pairs, strict=True)
        ]  # fmt: skip
        return "\n".join(lines)

    def headline(self) -> str:
        """At most 8 columns, one row per configuration, the verdict first."""
        title = self.metric.title
        header = [
            "verdict vs trace", "configuration", "runs ok/div/fail", f"{title}",
            f"Δ {title} vs trace [95% CI]", "p (Holm)", "model evals", "stopped by",
        ]  # fmt: skip
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row, difference in zip(self.rows, self.to_reference, strict=True):
            evals = list(row.values("model_evals", "fit").values())
            cells = [
                self._row_verdict(row, difference),
                f"`{row.label()}`",
                row.counts(),
                self._value(row, with_se=True),
                difference.interval(3) if difference else "–",
                f"{difference.p_adjusted:.2g}" if difference else "–",
                f"{statistics.median(evals):.0f}" if evals else "–",
                _stopped_by(row),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def estimation_error(self, *rows: Row) -> float:
        """The error with which the runs of ``rows`` measured the headline metric (the
        largest recorded; 0 where it is exact or not recorded), combined for a difference."""
        key = self.metric.error_key
        if key is None:
            return 0.0
        errors = [max(row.values(key, self.metric.section).values(), default=0.0) for row in rows]
        return math.sqrt(sum(error**2 for error in errors))

    def _value(self, row: Row, with_se: bool = False) -> str:
        """The row's mean headline value (± its s.e. over seeds); one below the error its
        runs measured it with is shown as that bound, never as a negative KL."""
        values = list(row.values(self.metric.key, self.metric.section).values())
        mean, se = _mean_se(values)
        error = self.estimation_error(row)
        if error > 0 and mean < error:
            return f"≤ {error:.2g} (estimate's error)"
        return _cell((mean, se)) if with_se else f"{mean:.4g}"

    def _row_verdict(self, row: Row, difference: PairedDifference | None) -> str:
        if row.objective == REFERENCE_OBJECTIVE and reference_row(row, self.rows) is row:
            return "reference"
        if difference is None:
            return "not compared"
        reference = reference_row(row, self.rows)
        if row.converged is False or reference.converged is False:
            return NOT_CONVERGED
        if within_estimation_error(difference, self.estimation_error(row, reference)):
            return "within the estimates' error"
        if not difference.detected:
            return "no difference detected"
        better = (difference.mean < 0) == self.metric.lower_is_better
        return "**beats trace**" if better else "trails trace"

    @functools.cached_property
    def details(self) -> tuple[list[str], list[list[Any]]]:
        """The wide table: settings, runs, and every metric with its paired Δ to trace."""
        present = [m for m in METRICS if any(r.values(m.key, m.section) for r in self.rows)]
        header = [*self.varying, "runs ok/diverged/failed"]
        for metric in present:
            header += [metric.title, f"Δ {metric.title}"]
        table = []
        for row in self.rows:
            line: list[Any] = [row.settings[k] for k in self.varying] + [row.counts()]
            reference = reference_row(row, self.rows)
            for metric in present:
                values = row.values(metric.key, metric.section)
                line.append(_mean_se(list(values.values())))
                difference = (
                    paired_difference(values, reference.values(metric.key, metric.section))
                    if reference is not None and reference is not row
                    else None
                )
                line.append((difference.mean, difference.ci_low, difference.ci_high)
                            if difference else math.nan)  # fmt: skip
            table.append(line)
        return header, table


#: the label of a comparison that involves a fit that did not arrive
NOT_CONVERGED = "not converged: an optimisation result, not the objective's"


def not_converged(
    first: Row, second: Row, metric: str, comparison: PairedDifference | None
) -> str | None:
    """The verdict line of a pair where a row's fits did not arrive (their certificates
    say so): the difference is the optimiser's, not the objectives'; None otherwise."""
    stragglers = [f"`{row.label()}`" for row in (first, second) if row.converged is False]
    if not stragglers or comparison is None:
        return None
    return (
        f"`{first.label()}` vs `{second.label()}` on {metric}: {' and '.join(stragglers)} "
        f"did not converge: {NOT_CONVERGED.split(': ', 1)[1]} (Δ {comparison.interval()}, "
        f"{comparison.seeds} seeds)"
    )


def _stopped_by(row: Row) -> str:
    # records from before budgets existed ran their steps to the end
    reasons = Counter(
        (record.get("fit") or {}).get("stopped_by", "steps")
        if record["status"] == "ok"
        else record["status"]
        for record in row.records
    )
    return ", ".join(f"{reason} ×{count}" for reason, count in sorted(reasons.items()))


def _detail_cell(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 3:
        return f"{value[0]:+.3g} [{value[1]:+.3g}, {value[2]:+.3g}]"
    return _cell(value)


def details_markdown(comparison: Comparison) -> str:
    header, table = comparison.details
    first = header.index("runs ok/diverged/failed")
    compact = ["configuration", *header[first:]]
    lines = ["| " + " | ".join(compact) + " |", "|" + "---|" * len(compact)]
    for row, line in zip(comparison.rows, table, strict=True):
        cells = [f"`{row.label()}`", *(_detail_cell(v) for v in line[first:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evidence_split(comparison: Comparison) -> str | None:
    """Where the evidence is exact: log p(x) = ELBO + KL(q‖p), and KL split into the guide
    family's floor (the KL that ``trace`` with the same guide reaches: Trace_ELBO
    minimises KL(q‖p) over the family) and the objective's excess over it. Not for
    models that learn θ: each run then has its own evidence, and no floor is shared."""
    rows = [
        row
        for row in comparison.rows
        if row.values("exact_log_evidence", "metrics") and not row.values("test_loglik", "metrics")
    ]
    if not rows:
        return None
    lines = [
        "| configuration | log p(x) | ELBO | KL(q‖p) | guide floor (trace's KL) "
        "| objective's excess |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        kl = row.values("kl_to_posterior", "metrics")
        reference = reference_row(row, comparison.rows)
        floor = reference.values("kl_to_posterior", "metrics") if reference else {}
        excess = {seed: kl[seed] - floor[seed] for seed in kl if seed in floor}
        cells = [
            _cell(_mean_se(list(row.values(key, "metrics").values())))
            for key in ("exact_log_evidence", "elbo")
        ]
        cells += [_cell(_mean_se(list(values.values()))) for values in (kl, floor, excess)]
        lines.append(f"| `{row.label()}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budget_title(records: Sequence[dict[str, Any]]) -> str:
    """``equal model_evals budget (20000)`` or, when runs differ, what they were."""
    budgets = {
        (b.get("kind", "steps"), b.get(b.get("kind", "steps")) or r["config"].get("steps"))
        for r in records
        if (b := r["config"].get("budget") or {"kind": "steps"}) is not None
    }
    if len(budgets) == 1:
        kind, amount = budgets.pop()
        return f"at an equal {kind} budget ({amount})"
    return "at UNEQUAL budgets (" + ", ".join(f"{k}={a}" for k, a in sorted(budgets, key=str)) + ")"


def tuning_header(records: Sequence[dict[str, Any]]) -> str:
    tunings = [r.get("tuning") for r in records]
    if not any(tunings):
        return (
            "**Untuned**: every configuration runs with the optimiser settings of its config "
            "(no step size was tuned per method)."
        )
    if not all(tunings):
        return "**Partly tuned**: some runs carry tuned values and some do not; compare with care."
    first = tunings[0]
    keys = ", ".join(sorted(first["values"]))
    return (
        f"**Tuned** per configuration by Optuna ({first['sampler']}, {first['trials']} trials × "
        f"{len(first['seeds'])} validation seeds {first['seeds']}, metric {first['metric']} on "
        f"those seeds): {keys}. Reported runs use fresh seeds."
    )


def tuning_table(comparison: Comparison) -> str | None:
    lines = []
    for row in comparison.rows:
        tuning = next((r["tuning"] for r in row.records if r.get("tuning")), None)
        if tuning:
            chosen = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in tuning["values"].items())  # fmt: skip
            lines.append(
                f"| `{row.label()}` | {chosen} | {tuning['best_value']:.4g} | "
                f"{tuning['model_evals']} | {tuning['seconds']:.1f} |"
            )
    if not lines:
        return None
    return "\n".join([
        "| configuration | chosen | validation metric | tuning model evals | tuning seconds |",
        "|---|---|---|---|---|", *lines,
    ])  # fmt: skip


def write_csv(comparison: Comparison, path: Path) -> None:
    """The wide table, each (mean, se) cell as two columns and each Δ as three."""
    header, table = comparison.details
    widths = [max((len(v) if isinstance(v, tuple) else 1) for v in column)
              for column in zip(*table, strict=True)] if table else []  # fmt: skip
    suffixes = {1: [""], 2: ["", " se"], 3: ["", " ci_low", " ci_high"]}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [f"{title}{s}" for title, w in zip(header, widths, strict=True) for s in suffixes[w]]
        )
        for line in table:
            cells: list[Any] = []
            for value, width in zip(line, widths, strict=True):
                if width == 1:
                    cells.append(value)
                else:
                    cells += list(value) if isinstance(value, tuple) else [value] * width
            writer.writerow(cells)


def write_runs_csv(records: Sequence[dict[str, Any]], path: Path) -> None:
    """One line per run: status, seed, its config hash and every scalar metric and fit figure."""
    lines = []
    for record in records:
        line = {
            "path": record.get("path"), "status": record["status"], "seed": record["seed"],
            "config_hash": record.get("config_hash"), **record["components"],
        }  # fmt: skip
        for section in ("metrics", "fit"):
            line.update(
                (f"{section}.{k}", v)
                for k, v in flatten(record.get(section) or {})
                if isinstance(v, int | float | str | None) and not isinstance(v, bool)
            )
        lines.append(line)
    columns = list(dict.fromkeys(key for line in lines for key in line))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(lines)


def failures(records: Sequence[dict[str, Any]]) -> list[str]:
    return [
        f"- `{r.get('path', '?')}` {r['status']}: {r.get('message')}"
        for r in records
        if r["status"] != "ok"
    ]


def build_report(sweep_dir: str | Path, print_table: bool = True, metric: str | None = None) -> str:
    """Write ``comparison.{md,csv}``, ``runs.csv`` and plots into ``sweep_dir``; return the
    Markdown. ``metric`` overrides the headline metric (a key of :data:`METRICS`)."""
    sweep_dir = Path(sweep_dir)
    records = latest_records(read_records(sweep_dir))
    if not records:
        raise FileNotFoundError(f"no run records (record.json) under {sweep_dir}")
    comparison = Comparison.of(records, metric)
    sections = [
        f"# {comparison.metric.title} against `{REFERENCE_OBJECTIVE}`, "
        f"{budget_title(records)} ({len(records)} runs)",
        "",
        tuning_header(records),
        "",
        comparison.verdict_line(),
        "",
        comparison.headline(),
        "",
        "Δ: seed-paired difference to the `trace` row with the same model and guide, 95% "
        "bootstrap interval; p: Wilcoxon signed-rank test, Holm-corrected over the table. A "
        'verdict needs both; "no difference detected" says the seeds cannot tell, not that '
        "the two are equal.",
        "",
        "## Details",
        "",
        "Mean ± standard error over seeds; Δ with its 95% bootstrap interval.",
        "",
        details_markdown(comparison),
    ]
    for title, body in (
        ("Evidence split: log p(x) = ELBO + KL(q‖p)", evidence_split(comparison)),
        ("Tuned values", tuning_table(comparison)),
    ):
        if body:
            sections += ["", f"## {title}", "", body]
    if any("psis_khat" in r.get("metrics", {}) for r in records):
        sections += ["", (
            "PSIS k̂ > 0.7 says importance sampling with the guide is unreliable; a small "
            "k̂ does not prove the guide covers the posterior: a mode the guide never samples "
            "leaves no trace in its weights."
        )]  # fmt: skip
    failed = failures(records)
    if failed:
        sections += ["", "## Runs that did not finish", *failed]
    mixed = version_differences(records)
    if mixed:
        sections += [
            "",
            "## Package versions differ between runs",
            "",
            "These records were made with different installs; compare with care:",
            "",
            *(f"- {line}" for line in mixed),
        ]
    markdown = "\n".join(sections)
    (sweep_dir / "comparison.md").write_text(markdown + "\n")
    write_csv(comparison, sweep_dir / "comparison.csv")
    write_runs_csv(records, sweep_dir / "runs.csv")
    plot_loss_curves(comparison.rows, sweep_dir / "loss_curves.png")
    plot_metrics(
        comparison.rows,
        [(m.key, m.title, m.section) for m in METRICS if m.key != "final_loss"],
        sweep_dir / "metrics.png",
    )
    plot_anytime(comparison.rows, sweep_dir / "anytime.png")
    if print_table:
        print(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    """``elbo-lab-report DIR``: rebuild a sweep's report from its run records."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "sweep_dir", type=Path, help="directory holding the runs' record.json files"
    )
    parser.add_argument(
        "--metric", choices=sorted(BY_KEY), help="the headline metric (default: the best truth)"
    )
    arguments = parser.parse_args(argv)
    try:
        build_report(arguments.sweep_dir, metric=arguments.metric)
    except FileNotFoundError as error:
        parser.exit(2, f"elbo-lab-report: {error}\n")
