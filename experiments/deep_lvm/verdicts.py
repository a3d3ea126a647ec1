"""Verdicts on the five papers' claims, from the records of ``run.sh``'s sweeps.

For each claim "A beats B" the seed-paired difference of the test log-likelihood per image
(exact for the sbn, IWAE-K for the vae, K named in the records) is summarised by its mean
and a 95% paired-t interval (n − 1 degrees of freedom): **reproduced** when the interval
is above zero, **reversed** when below, **within noise** otherwise. Rainforth et al.'s
claim is read from ``experiments/gradient_snr/results.json`` (slopes with bootstrap
intervals). Claims across studies (dynamic binarisation, the two-layer model) pair one
method's seeds in two sweep directories. The wall time of every study is split into
fitting, anytime checkpoints and the final evaluation, from the records.

    python experiments/deep_lvm/verdicts.py [DIR]     (default: experiments/deep_lvm)

writes ``DIR/results.md`` and ``DIR/results.json``.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from scipy import stats

from pyro_elbo_lab.lab.record import read_records

SNR_RESULTS = Path(__file__).parents[1] / "gradient_snr" / "results.json"


@dataclass(frozen=True)
class Method:
    """A row of a study: its label and how to recognise its records."""

    label: str
    objective: str
    particles: int | None = None
    options: tuple[tuple[str, object], ...] = ()

    def matches(self, record: dict) -> bool:
        config = record["config"]
        objective = config["objective"]
        if objective["name"] != self.objective:
            return False
        if self.particles is not None and objective.get("num_particles") != self.particles:
            return False
        merged = {**objective, **{f"guide.{k}": v for k, v in config["guide"].items()},
                  **{f"model.{k}": v for k, v in config["model"].items()}}  # fmt: skip
        return all(merged.get(key) == value for key, value in self.options)


VAE = {
    "vae_k1": Method("VAE (trace, k=1)", "trace", 1),
    "iwae_k5": Method("IWAE k=5", "iwae", 5),
    "iwae_k50": Method("IWAE k=50", "iwae", 50),
    "dreg_k5": Method("IWAE-DReG k=5", "iwae_dreg", 5),
    "dreg_k50": Method("IWAE-DReG k=50", "iwae_dreg", 50),
}
SBN = {
    "reinforce": Method(
        "REINFORCE (trace, k=1)", "trace", options=(("model.marginal", "sampled"),)
    ),
    "nvil": Method("NVIL-style (trace_graph, b(x), k=1)", "trace_graph"),
    "vimco": Method("VIMCO k=5", "vimco", 5, (("baseline", "leave_one_out"),)),
    "iwae_reinforce": Method("IWAE by REINFORCE k=5", "vimco", 5, (("baseline", "none"),)),
    "rws": Method("RWS k=5", "rws_score", 5),
    "exact": Method("exact marginal (ceiling)", "trace", options=(("model.marginal", "exact"),)),
}
#: (paper, claim, study, better, worse[, metric]); the metric defaults to the test LL/image
CLAIMS = [
    ("Burda et al. 2016", "IWAE k=5 beats the VAE (k=1)", "vae", "iwae_k5", "vae_k1"),
    ("Burda et al. 2016", "IWAE k=50 beats IWAE k=5", "vae", "iwae_k50", "iwae_k5"),
    ("Burda et al. 2016", "IWAE k=50 beats the VAE (k=1)", "vae", "iwae_k50", "vae_k1"),
    (
        "Burda et al. 2016",
        "IWAE k=50 keeps more active units than the VAE",
        "vae",
        "iwae_k50",
        "vae_k1",
        "active_units_count",
    ),
    ("Tucker et al. 2019", "IWAE-DReG beats IWAE at k=5", "vae", "dreg_k5", "iwae_k5"),
    ("Tucker et al. 2019", "IWAE-DReG beats IWAE at k=50", "vae", "dreg_k50", "iwae_k50"),
    ("Mnih & Rezende 2016", "VIMCO beats NVIL-style REINFORCE", "sbn", "vimco", "nvil"),
    ("Le et al. 2019", "RWS beats VIMCO", "sbn", "rws", "vimco"),
    ("Le et al. 2019", "RWS beats IWAE by REINFORCE", "sbn", "rws", "iwae_reinforce"),
]
STUDIES = {
    "vae_equal_steps": ("vae", VAE, "equal steps (Burda's protocol; K=50 costs 50x K=1)"),
    "vae_equal_evals": ("vae", VAE, "equal model evaluations (K x steps fixed)"),
    "vae_dynamic": ("vae", VAE, "equal steps, training images binarised afresh each step"),
    "vae_two_layer": ("vae", VAE, "equal steps, Burda's two-layer model and encoder"),
    "sbn": ("sbn", SBN, "equal model evaluations (K x steps fixed)"),
}
#: (paper, claim, method, better study, worse study): one method, two settings, paired seeds
CROSS_CLAIMS = [
    ("Burda et al. 2016", "dynamic binarisation beats one sampled draw (VAE)", "vae_k1",
     "vae_dynamic", "vae_equal_steps"),
    ("Burda et al. 2016", "dynamic binarisation beats one sampled draw (IWAE k=5)", "iwae_k5",
     "vae_dynamic", "vae_equal_steps"),
    ("Burda et al. 2016", "two stochastic layers beat one (VAE)", "vae_k1", "vae_two_layer",
     "vae_equal_steps"),
    ("Burda et al. 2016", "two stochastic layers beat one (IWAE k=5)", "iwae_k5",
     "vae_two_layer", "vae_equal_steps"),
]  # fmt: skip


def headline(record: dict, metric: str | None = None) -> float:
    """The claim's metric of a run: ``metric``, else the test LL/image (exact where known)."""
    metrics = record["metrics"]
    if metric is not None:
        return metrics[metric]
    return metrics.get("exact_test_loglik", metrics["test_loglik"])


