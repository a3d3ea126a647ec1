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
