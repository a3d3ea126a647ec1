"""Benchmark rows carry their machine's facts; reports give spreads and refuse ratios
across machines."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab import provenance as module
from pyro_elbo_lab.lab.provenance import (
    Provenance,
    provenance,
    require_same_machine,
    spread,
    spread_text,
    wait_until_quiet,
)

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma avx512f
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma avx512f
"""


def test_the_facts_come_from_cpuinfo_the_budget_and_the_load(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    monkeypatch.setattr(module, "cpu_budget", lambda: 2)
    monkeypatch.setattr(module.os, "getloadavg", lambda: (0.25, 0.5, 0.5))
    monkeypatch.setattr(module, "busy_cpus", lambda: 0.125)
    facts = provenance(cpuinfo)
    assert facts.cpu_model == "AMD EPYC 7B13" and facts.isa == ("avx2", "avx512f")
    assert facts.cpu_budget == 2 and facts.load_average == 0.25 and facts.busy_cpus == 0.125
    assert Provenance.from_record(facts.record()) == facts


def test_a_machine_without_cpuinfo_still_names_its_processor(tmp_path):
    facts = provenance(tmp_path / "absent")
    assert facts.cpu_model and facts.isa == ()


@pytest.mark.parametrize(
    ("load", "busy", "warned"),
    [
        (0.9, float("nan"), False),  # a row recorded before the busy CPUs were
        (1.2, float("nan"), True),
        (1.9, 0.1, False),  # the benchmark's own previous process, ended, in the average
        (0.3, 1.2, True),  # a process that began spinning within the last minute
    ],
)
def test_a_row_started_on_a_loaded_machine_is_flagged(load, busy, warned):
    facts = Provenance("cpu", ("avx2",), 2, 2, load, "2.13.0", busy)
    warning = facts.load_warning()
    assert (warning is not None) == warned
    if warned:
        assert "contended" in warning and "0.60 per core" in warning


def test_a_benchmark_waits_for_other_processes_but_not_forever(monkeypatch):
    """It waits while other processes keep the CPUs busy; a machine that stays busy is
    measured anyway after the limit (its rows carry the warning)."""
    busy = iter([1.8, 1.4, 0.9, 0.5])
    monkeypatch.setattr(module, "cpu_budget", lambda: 2)
    monkeypatch.setattr(module, "busy_cpus", lambda: next(busy))
    assert wait_until_quiet(limit_s=60) == 0.9
    clock = iter([0.0, 10.0, 70.0])
    monkeypatch.setattr(module, "busy_cpus", lambda: 3.0)
    monkeypatch.setattr(module.time, "monotonic", lambda: next(clock))
    assert wait_until_quiet(limit_s=60) == 3.0


def test_the_spread_of_fresh_processes():
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}
    assert spread_text(spread([3.0, 1.0, 2.0]), ".1f") == "2.0 (1.0–3.0)"
    with pytest.raises(ValueError):
        spread([])


def test_no_ratio_between_rows_from_two_machines():
    here = Provenance("cpu A", ("avx2",), 2, 2, 0.1, "2.13.0").record()
    require_same_machine([here, dict(here, load_average=0.3, threads=1)])
    with pytest.raises(ConfigError, match="2 machines") as error:
        require_same_machine([here, dict(here, isa=["avx2", "avx512f"])])
    assert "\n" not in str(error.value)


def _speed_script():
    path = Path(__file__).resolve().parents[1] / "experiments" / "deep_lvm" / "speed.py"
    spec = importlib.util.spec_from_file_location("deep_lvm_speed", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_vae_step_benchmark_forms_each_ratio_within_a_process():
    """Ratios are per process (its interleaved rounds), then their median and min–max."""
    script = _speed_script()
    facts = Provenance("cpu", ("avx2",), 2, 2, 0.1, "2.13.0").record()
    runs = [
        {"provenance": facts, "step_ms": {"5": {script.HAND: hand, script.IWAE: 1.5 * hand}}}
        for hand in (10.0, 12.0, 20.0)
    ]
    table = script.aggregate(runs)
    assert table["5"][script.IWAE]["x_handwritten"] == pytest.approx(
        {"median": 1.5, "min": 1.5, "max": 1.5, "runs": 3}
    )
    assert table["5"][script.HAND]["step_ms"]["median"] == 12.0