def by_seed(records: list[dict], method: Method) -> dict[int, dict]:
    return {r["seed"]: r for r in records if r["status"] == "ok" and method.matches(r)}


def paired_interval(differences: list[float]) -> tuple[float, float, float]:
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return mean, -math.inf, math.inf
    half = stats.t.ppf(0.975, len(differences) - 1) * statistics.stdev(differences)
    half /= math.sqrt(len(differences))
    return mean, mean - half, mean + half


def verdict(low: float, high: float) -> str:
    if low == high == 0:
        return "no difference (equal in every seed)"
    if low > 0:
        return "reproduced"
    if high < 0:
        return "reversed (not reproduced)"
    return "within noise"


def study_table(records: list[dict], methods: dict[str, Method]) -> tuple[list[str], dict]:
    lines = [
        "| method | seeds | test LL/image [95% CI] | exact − IWAE | train bound − test LL "
        "| active units | model evals | fit seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for key, method in methods.items():
        runs = by_seed(records, method)
        if not runs:
            continue
        values = [headline(r) for r in runs.values()]
        mean, low, high = paired_interval(values)
        gaps = [r["metrics"]["test_loglik"] - r["metrics"].get("exact_test_loglik", math.nan)
                for r in runs.values()]  # fmt: skip
        summary[key] = {"label": method.label, "test_loglik": mean, "ci95": [low, high],
                        "seeds": sorted(runs)}  # fmt: skip

        def average(field: str, section: str = "metrics", runs=runs) -> float:
            return statistics.fmean(r[section].get(field, math.nan) for r in runs.values())

        gap = -statistics.fmean(gaps)
        lines.append(
            f"| {method.label} | {len(runs)} | {mean:.2f} [{low:.2f}, {high:.2f}] | "
            f"{'—' if math.isnan(gap) else f'{gap:.2f}'} | {average('bound_to_test_gap'):.2f} | "
            f"{average('active_units_count'):.1f} | {average('model_evals', 'fit'):.0f} | "
            f"{average('wall_time_s', 'fit'):.0f} |"
        )
    return lines, summary


def claim_row(
    paper: str, claim: str, study: str, first: dict, second: dict, metric: str | None = None
) -> dict | None:
    """The seed-paired verdict on "``first`` beats ``second``" (records by seed)."""
    seeds = sorted(set(first) & set(second))
    if not seeds:
        return None
    differences = [headline(first[s], metric) - headline(second[s], metric) for s in seeds]
    mean, low, high = paired_interval(differences)
    return {"paper": paper, "claim": claim, "study": study, "difference": mean,
            "ci95": [low, high], "verdict": verdict(low, high), "seeds": seeds}  # fmt: skip


def wall_time_split(records: list[dict]) -> dict[str, float]:
    """Seconds of a study's runs spent fitting (the budget's clock, checkpoints excluded),
    in anytime checkpoints and in the final evaluation."""
    ok = [r for r in records if r["status"] == "ok"]
    return {
        "runs": len(ok),
        "fitting": sum(r["fit"]["wall_time_s"] for r in ok),
        "checkpoints": sum(r["fit"].get("checkpoint_time_s") or 0.0 for r in ok),
        "evaluation": sum(r.get("evaluation_time_s") or 0.0 for r in ok),
    }


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    lines = ["# Deep latent-variable models: the papers' claims on one set of code", ""]
    results: dict = {"studies": {}, "claims": []}
    records_of = {}
    for study, (kind, methods, protocol) in STUDIES.items():
        directory = root / study
        if not directory.is_dir():
            continue
        records = [r for r in read_records(directory) if r.get("role", "reported") == "reported"]
        records_of[study] = records
        table, summary = study_table(records, methods)
        results["studies"][study] = summary
        lines += [f"## `{study}/`: {kind}, {protocol}", "", *table, ""]
        if kind == "sbn" and "exact" in summary:
            ceiling = summary["exact"]["test_loglik"]
            lines += ["Distance to the exact-marginal ceiling (nats/image): " + ", ".join(
                f"{s['label']} {s['test_loglik'] - ceiling:+.2f}"
                for key, s in summary.items() if key != "exact"
            ) + ".", ""]  # fmt: skip
    lines += [
        "## Verdicts",
        "",
        "Seed-paired difference of test LL/image (better − worse), mean and 95% paired-t interval.",
        "",
        "| paper | claim | study | difference [95% CI] | verdict |",
        "|---|---|---|---|---|",
    ]
    for paper, claim, kind, better, worse, *metric in CLAIMS:
        for study, (study_kind, methods, _) in STUDIES.items():
            if study_kind != kind or study not in records_of:
                continue
            first = by_seed(records_of[study], methods[better])
            second = by_seed(records_of[study], methods[worse])
            row = claim_row(paper, claim, study, first, second, *metric)
            if row is not None:
                results["claims"].append(row)
    for paper, claim, key, better, worse in CROSS_CLAIMS:
        if better in records_of and worse in records_of:
            method = VAE[key]
            first, second = by_seed(records_of[better], method), by_seed(records_of[worse], method)
            row = claim_row(paper, claim, f"{better} vs {worse}", first, second)
            if row is not None:
                results["claims"].append(row)
    lines += [
        f"| {c['paper']} | {c['claim']} | {c['study']} | {c['difference']:+.2f} "
        f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] | {c['verdict']} |"
        for c in results["claims"]
    ]
    results["wall_time_s"] = {study: wall_time_split(runs) for study, runs in records_of.items()}
    lines += ["", "## Wall time (summed over each study's runs, seconds)", "",
              "| study | runs | fitting | anytime checkpoints | final evaluation |",
              "|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {study} | {split['runs']} | {split['fitting']:.0f} | {split['checkpoints']:.0f} "
        f"| {split['evaluation']:.0f} |"
        for study, split in results["wall_time_s"].items()
    ]
    if SNR_RESULTS.is_file():
        snr = json.loads(SNR_RESULTS.read_text())
        lines += ["", "Rainforth et al. 2018 (gradient SNR against K, "
                  "`experiments/gradient_snr/`):", ""]  # fmt: skip
        for fit in snr["slopes"]:
            low, high = fit["ci95"]
            lines.append(
                f"- {fit['objective']} {fit['group']}: slope {fit['slope']:+.2f} "
                f"[{low:+.2f}, {high:+.2f}], predicted {fit['expected']}"
            )
    (root / "results.md").write_text("\n".join(lines) + "\n")
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
