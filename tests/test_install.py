"""A plain, non-editable install finds its Hydra configs from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_non_editable_install_runs_from_another_directory(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPOSITORY)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import pyro_elbo_lab; print(pyro_elbo_lab.__file__)"],
        cwd=elsewhere, env=environment, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(target)), "the installed copy must be the one used"
    assert (target / "pyro_elbo_lab" / "conf" / "config.yaml").exists()
    sweep = elsewhere / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "pyro_elbo_lab", "experiment=smoke", "progress_bar=false",
         f"hydra.sweep.dir={sweep}"],
        cwd=elsewhere, env=environment, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    statuses = [json.loads(p.read_text())["status"] for p in sweep.rglob("record.json")]
    assert statuses == ["ok", "ok"]
    assert (sweep / "comparison.md").exists()
