"""Errors that tell a user what to change."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from numbers import Real
from typing import Any

import torch


class ConfigError(ValueError):
    """A configuration value, name or combination that cannot work; the message names the fix."""


def first_line(error: BaseException) -> str:
    """An error's message cut to its first line (Pyro appends a trace's shapes to errors
    raised inside it), or its type's name when it has no message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def require_positive_int(name: str, value: object, minimum: int = 1) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{name} must be an integer >= {minimum}, got {value!r}",
    )


def require_count_fields(
    settings: Any, prefix: str, optional: Collection[str] = (), skip: Collection[str] = ()
) -> None:
    """Every field of a settings dataclass an integer >= 1 (>= 0 for those in ``optional``),
    named ``prefix.field`` in the message; fields in ``skip`` are checked elsewhere."""
    for field in dataclasses.fields(settings):
        if field.name not in skip:
            minimum = 0 if field.name in optional else 1
            require_positive_int(f"{prefix}.{field.name}", getattr(settings, field.name), minimum)


def require_positive_float(name: str, value: object) -> None:
    require(
        isinstance(value, Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0,
        f"{name} must be a finite number > 0, got {value!r}",
    )


def require_finite_tensor(name: str, tensor: torch.Tensor) -> None:
    """Reject data with NaN or inf entries, saying how many and where the first one is."""
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0].tolist())
        raise ConfigError(
            f"{name} contains {int(bad.sum())} NaN/inf value(s) (first at index {first}); "
            "clean or impute the data before fitting"
        )
