"""Runs write where they are told, never into the checkout they are started from."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_cli import SMOKE, elbo_lab

REPOSITORY = Path(__file__).resolve().parents[1]


def _tree_state() -> str:
    """Every changed, untracked and ignored path of the checkout (``--ignored`` too: an
    ignored ``mlruns/`` is still something a run wrote into the user's repository)."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
        cwd=REPOSITORY, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    # bytecode and pytest's cache come from the test session itself (other xdist workers)
    session = ("__pycache__/", ".pytest_cache/")
    return "\n".join(line for line in status.splitlines() if not any(s in line for s in session))


@pytest.mark.slow
@pytest.mark.parametrize("tracker", ["mlflow", "tensorboard"])
def test_a_tracked_sweep_started_in_the_checkout_leaves_it_unchanged(tmp_path, tracker):
    if shutil.which("git") is None or not (REPOSITORY / ".git").exists():
        pytest.skip("needs a git checkout")
    pytest.importorskip({"mlflow": "mlflow", "tensorboard": "tensorboard"}[tracker])
    before = _tree_state()
    sweep = tmp_path / "sweep"
    result = elbo_lab(*SMOKE, f"tracker={tracker}", f"hydra.sweep.dir={sweep}", cwd=REPOSITORY)
    assert result.returncode == 0, result.stderr
    assert (sweep / "comparison.md").exists()
    assert _tree_state() == before
