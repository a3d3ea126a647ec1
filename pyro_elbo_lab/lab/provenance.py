"""Where a timing was taken: the machine facts a benchmark row carries, and its spread.

A ratio between two timings means something only when both come from the same machine,
at the same CPU budget, with nothing else running. Every benchmark row therefore records
the CPU model, the instruction-set extensions that decide which kernels run (AVX2,
AVX-512, AMX), the CPUs the process may use (:func:`~pyro_elbo_lab.cpu_budget.cpu_budget`:
affinity mask and cgroup quota), the torch threads used, the one-minute load average
when it started and the CPUs other processes kept busy just before it started
(:func:`~pyro_elbo_lab.cpu_load.busy_cpus`). Reports give the median of several fresh
processes with their min–max (:func:`spread`), warn when a row started on a loaded
machine (more than :data:`LOAD_PER_CORE_WARNING` busy CPUs per core of the budget) and
refuse to form a ratio between rows from two machines (:func:`require_same_machine`).
The warning and :func:`wait_until_quiet` read the busy CPUs, not the load average: that
decays with a time constant of a minute, so a benchmark's own previous process, already
ended, keeps it above the threshold for up to a minute (the row's recorded load average
then says so without the row having met any load).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pyro_elbo_lab.cpu_budget import cpu_budget
from pyro_elbo_lab.cpu_load import busy_cpus
from pyro_elbo_lab.errors import ConfigError

CPUINFO = Path("/proc/cpuinfo")
#: the /proc/cpuinfo flags that change which CPU kernels torch runs
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
#: a row that started with more CPUs per core of the budget busy elsewhere is contended
LOAD_PER_CORE_WARNING = 0.5
#: the facts two rows must share before a ratio is formed between them
MACHINE_KEYS = ("cpu_model", "isa", "cpu_budget")


@dataclass(frozen=True)
class Provenance:
    """One process's machine facts at the start of a measurement."""

    cpu_model: str
    isa: tuple[str, ...]
    cpu_budget: int
    threads: int
    load_average: float
    torch: str
    #: CPUs other processes kept busy just before the start (NaN in rows recorded before
    #: it was: their warning reads the load average)
    busy_cpus: float = float("nan")

    @classmethod
    def from_record(cls, record: dict) -> Provenance:
        """The facts a row recorded (:meth:`record`)."""
        return cls(**{**record, "isa": tuple(record["isa"])})

    def record(self) -> dict[str, object]:
        """The row's fields (``isa`` as a list, for JSON)."""
        return {**asdict(self), "isa": list(self.isa)}

    def load_warning(self) -> str | None:
        """A line for the report where the machine was busy when the row started."""
        busy = not math.isnan(self.busy_cpus)
        load = self.busy_cpus if busy else self.load_average
        per_core = load / self.cpu_budget
        if per_core <= LOAD_PER_CORE_WARNING:
            return None
        what = "CPUs busy with other processes" if busy else "load average"
        return (
            f"{what} {load:.2f} at start over a budget of {self.cpu_budget} CPU(s) "
            f"({per_core:.2f} per core > {LOAD_PER_CORE_WARNING}): contended, not an idle timing"
        )


def provenance(cpuinfo: Path = CPUINFO) -> Provenance:
    """This process's facts now: CPU model and ISA flags from ``cpuinfo`` (the platform's
    processor string and no flags where there is none), CPU budget, torch threads, the
    one-minute load average and the CPUs other processes keep busy (measured over
    :data:`~pyro_elbo_lab.cpu_load.WINDOW_S`)."""
    model, flags = "", set()
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():  # the first processor's entries
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and not model:
                model = value
            elif key == "flags" and not flags:
                flags = set(value.split())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return Provenance(
        cpu_model=model or platform.processor() or platform.machine(),
        isa=tuple(flag for flag in ISA_FLAGS if flag in flags),
        cpu_budget=cpu_budget(),
        threads=torch.get_num_threads(),
        load_average=load,
        torch=torch.__version__,
        busy_cpus=busy_cpus(),
    )


def wait_until_quiet(limit_s: float = 180.0) -> float:
    """Wait until other processes keep at most :data:`LOAD_PER_CORE_WARNING` CPUs per core
    of the budget busy, or ``limit_s`` has passed (a machine busy with other work stays
    busy: the row then carries its load and its warning); returns the busy CPUs seen."""
    quiet = LOAD_PER_CORE_WARNING * cpu_budget()
    deadline = time.monotonic() + limit_s
    while (busy := busy_cpus()) > quiet and time.monotonic() < deadline:
        pass  # busy_cpus itself waits its window
    return busy


def spread(values: Iterable[float]) -> dict[str, float | int]:
    """Median and min–max of repeated measurements (fresh processes), and their count."""
    found = sorted(values)
    if not found:
        raise ValueError("spread of no measurements")
    return {
        "median": statistics.median(found),
        "min": found[0],
        "max": found[-1],
        "runs": len(found),
    }


def spread_text(found: dict, form: str = ".2f") -> str:
    """A :func:`spread` as a table cell: ``median (min–max)``."""
    return f"{found['median']:{form}} ({found['min']:{form}}–{found['max']:{form}})"


def require_same_machine(rows: Sequence[dict]) -> None:
    """Raise where rows that a ratio would combine come from different machines (CPU model,
    ISA flags or CPU budget differ): rerun the baseline beside the method instead."""
    seen = {tuple(_hashable(row.get(key)) for key in MACHINE_KEYS) for row in rows}
    if len(seen) > 1:
        described = "; ".join(
            ", ".join(f"{key}={value}" for key, value in zip(MACHINE_KEYS, facts, strict=True))
            for facts in sorted(seen, key=str)
        )
        raise ConfigError(
            f"these rows come from {len(seen)} machines ({described}): a ratio needs both "
            "timings from one machine; rerun the baseline there"
        )


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value
