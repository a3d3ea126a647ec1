"""Name → component registries for objectives, guides and models.

Our own components register with a decorator::

    @objectives.register("iwae")
    class IWAE(ParticleObjective): ...

Third-party packages register theirs without a fork through Python entry points, one
group per kind (``pyro_elbo_lab.objectives``, ``pyro_elbo_lab.guides``,
``pyro_elbo_lab.models``); the entry point's name is the component name and its value
the factory::

    [project.entry-points."pyro_elbo_lab.objectives"]
    my_elbo = "my_package.elbos:MyELBO"

This module imports nothing from the rest of the package at import time, so every
layer can register into it; the built-in components are imported on first lookup.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal

from pyro_elbo_lab.errors import ConfigError

_BUILTIN_MODULES = (
    "pyro_elbo_lab.objectives",
    "pyro_elbo_lab.guides",
    "pyro_elbo_lab.models",
    "pyro_elbo_lab.fitters",
)


@dataclass(frozen=True)
class Component:
    """A registered factory with its name, one-line description and traits.

    Traits are facts about a guide or model the lab reads before building it, e.g. a
    guide's ``point_estimate`` or a model's ``exact_log_evidence``. An objective states
    its facts (``requires_reparam``, ``enumerates``, ``reports_loss``) on the built
    instance, since they can depend on its options: one channel for each.
    """

    name: str
    kind: str
    factory: Callable[..., Any]
    description: str
    traits: Mapping[str, Any] = field(default_factory=dict)

    def trait(self, key: str, default: Any = False) -> Any:
        return self.traits.get(key, default)


class Registry:
    """Components of one kind, looked up by name."""

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._components: dict[str, Component] = {}
        self._loaded = False

    def register(
        self, name: str, *, description: str | None = None, **traits: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator that registers ``factory`` under ``name``; returns it unchanged."""

        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, factory, description=description, **traits)
            return factory

        return decorator

    def add(
        self, name: str, factory: Callable[..., Any], *, description: str | None = None, **traits
    ) -> Component:
        """Register ``factory`` under ``name``; a second registration of a name is an error."""
        if name in self._components and self._components[name].factory is not factory:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        component = Component(
            name=name,
            kind=self.kind,
            factory=factory,
            description=description or _first_docstring_line(factory),
            traits=dict(traits),
        )
        self._components[name] = component
        return component

    def get(self, name: str) -> Component:
        """The component registered as ``name``; unknown names list the valid ones."""
        self._ensure_loaded()
        try:
            return self._components[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} '{name}'; registered {self.kind}s are: "
                f"{', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._components)

    def __iter__(self) -> Iterator[Component]:
        return iter(self.get(name) for name in self.names())

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._components

    def build(self, name: str, *args: Any, **params: Any) -> Any:
        """Call the factory of ``name`` after checking ``params`` against its signature.

        Unknown parameter names and values of the wrong type raise :class:`ConfigError`
        naming the component, the parameter and what it accepts.
        """
        component = self.get(name)
        check_parameters(
            f"{self.kind} '{name}'", component.factory, params, num_positional=len(args)
        )
        return component.factory(*args, **params)

    def build_example(self, name: str, *args: Any, **params: Any) -> Any:
        """:meth:`build` with the component's ``example_params`` trait under ``params``: a
        component that needs configuration (e.g. ``model=custom``'s target) states a
        working example, so the registry-wide checks can build it like the rest."""
        return self.build(name, *args, **{**self.get(name).trait("example_params", {}), **params})

    def example_overrides(self, name: str) -> list[str]:
        """The command-line overrides that select ``name`` with its example parameters
        (and, for a model that states one, the ``example_guide`` it needs)."""
        component = self.get(name)
        example = component.trait("example_params", {})
        guide = component.trait("example_guide", None)
        return [
            f"{self.kind}={name}",
            *(f"{self.kind}.{key}={value}" for key, value in example.items()),
            *([f"guide={guide}"] if guide else []),
        ]

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        for entry_point in entry_points(group=self.entry_point_group):
            if entry_point.name not in self._components:
                self.add(entry_point.name, entry_point.load())


def parameter_names(factory: Callable[..., Any]) -> list[str]:
    """The keyword parameters ``factory`` accepts: its signature's, and the fields of the
    options dataclass it declares as ``options_type`` (taken through ``**options``)."""
    signature = inspect.signature(factory)
    names = [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    options_type = getattr(factory, "options_type", None)
    if options_type is not None:
        names += [
            field.name for field in dataclasses.fields(options_type) if field.name not in names
        ]
    return names


def check_parameters(
    owner: str, factory: Callable[..., Any], params: Mapping[str, Any], num_positional: int = 0
) -> None:
    """Check ``params`` against the keyword parameters of ``factory`` and their type hints
    (those of its ``options_type`` too, see :func:`parameter_names`)."""
    signature = inspect.signature(factory)
    options_type = getattr(factory, "options_type", None)
    accepts_any = options_type is None and any(
        p.kind is p.VAR_KEYWORD for p in signature.parameters.values()
    )
    positional = [
        p.name
        for p in list(signature.parameters.values())[:num_positional]
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    keyword_parameters = [name for name in parameter_names(factory) if name not in positional]
    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except (NameError, TypeError):
        hints = {}
    if options_type is not None:
        hints = {**typing.get_type_hints(options_type), **hints}
    for key, value in params.items():
        if key not in keyword_parameters:
            if accepts_any:
                continue
            raise ConfigError(
                f"{owner} has no parameter '{key}'; it accepts: "
                f"{', '.join(keyword_parameters) or 'no parameters'}"
            )
        hint = hints.get(key)
        if hint is not None and not _matches(value, hint):
            raise ConfigError(
                f"{owner}: parameter '{key}' must be {_describe(hint)}, got {value!r}"
            )


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence):
        return isinstance(value, list | tuple) or type(value).__name__ == "ListConfig"
    return True


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _first_docstring_line(factory: Callable[..., Any]) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


objectives = Registry("objective", "pyro_elbo_lab.objectives")
guides = Registry("guide", "pyro_elbo_lab.guides")
models = Registry("model", "pyro_elbo_lab.models")
fitters = Registry("fitter", "pyro_elbo_lab.fitters")

REGISTRIES: dict[str, Registry] = {
    "objective": objectives,
    "guide": guides,
    "model": models,
    "fitter": fitters,
}
