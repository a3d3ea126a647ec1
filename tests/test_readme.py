"""README.md stays true: its Pyro snippet runs and its component table is the registry's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyro_elbo_lab.lab.listing import component_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_component_table_matches_the_registry():
    assert component_table() in README, (
        "README.md's component table is stale: python -m pyro_elbo_lab.lab.listing README.md"
    )


@pytest.mark.slow
def test_readme_pyro_snippet_runs_and_approaches_the_evidence(capsys):
    snippet = re.search(r"## Use it from Pyro.*?```python\n(.*?)```", README, re.S).group(1)
    exec(compile(snippet, "README.md", "exec"), {})
    exact, bound = (float(v) for v in capsys.readouterr().out.split())
    assert bound < exact + 0.5  # a Rényi bound with alpha > 0 sits below log p(x), up to MC noise
    assert exact - bound < 2.0


def test_readme_names_the_two_setup_commands_and_ci_runs_the_test_one():
    commands = re.findall(r"```bash\n(python3 -m venv .*?)\n```", README)
    assert (
        len(commands) == 2 and commands[0].endswith("elbo-lab") and commands[1].endswith("pytest")
    )
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    for step in commands[1].split(" && ")[2:]:  # the installs and the test command
        assert step in ci, f".ci/run does not run README's `{step}`"


def test_readme_shows_the_committed_main_job_report():
    block = re.search(
        r"<!-- main-job-report:start -->\n(.*?)<!-- main-job-report:end -->", README, re.S
    ).group(1)
    committed = (
        Path(__file__).resolve().parents[1] / "experiments/default_comparison/sweep/comparison.md"
    ).read_text()
    lines = [line for line in block.splitlines() if line.strip()]
    assert lines and all(line in committed.splitlines() for line in lines), (
        "README.md's main-job report is not the committed one "
        "(experiments/default_comparison/sweep/comparison.md)"
    )
    header = next(line for line in lines if line.startswith("| verdict vs trace"))
    assert header.count("|") - 1 <= 8  # the headline table has at most 8 columns
