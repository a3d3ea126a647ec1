r"""The options every objective on the engine takes, with defaults and checks in one place."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from pyro_elbo_lab.errors import ConfigError, require, require_positive_int


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    """How an objective runs its particles.

    :param num_particles: K, particles per step (one vectorised pass; the model and
        guide must broadcast over a batch dim left of their plates).
    :param max_plate_nesting: the model's plate depth (guessed on first use if None).
    :param per_datapoint: form the bound per datapoint (every latent local to the data
        plate; see :class:`~pyro_elbo_lab.engine.groups.WeightGroups`).
    :param data_plate: name of the model's data plate, for ``per_datapoint`` and the
        per-datapoint weights.
    :param compile: trace model and guide once into a pure step (parameters, data,
        noise) -> (loss, gradients) and run it through ``torch.compile``
        (:mod:`~pyro_elbo_lab.engine.compiled`); models that are not static fall back to
        the eager engine with a warning saying why.
    :param compile_options: keyword arguments for ``torch.compile`` (e.g.
        ``{"mode": "reduce-overhead"}`` for CUDA graphs on a GPU).
    """

    num_particles: int = 1
    max_plate_nesting: int | None = None
    per_datapoint: bool = False
    data_plate: str = "data"
    compile: bool = False
    compile_options: dict | None = None

    def __post_init__(self) -> None:
        require_positive_int("objective.num_particles", self.num_particles)
        if self.max_plate_nesting is not None:
            require_positive_int("objective.max_plate_nesting", self.max_plate_nesting, minimum=0)
        for name in ("per_datapoint", "compile"):
            value = getattr(self, name)
            require(
                isinstance(value, bool), f"objective.{name} must be true or false, got {value!r}"
            )
        require(
            isinstance(self.data_plate, str) and bool(self.data_plate),
            f"objective.data_plate must be a plate name, got {self.data_plate!r}",
        )
        require(
            self.compile_options is None or isinstance(self.compile_options, dict),
            f"objective.compile_options must be a mapping, got {self.compile_options!r}",
        )

    @classmethod
    def of(cls, owner: str, defaults: dict[str, Any], given: dict[str, Any]) -> EngineOptions:
        """Options from ``given`` over ``defaults``; unknown names fail naming ``owner``."""
        unknown = set(given) - set(cls.names())
        if unknown:
            raise ConfigError(
                f"{owner} has no parameter '{sorted(unknown)[0]}'; its engine options are: "
                f"{', '.join(cls.names())}"
            )
        return cls(**{**defaults, **given})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def type_hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)
