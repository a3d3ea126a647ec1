"""Run records: one JSON per run, written atomically, the unit of reproducibility."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RECORD_FILE = "record.json"
SCHEMA_VERSION = 1


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that decide a run's numbers."""
    versions = {"python": platform.python_version()}
    for package in ("torch", "pyro-ppl", "numpy", "hydra-core", "pyro-elbo-lab"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def version_differences(
    records: Iterable[Mapping[str, Any]], installed: Mapping[str, str] | None = None
) -> list[str]:
    """One line per package whose version differs between records, or between records
    and ``installed`` (``torch: 2.13.0 (30 records), 2.14.1 (installed)``), so that a
    comparison across installs says so; [] if they all agree."""
    seen: dict[str, Counter[str]] = {}
    for record in records:
        for package, package_version in (record.get("versions") or {}).items():
            seen.setdefault(package, Counter())[package_version] += 1
    lines = []
    for package, counts in seen.items():
        labels = {v: f"{v} ({n} record{'s' * (n > 1)})" for v, n in counts.items()}
        current = (installed or {}).get(package)
        if current is not None and current not in counts:
            labels[current] = f"{current} (installed)"
        if len(labels) > 1:
            lines.append(f"{package}: " + ", ".join(labels.values()))
    return lines


def git_commit(directory: Path | None = None) -> str | None:
    """The commit of the checkout this package runs from (``+dirty`` if modified), if any."""
    cwd = directory or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted.key, leaf)`` for every leaf of a nested mapping."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, f"{name}.")
        else:
            yield name, value


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def write_record(record: dict[str, Any], directory: Path) -> Path:
    """Write ``record`` to ``directory/record.json`` atomically (temp file + rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RECORD_FILE
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".record-", suffix=".json")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(_json_safe(record), handle, indent=2, sort_keys=True, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_records(directory: Path) -> Iterator[dict[str, Any]]:
    """Every readable record under ``directory`` (unreadable ones are skipped)."""
    for path in sorted(directory.rglob(RECORD_FILE)):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        record["path"] = str(path.parent)
        yield record
