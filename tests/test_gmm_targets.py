"""experiments/gmm_scale/targets.py: the processes a cell runs, and the verdicts its
report gives from their medians."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "gmm_scale" / "targets.py"
FACTS = {"cpu_model": "cpu", "isa": ["avx2"], "cpu_budget": 2, "threads": 2}


@pytest.fixture(scope="module")
def targets():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("gmm_targets", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(SCRIPT.parent))


def test_a_cell_runs_five_fresh_processes_of_each_side_three_of_them_cold(targets, tmp_path):
    args = argparse.Namespace(repeats=5, cold=3, contended_repeats=3)
    jobs = targets.cell_jobs(1000, 5, 2, args, tmp_path)
    idle = [job for job in jobs if job["series"] == "idle"]
    ours = [job for job in idle if job["method"] == "ours_compiled"]
    assert len(ours) == 5
    assert sum(job["method"] == "numpyro_jit" for job in idle) == 5
    assert [job["cold"] for job in ours] == [True, True, True, False, False]
    assert len({job["cache_dir"] for job in ours}) == 3  # the cached runs reuse the first
    assert all(job["again"] for job in ours[3:])
    contended = [job["method"] for job in jobs if job["series"] == "contended"]
    assert sorted(contended) == sorted(["ours_compiled", "numpyro_jit", "ours_eager"] * 3)


def _row(series, method, steps, setup=10.0, **extra):
    return {
        "kind": "speed",
        "series": series,
        "method": method,
        "n": 1000,
        "k": 5,
        "d": 2,
        "steps_per_s": steps,
        "setup_s": setup,
        "provenance": {**FACTS, "load_average": 0.1, "torch": "2.13.0", "busy_cpus": 0.0},
        **extra,
    }


def test_the_verdicts_come_from_medians_and_the_slowest_run(targets):
    rows = [
        *(_row("idle", "ours_compiled", s, 14.0, cold=True) for s in (300, 310, 200)),
        *(_row("idle", "ours_compiled", s, 5.0, cold=False, setup_again_s=2.0) for s in (305, 320)),
        *(_row("idle", "numpyro_jit", s, 10.0) for s in (250, 260, 240, 255, 245)),
        *(_row("idle", "ours_eager", s) for s in (20, 21, 22)),
        *(_row("contended", "ours_compiled", s) for s in (240, 250, 245)),
        *(_row("contended", "numpyro_jit", s) for s in (260, 270, 250)),
        *(_row("contended", "ours_eager", s) for s in (2, 2, 2)),
    ]
    text = "\n".join(targets.report(rows))
    b, c, d = (line for line in text.splitlines() if line.startswith("| 1e+03"))
    # idle: median 305 / 250 = 1.22 met; slowest 200 / 250 = 0.80 met
    assert "1.22 met" in b and "0.80 met" in b
    # contended: 245 / 260 = 0.94 missed; 245 / 305 = 0.80 of its idle median, met
    assert "0.94 missed" in c and "0.80 met" in c and "| 0.10 |" in c
    # cold 14.0 against NumPyro's 10.0: 1.40 missed; again 2.0 s: met
    assert "1.40 missed" in d and "2.00 met" in d
