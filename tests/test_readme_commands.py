"""Every shell command in README.md runs in CI exactly as printed, or says why not.

The main command's ``elbo-lab`` runs in an empty directory with the installed package
(the install before it is what ``.ci/run`` just did), then every other command of the
README's ``bash`` blocks, in README order, in the same directory, so that a walk-through
finds the files its earlier commands wrote. ``multirun/DATE/TIME-SUFFIX`` is the main
sweep's directory, as a user would paste it. A command marked ``[composed in CI]`` (a
sweep of minutes) is expanded into its jobs, each composed by Hydra from the command's
own arguments and built (model, guide, objective, fitter), without fitting; one marked
``[not in CI: REASON]`` is not run; ``pip install '.[EXTRA]'`` is checked against the
packages CI installed. Nothing is added to a command that the README does not print.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict
from packaging.requirements import Requirement

from pyro_elbo_lab.lab.components import build_components
from pyro_elbo_lab.lab.run import validate

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SWEEP_PLACEHOLDER = "multirun/DATE/TIME-SUFFIX"
COMPOSED = "[composed in CI]"
NOT_IN_CI = re.compile(r"\[not in CI: [^\]]+\]")


@dataclass(frozen=True)
class Command:
    """One command line of a README ``bash`` block, its trailing comment apart."""

    text: str
    comment: str

    @property
    def kind(self) -> str:
        if NOT_IN_CI.search(self.comment):
            return "not in CI"
        if COMPOSED in self.comment:
            return "composed"
        if self.text.startswith("pip install "):
            return "install"
        return "run"


def _split_comment(line: str) -> tuple[str, str]:
    """``command  # comment`` at the first ``#`` outside quotes that follows a space."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].strip(), line[index + 1 :].strip()
    return line.strip(), ""


def readme_commands() -> list[Command]:
    """Every command of every ``bash`` block, continuation lines joined, in README order."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            text, comment = _split_comment(line)
            if text:
                commands.append(Command(" ".join(text.split()), comment))
    return commands


COMMANDS = readme_commands()
SETUP = [c for c in COMMANDS if c.text.startswith("python3 -m venv")]
MAIN = SETUP[0].text.split(" && ")[-1]
OTHERS = [c for c in COMMANDS if c not in SETUP]


def _environment() -> dict[str, str]:
    """This interpreter's environment: ``elbo-lab`` and ``python`` are the installed ones."""
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    return environment


def _shell(command: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=_environment(), capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def main_sweep(scratch) -> tuple[subprocess.CompletedProcess, Path]:
    """The main command, as printed, in an empty directory."""
    result = _shell(MAIN, scratch, timeout=1200)
    sweeps = sorted(scratch.glob("multirun/*/*"))
    return result, (sweeps[0] if sweeps else scratch / "no-sweep")


def test_the_readme_has_its_two_setup_commands_and_every_command_is_classified():
    assert len(SETUP) == 2 and MAIN == "elbo-lab" and SETUP[1].text.endswith("&& pytest")
    kinds = {command.kind for command in OTHERS}
    assert kinds <= {"run", "composed", "not in CI", "install"}
    assert "run" in kinds and "composed" in kinds
    placeholder = re.compile(r"YOUR_[A-Z]+|\bDATE\b|\bPATH\b|\.\.\.")  # cannot run as printed
    for command in OTHERS:
        if command.kind == "run":
            assert not placeholder.search(command.text.replace(SWEEP_PLACEHOLDER, ""))


@pytest.mark.slow
def test_the_main_command_runs_as_printed_to_its_verdict(main_sweep):
    result, sweep = main_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    report = (sweep / "comparison.md").read_text()
    assert re.search(r"^\*\*Verdict\.\*\* ", report, re.M)
    records = [json.loads(p.read_text()) for p in sweep.glob("*/record.json")]
    assert len(records) == 32 and {r["status"] for r in records} == {"ok"}
    assert "**Verdict.**" in result.stdout  # the report is printed too


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", [c for c in OTHERS if c.kind == "run"], ids=lambda command: command.text[:60]
)
def test_a_readme_command_runs_as_printed(command, scratch, main_sweep):
    my_model = re.search(r"```python\n# my_model.py\n(.*?)```", README, re.S).group(1)
    (scratch / "my_model.py").write_text(my_model)  # "Save it as my_model.py"
    text = command.text.replace(SWEEP_PLACEHOLDER, str(main_sweep[1].relative_to(scratch)))
    result = _shell(text, scratch, timeout=600)
    assert result.returncode == 0, f"{text}\n{result.stderr[-3000:]}"
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "failed:" not in output
    if text.startswith("elbo-lab resume="):
        assert "nothing to run" in output
    if "hydra.mode=RUN" in text:
        assert "][elbo-lab][INFO] - ok:" in output


def _jobs(arguments: list[str]) -> list[list[str]]:
    """The jobs a command's arguments make: Hydra's grid of the swept values (the
    config's ``hydra.sweeper.params`` first, the command line's after, as the sweeper
    reads them); a single run (``hydra.mode=RUN``) is one job."""
    parser = OverridesParser.create()
    fixed = [a for a, o in zip(arguments, parser.parse_overrides(arguments), strict=True)
             if not o.is_sweep_override()]  # fmt: skip
    with initialize_config_module("pyro_elbo_lab.conf", version_base="1.3"):
        config = compose("config", overrides=fixed, return_hydra_config=True)
    if config.hydra.mode == "RUN":
        return [arguments]
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.params or {}).items()]
    overrides = parser.parse_overrides([*params, *arguments])
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", [c for c in OTHERS if c.kind == "composed"], ids=lambda c: c.text[:60]
)
def test_a_composed_readme_command_builds_every_job(command, scratch, monkeypatch):
    arguments = shlex.split(command.text)
    assert arguments[0] == "elbo-lab"
    arguments = [a for a in arguments[1:] if a != "-m"]
    monkeypatch.chdir(scratch)  # where the walk-through's files are
    if "my_model.py:model" in command.text:
        assert (scratch / "counts.csv").exists(), "runs after the README's counts.csv command"
    jobs = _jobs(arguments)
    assert jobs
    for job in jobs:
        with initialize_config_module("pyro_elbo_lab.conf", version_base="1.3"):
            config = compose("config", overrides=[o for o in job if not o.startswith("hydra")])
        with open_dict(config):
            config.tuning.result = None
        validate(config)
        build_components(config)
        OmegaConf.to_container(config, resolve=True)


@pytest.mark.parametrize(
    "command", [c for c in OTHERS if c.kind == "install"], ids=lambda c: c.text[:60]
)
def test_an_install_command_names_extras_ci_installed(command):
    extras = re.fullmatch(r"pip install '\.\[([a-z,]+)\]'", command.text).group(1).split(",")
    requirements = [Requirement(r) for r in distribution("pyro-elbo-lab").requires or []]
    for extra in extras:
        needed = [r for r in requirements if r.marker and r.marker.evaluate({"extra": extra})]
        assert needed, f"pyproject.toml has no extra {extra!r}"
        for requirement in needed:
            try:
                installed = version(requirement.name)
            except PackageNotFoundError:
                pytest.fail(f"README's `{command.text}`: {requirement.name} is not installed")
            assert requirement.specifier.contains(installed, prereleases=True), requirement
