"""converged.md and converged.json from the records of run_converged.sh.

    python experiments/reference_posteriors/report_converged.py [OUT]

Distances in cost/ are to each family's optimum (the runs' reference is the optimum's
own draws); distances in optimum/ and bias/ are to posteriordb's NUTS draws. "Reached"
means a checkpoint's mean W1 to the optimum at most TOLERANCE (checkpoints are
log-spaced over the budget, so the evaluations to reach are those of the first
checkpoint within it, an upper bound).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

TOLERANCE = 0.05
BUDGET = 10_000
#: the methods of the cost table, in order; ADVI as the last study ran it is the baseline
BASELINE = "ADVI (median, Adam)"


def records(directory: Path) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted(directory.glob("*/record.json"))]
    return [r for r in found if r.get("role") != "tuning"]


def method(record: dict) -> str:
    fit, config = record.get("fit") or {}, record["config"]
    fitter = config["fitter"]["name"]
    if fitter == "pathfinder":
        return f"Pathfinder x{config['fitter'].get('paths', 1)}"
    if fitter != "svi":
        return {"dadvi": "DADVI", "saa": "SAA", "gsm": "GSM", "bam": "BaM"}[fitter]
    start = (fit.get("start") or {}).get("method", "median")
    if config.get("schedule", {}).get("kind") == "raabbvi":
        return "ADVI (Laplace, whitened, RAABBVI)"
    return BASELINE if start == "median" else "ADVI (Laplace, whitened, Adam)"


def reached(record: dict) -> tuple[float, float] | None:
    """Gradient evaluations and seconds at the first checkpoint within TOLERANCE."""
    for checkpoint in (record.get("fit") or {}).get("checkpoints") or []:
        value = checkpoint.get("posterior_w1_mean")
        if value is not None and value <= TOLERANCE:
            return checkpoint["gradient_evals"], checkpoint["seconds"]
    return None


def cost_table(runs: list[dict]) -> tuple[list[str], dict]:
    cells: dict = defaultdict(dict)
    for (model, family, name), group in _grouped(runs).items():
        ok = [r for r in group if r["status"] == "ok"]
        hits = [reached(r) for r in ok]
        finals = [r["metrics"]["posterior_w1_mean"] for r in ok]
        cells[(model, family)][name] = {
            "runs": f"{len(ok)}/{len(group)}",
            "final_w1": statistics.median(finals) if finals else None,
            "reached": sum(h is not None for h in hits),
            "evals": statistics.median(h[0] for h in hits) if all(hits) and hits else None,
            "seconds": statistics.median(h[1] for h in hits) if all(hits) and hits else None,
            "converged": sum(bool((r.get("fit") or {}).get("converged")) for r in ok),
            "diverged": sum(r["status"] != "ok" for r in group),
        }
    lines = []
    for family in ("mvn", "normal"):
        names = sorted({n for (m, f), row in cells.items() if f == family for n in row})
        names.sort(key=lambda n: (n != BASELINE, n))
        lines += [f"### Cost to the {family} optimum (≤ {TOLERANCE} sd mean W1)", "",
                  "| posterior | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]  # fmt: skip
        for model in sorted({m for (m, f) in cells if f == family}):
            row = cells[(model, family)]
            base = (row.get(BASELINE) or {}).get("evals")
            cell_texts = [_cost_cell(row.get(name), base) for name in names]
            lines.append(f"| {model} | " + " | ".join(cell_texts) + " |")
        lines.append("")
    return lines, cells


def _cost_cell(cell: dict | None, base: float | None) -> str:
    if cell is None:
        return "–"
    final = f"final {cell['final_w1']:.3g}" if cell["final_w1"] is not None else "failed"
    if cell["evals"] is None:
        return f"not reached ({cell['reached']}/{cell['runs']}); {final}"
    ratio = ""
    if base:
        ratio = f", {base / cell['evals']:.0f}× fewer"
    elif base is None:
        ratio = f", ≥ {BUDGET / cell['evals']:.0f}× fewer"
    return f"{cell['evals']:.0f} evals, {cell['seconds']:.1f} s{ratio}; {final}"


def bias_table(optimum: list[dict], bias: list[dict]) -> list[str]:
    columns: dict = defaultdict(dict)
    for record in optimum:
        if record["status"] == "ok":
            family = record["components"]["guide"]
            columns[record["components"]["model"]][f"ELBO optimum ({family})"] = [
                record["metrics"]["posterior_w1_mean"]
            ]
    for record in bias:
        if record["status"] != "ok":
            continue
        name = record["components"]["objective"]
        suffix = "" if (record.get("fit") or {}).get("converged") else "*"
        row = columns[record["components"]["model"]]
        row.setdefault(name + suffix, []).append(record["metrics"]["posterior_w1_mean"])
        resampled = record["metrics"].get("posterior_w1_mean_resampled")
        if resampled is not None:
            row.setdefault(f"{name} resampled{suffix}", []).append(resampled)
    names = sorted({n for row in columns.values() for n in row})
    lines = [
        "### Fixed points against NUTS (mean W1 in reference sd; * = a seed's certificate "
        "says it did not converge)",
        "",
        "| posterior | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for model in sorted(columns):
        row = columns[model]
        cells = [f"{statistics.mean(row[n]):.3g}" if n in row else "–" for n in names]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return [*lines, ""]


#: methods whose own objective's optimum is the family's ELBO optimum the cost runs
#: measure against (GSM's and BaM's fixed points are their own; DADVI's is that of its
#: fixed draws; Pathfinder optimises no objective): the certificate's truth
ELBO_OPTIMISERS = ("ADVI (median, Adam)", "ADVI (Laplace, whitened, Adam)", "SAA")


def certificate_agreement(runs: list[dict]) -> list[str]:
    """Per method and certificate rule: runs judged, flagged converged and how many of those
    end beyond TOLERANCE of the optimum, runs within it and how many of those are flagged
    not converged."""
    lines = [
        f"### The certificate against the truth (within {TOLERANCE} sd mean W1 of the optimum)",
        "",
        "| method | certificate rule | judged | flagged | flagged but beyond | within "
        "| within but not flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict = defaultdict(list)
    for record in runs:
        fit = record.get("fit") or {}
        if record["status"] == "ok" and fit.get("converged") is not None:
            rule = fit["certificate"]["rule"].split(" < ")[0]
            groups[(method(record), rule)].append(record)
    for (name, rule), group in sorted(groups.items()):
        if name not in ELBO_OPTIMISERS:
            continue
        flagged = [r for r in group if r["fit"]["converged"]]
        beyond = [r for r in flagged if r["metrics"]["posterior_w1_mean"] > TOLERANCE]
        within = [r for r in group if r["metrics"]["posterior_w1_mean"] <= TOLERANCE]
        missed = [r for r in within if not r["fit"]["converged"]]
        lines.append(
            f"| {name} | {rule} | {len(group)} | {len(flagged)} | {len(beyond)} | "
            f"{len(within)} | {len(missed)} |"
        )
    return [*lines, ""]


def _grouped(runs: list[dict]) -> dict:
    groups: dict = defaultdict(list)
    for record in runs:
        key = (record["components"]["model"], record["components"]["guide"], method(record))
        groups[key].append(record)
    return groups


def main(out: Path) -> None:
    optimum, cost, bias = (records(out / name) for name in ("optimum", "cost", "bias"))
    lines, cells = cost_table(cost)
    report = [
        "# Converged fits: the cost of arriving, and each objective's fixed point", "",
        *certificate_agreement(cost), *lines, *bias_table(optimum, bias),
    ]  # fmt: skip
    (out / "converged.md").write_text("\n".join(report) + "\n")
    (out / "converged.json").write_text(
        json.dumps({f"{m}/{f}": row for (m, f), row in cells.items()}, indent=1)
    )
    print("\n".join(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "converged")
