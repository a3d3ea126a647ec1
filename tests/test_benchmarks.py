"""The benchmark scripts run (in quick mode) and write their tables; no timing is asserted."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.slow
def test_objective_speed_benchmark_writes_ratios_against_trace(tmp_path):
    script = EXPERIMENTS / "objective_speed" / "benchmark.py"
    subprocess.run(
        [sys.executable, str(script), "--quick", "--output", str(tmp_path)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    with (tmp_path / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    objectives = {row["objective"] for row in rows}
    assert {"iwae", "iwae_dreg", "stl", "pyro RenyiELBO alpha=0 (not vectorised)"} <= objectives
    assert {row["particles"] for row in rows} >= {"1", "8", "64"}
    assert all(float(row["ratio_to_trace_k1"]) > 0 for row in rows)
    assert "× Trace_ELBO(K=1)" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_gmm_scale_benchmark_writes_its_tables(tmp_path):
    script = EXPERIMENTS / "gmm_scale" / "benchmark.py"
    subprocess.run(
        [sys.executable, str(script), "--quick", "--shapes", "5x2", "--output", str(tmp_path)],
        check=True, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    with (tmp_path / "results.csv").open() as handle:
        measured = list(csv.DictReader(handle))
    rows = {row["method"]: row for row in measured if row["series"] == "grid"}
    assert set(rows) == {
        "ours_compiled", "ours_eager", "pyro_trace_enum", "pyro_jit_trace_enum",
        "torch_eager", "numpyro_jit",
    }  # fmt: skip
    for method in ("ours_compiled", "ours_eager", "pyro_trace_enum", "torch_eager"):
        assert float(rows[method]["steps_per_s"]) > 0, rows[method]
    # a benchmark-only library that is missing is recorded, not fatal
    numpyro = rows["numpyro_jit"]
    assert float(numpyro["steps_per_s"] or 0) > 0 or "not installed" in numpyro["error"]
    # the compiled run again on its compile cache: in a new process, then in the same one
    (cached,) = (row for row in measured if row["series"] == "cached")
    assert cached["method"] == "ours_compiled" and float(cached["setup_again_s"]) > 0
    assert float(rows["ours_compiled"]["steady_peak_rss_mb"]) > 0
    report = (tmp_path / "results.md").read_text()
    assert "ours / NumPyro" in report and "cached (new process)" in report
    assert "Rows carry their machine's facts" in report  # CPU model, ISA, budget, load
    assert (tmp_path / "scaling.png").stat().st_size > 1000
    assert (tmp_path / "runs.jsonl").read_text().count("\n") == 7
