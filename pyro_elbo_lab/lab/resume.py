"""Resuming a sweep: a run is known by the hash of its resolved config.

Two runs with the same hash compute the same thing (the seed is part of the config);
settings that do not change a run's numbers (progress bars, threads, trackers, where
a sweep resumes, how its values were tuned) are left out of the hash. A sweep resumed
with ``resume=DIR`` runs the configurations of DIR that have no ``ok`` record: the
missing ones and the failed or diverged ones again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

#: top-level keys that never change a run's numbers
UNHASHED_KEYS = frozenset(
    {"progress_bar", "num_threads", "tracker", "resume", "tune", "tuning", "hydra"}
)


def config_hash(config: Mapping[str, Any]) -> str:
    """A short, stable hash of a resolved config (a plain mapping), ignoring
    :data:`UNHASHED_KEYS`."""
    kept = {key: value for key, value in config.items() if key not in UNHASHED_KEYS}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def latest_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reported runs: tuning trials left out, and of the runs that share a hash the
    last ``ok`` one (else the last one), so a resumed sweep reports each run once."""
    chosen: dict[str, dict[str, Any]] = {}
    unhashed = []
    for record in records:
        if record.get("role") == "tuning":
            continue
        key = record.get("config_hash")
        if key is None:
            unhashed.append(record)
            continue
        previous = chosen.get(key)
        if previous is None or _rank(record) >= _rank(previous):
            chosen[key] = record
    return unhashed + list(chosen.values())


def ok_hashes(records: Iterable[dict[str, Any]]) -> set[str]:
    """Hashes of the runs that finished ``ok``."""
    return {r["config_hash"] for r in records if r["status"] == "ok" and r.get("config_hash")}


def _rank(record: dict[str, Any]) -> tuple[bool, str]:
    return record["status"] == "ok", record.get("finished_at") or ""
