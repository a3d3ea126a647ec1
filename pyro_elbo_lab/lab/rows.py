"""Run records grouped into configurations: one row per setting, its seeds inside.

A row is every setting that varies across the sweep except the seed and the values a
tuning phase chose (those belong to the row's method, not to what it is compared on).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyro_elbo_lab.lab.record import flatten

REFERENCE_OBJECTIVE = "trace"
NAME_KEYS = ("objective.name", "guide.name", "model.name")
#: top-level settings that never tell two configurations apart
IGNORED_KEYS = ("seed", "progress_bar", "num_threads", "resume", "tune", "tuning", "tracker")


@dataclass
class Row:
    """One configuration: its varying settings and the records of its seeds.

    ``distinct`` holds its values of the settings that vary across the sweep (component
    names aside, and leaving out settings it does not have); they label it.
    """

    settings: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    distinct: dict[str, Any] = field(default_factory=dict)

    def label(self, names: Sequence[str] = NAME_KEYS) -> str:
        """``objective/guide/model (key=value, ...)`` with only the given name keys."""
        text = "/".join(str(self.settings[key]) for key in names)
        if self.distinct:
            text += " (" + ", ".join(f"{k}={v}" for k, v in self.distinct.items()) + ")"
        return text

    @property
    def objective(self) -> Any:
        return self.records[0]["components"]["objective"]

    def ok(self) -> list[dict[str, Any]]:
        return [record for record in self.records if record["status"] == "ok"]

    def counts(self) -> str:
        """``ok/diverged/failed`` run counts."""
        statuses = [r["status"] for r in self.records]
        return "/".join(str(statuses.count(s)) for s in ("ok", "diverged", "failed"))

    @property
    def converged(self) -> bool | None:
        """False if any finished run's certificate says it did not arrive, True if every
        one says it did, None where records carry no certificate (or it was unsure)."""
        verdicts = [(record.get("fit") or {}).get("converged") for record in self.ok()]
        if False in verdicts:
            return False
        return True if verdicts and all(v is True for v in verdicts) else None

    def values(self, key: str, section: str) -> dict[Any, float]:
        """Metric ``key`` by seed over the runs that finished."""
        values = {}
        for record in self.ok():
            value = record.get(section, {}).get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                values[record["seed"]] = float(value)
        return values


def _row_settings(record: dict[str, Any]) -> dict[str, Any]:
    """A record's settings; a fitter other than ``svi`` is the row's method and takes the
    objective's place (its options as ``objective.*``), since it uses no objective."""
    tuned = set((record.get("tuning") or {}).get("values", {}))
    config = dict(record["config"])
    fitter = config.pop("fitter", None) or {"name": "svi"}
    if fitter.get("name", "svi") != "svi":
        config["objective"] = fitter
        config.pop("optim", None)
    return {
        key: repr(value) if isinstance(value, list) else value
        for key, value in flatten(config)
        if key.split(".")[0] not in IGNORED_KEYS and key not in tuned
    }


def group_records(records: Sequence[dict[str, Any]]) -> tuple[list[Row], list[str]]:
    """Rows keyed by every setting that varies across the sweep (seed aside); the
    ``trace`` rows first."""
    flats = [_row_settings(record) for record in records]
    keys = sorted({key for flat in flats for key in flat})
    varying = list(NAME_KEYS) + [
        k for k in keys if k not in NAME_KEYS and len({repr(flat.get(k)) for flat in flats}) > 1
    ]
    rows: dict[tuple, Row] = {}
    for record, flat in zip(records, flats, strict=True):
        settings = {key: flat.get(key) for key in varying}
        key = tuple(repr(settings[k]) for k in varying)
        rows.setdefault(key, Row(settings)).records.append(record)
    for row in rows.values():
        row.distinct = {
            key.split(".", 1)[1] if key.startswith("objective.") else key: value
            for key, value in row.settings.items()
            if key not in NAME_KEYS and value is not None and _labels(key, row, rows.values())
        }
    ordered = sorted(rows.values(), key=lambda r: (r.objective != REFERENCE_OBJECTIVE, r.label()))
    return ordered, varying


def _labels(key: str, row: Row, rows: Iterable[Row]) -> bool:
    """Whether ``key`` tells ``row`` apart: any setting but an objective's own, which
    labels a row only where it varies among rows of that objective (the objective's name
    already says ``trace`` has no ``alpha``), or is its particle count."""
    if not key.startswith("objective.") or key == "objective.num_particles":
        return True
    same = [r for r in rows if r.settings["objective.name"] == row.settings["objective.name"]]
    return len({repr(r.settings[key]) for r in same}) > 1


def reference_row(row: Row, rows: Sequence[Row]) -> Row | None:
    """The ``trace`` row that differs from ``row`` only in objective settings."""

    def context(r: Row) -> dict[str, Any]:
        return {k: v for k, v in r.settings.items() if not k.startswith("objective.")}

    candidates = [
        r for r in rows if r.objective == REFERENCE_OBJECTIVE and context(r) == context(row)
    ]
    candidates.sort(key=lambda r: r.settings.get("objective.num_particles") or 0)
    return candidates[0] if candidates else None
