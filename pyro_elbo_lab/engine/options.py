r"""The options objectives take, with defaults and checks in one place: Pyro's ELBO
keywords (every objective of the lab takes them) and the engine's own."""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from dataclasses import dataclass
from typing import Any

from pyro_elbo_lab.errors import ConfigError, require, require_positive_int


@dataclass(frozen=True, kw_only=True)
class PyroELBOOptions:
    """The keywords of ``pyro.infer.ELBO.__init__``, with Pyro's meaning, so that an
    objective of ours replaces ``Trace_ELBO(num_particles=8, vectorize_particles=True,
    max_plate_nesting=1)`` in a Pyro program keyword for keyword.

    :param num_particles: K, particles per step.
    :param max_plate_nesting: the model's plate depth (None, or Pyro's ``inf``: guessed
        on first use).
    :param max_iarange_nesting: Pyro's deprecated name of ``max_plate_nesting`` (taken
        with Pyro's deprecation warning).
    :param vectorize_particles: draw the K particles in one vectorised pass.
    :param strict_enumeration_warning: Pyro warns when an enumerating ELBO finds nothing
        to enumerate.
    :param ignore_jit_warnings, jit_options: read by Pyro's ``Jit*`` classes alone.
    :param retain_graph: ``loss_and_grads`` keeps the autograd graph after backward.
    :param tail_adaptive_beta: read by ``TraceTailAdaptive_ELBO`` alone.
    """

    num_particles: int = 1
    max_plate_nesting: int | float | None = None
    max_iarange_nesting: int | None = None
    vectorize_particles: bool = False
    strict_enumeration_warning: bool = True
    ignore_jit_warnings: bool = False
    jit_options: dict | None = None
    retain_graph: bool | None = None
    tail_adaptive_beta: float = -1.0

    def __post_init__(self) -> None:
        require_positive_int("objective.num_particles", self.num_particles)
        if self.max_iarange_nesting is not None:
            warnings.warn(
                "max_iarange_nesting is deprecated; use max_plate_nesting instead",
                DeprecationWarning,
                stacklevel=4,
            )
            if self.max_plate_nesting is None:
                object.__setattr__(self, "max_plate_nesting", self.max_iarange_nesting)
            object.__setattr__(self, "max_iarange_nesting", None)
        if self.max_plate_nesting == math.inf:  # Pyro's "guess it"
            object.__setattr__(self, "max_plate_nesting", None)
        if self.max_plate_nesting is not None:
            require_positive_int("objective.max_plate_nesting", self.max_plate_nesting, minimum=0)
        for name in ("vectorize_particles", "strict_enumeration_warning", "ignore_jit_warnings"):
            _require_bool(self, name)
        require(
            self.retain_graph is None or isinstance(self.retain_graph, bool),
            f"objective.retain_graph must be true, false or null, got {self.retain_graph!r}",
        )
        require(
            self.jit_options is None or isinstance(self.jit_options, dict),
            f"objective.jit_options must be a mapping, got {self.jit_options!r}",
        )

    @classmethod
    def of(cls, owner: str, defaults: dict[str, Any], given: dict[str, Any]):
        """Options from ``given`` over ``defaults``; unknown names fail naming ``owner``."""
        unknown = set(given) - set(cls.names())
        if unknown:
            raise ConfigError(
                f"{owner} has no parameter '{sorted(unknown)[0]}'; its options are: "
                f"{', '.join(cls.names())}"
            )
        return cls(**{**defaults, **given})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def type_hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    def pyro_keywords(self) -> dict[str, Any]:
        """The keywords as ``pyro.infer.ELBO.__init__`` takes them (its ``inf`` depth)."""
        names = [name for name in PyroELBOOptions.names() if name != "max_iarange_nesting"]
        keywords = {name: getattr(self, name) for name in names}
        if self.max_plate_nesting is None:
            keywords["max_plate_nesting"] = math.inf
        return keywords


@dataclass(frozen=True, kw_only=True)
class EngineOptions(PyroELBOOptions):
    """How an objective on the engine runs its particles: Pyro's ELBO keywords
    (:class:`PyroELBOOptions`) and the engine's own.

    :param vectorize_particles: True, the engine's way (one pass, no Python loop over
        particles); False is taken with one particle, where there is nothing to
        vectorise, and refused with more.
    :param per_datapoint: form the bound per datapoint (every latent local to the data
        plate; see :class:`~pyro_elbo_lab.engine.groups.WeightGroups`).
    :param data_plate: name of the model's data plate, for ``per_datapoint`` and the
        per-datapoint weights.
    :param compile: trace model and guide once into a pure step (parameters, data,
        noise) -> (loss, gradients) and run it through ``torch.compile``
        (:mod:`~pyro_elbo_lab.engine.compiled`); models that are not static fall back to
        the eager engine with a warning saying why. (Pyro's ``jit_options`` are not
        ``torch.compile``'s; they are taken and, as by ``Trace_ELBO``, unused.)
    :param compile_options: keyword arguments for ``torch.compile`` (e.g.
        ``{"mode": "reduce-overhead"}`` for CUDA graphs on a GPU).
    """

    vectorize_particles: bool = True
    per_datapoint: bool = False
    data_plate: str = "data"
    compile: bool = False
    compile_options: dict | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("per_datapoint", "compile"):
            _require_bool(self, name)
        require(
            self.vectorize_particles or self.num_particles == 1,
            f"vectorize_particles=False with num_particles={self.num_particles}: the engine "
            "draws an objective's particles in one vectorised pass (its estimator is a "
            "function of all K at once); use vectorize_particles=True with a model that "
            "broadcasts over a batch dim left of its plates",
        )
        require(
            isinstance(self.data_plate, str) and bool(self.data_plate),
            f"objective.data_plate must be a plate name, got {self.data_plate!r}",
        )
        require(
            self.compile_options is None or isinstance(self.compile_options, dict),
            f"objective.compile_options must be a mapping, got {self.compile_options!r}",
        )


def _require_bool(options: Any, name: str) -> None:
    value = getattr(options, name)
    require(isinstance(value, bool), f"objective.{name} must be true or false, got {value!r}")
