r"""Run a program with its parameters read as other tensors, through public routes only.

Two estimators need it: the stopped-gradient pass of STL and DReG evaluates
:math:`\log q_{\bar\phi}(z)` with every variational parameter detached, and the compiled
path (:mod:`~pyro_elbo_lab.engine.compiled`) traces a step with the parameters replaced
by traced leaves. A parameter lives in one of two places a program reads it from:

- the param store, read by ``pyro.param`` (hand-written guides, and the ``PyroParam``
  attributes of a ``PyroModule``, which ``PyroModule.__getattr__`` reads through
  ``pyro.param``): Pyro messengers answer those ``param`` messages
  (:class:`ParameterValues` with a replacement, :class:`DetachedParameters` with the
  value detached);
- a module's own ``nn.Parameter`` attributes (e.g. ``AutoDiagonalNormal.loc``), which
  ``PyroModule.__getattr__`` returns itself, discarding what ``pyro.param`` returned:
  :func:`torch.func.functional_call` swaps those for the duration of the call
  (:func:`run_with_parameters`).

Neither touches Pyro's private state, and both undo themselves when the call returns.
Parameters of a module that a hand-written guide only registers with ``pyro.module``
are read by the module itself and are not replaced.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch
from pyro.distributions import constraints
from pyro.poutine.messenger import Messenger


class ParameterValues(Messenger):
    """``pyro.param(name)`` reads as ``replace(name)`` wherever that is not None.

    It answers before the store is asked, so it must sit inside any ``poutine.block``
    that hides param messages (the engine's passes have none).
    """

    def __init__(self, replace: Callable[[str], torch.Tensor | None]) -> None:
        super().__init__()
        self.replace = replace

    def _pyro_param(self, msg: dict) -> None:
        value = self.replace(msg["name"])
        if value is not None:
            msg["value"] = value


class DetachedParameters(Messenger):
    """``pyro.param`` reads as its value detached, whatever answered it (the store, or an
    outer :class:`ParameterValues`).

    The detached copy keeps the weak reference to its unconstrained parameter, so an
    enclosing ``SVI`` step that records the param site finds the live parameter (which
    the undetached pass recorded already) rather than failing on the copy.
    """

    def _pyro_post_param(self, msg: dict) -> None:
        value = msg["value"]
        detached = value.detach()
        if hasattr(value, "unconstrained"):
            detached.unconstrained = value.unconstrained
        msg["value"] = detached


class _Program(torch.nn.Module):
    """The modules a call reads parameters from, and the call, as one module for
    :func:`torch.func.functional_call`."""

    def __init__(self, modules: Sequence[torch.nn.Module], call: Callable[..., Any]) -> None:
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)
        self.call = call

    def forward(self, *args: Any) -> Any:
        return self.call(*args)


def run_with_parameters(
    call: Callable[..., Any],
    args: tuple,
    *,
    owned: Callable[[torch.Tensor], torch.Tensor | None],
    modules: Sequence[torch.nn.Module],
    stored: Callable[[str], torch.Tensor | None] | None = None,
) -> Any:
    """``call(*args)`` with each ``nn.Parameter`` p of ``modules`` read as ``owned(p)``
    and, given ``stored``, each param-store parameter read as ``stored(name)`` (a
    constrained value), where those are not None."""
    program = _Program(modules, call)
    replacements = {}
    for name, parameter in program.named_parameters():
        replacement = owned(parameter)
        if replacement is not None:
            replacements[name] = replacement
    with ParameterValues(stored) if stored is not None else contextlib.nullcontext():
        return torch.func.functional_call(program, replacements, args)


def stopped_call(call: Callable[..., Any], args: tuple, modules: Sequence[torch.nn.Module]) -> Any:
    r"""``call(*args)`` with the ``nn.Parameter`` attributes of ``modules`` detached; the
    program ``call`` runs must read its ``pyro.param`` values under
    :class:`DetachedParameters`. Together: :math:`\bar\phi` for the stopped pass.

    A module's parameters are detached as they stand (the traced leaves, when the
    compiled path has replaced the live ones)."""
    with warnings.catch_warnings():
        # pyro.module notes that the detached copies (requires_grad=False) are not
        # registered in the param store: that is the point.
        warnings.filterwarnings("ignore", message=".*was not registered in the param store")
        return run_with_parameters(
            call, args, owned=lambda parameter: parameter.detach(), modules=modules
        )


def parameter_constraints() -> dict[str, constraints.Constraint]:
    """Every param-store parameter's constraint, from the store's public state.

    ``ParamStoreDict.get_state`` strips (for pickling) the weak references to the
    unconstrained tensors that ``SVI`` reads from the values ``pyro.param`` returned;
    reading every parameter once through the store's public ``[]`` puts them back.
    """
    store = pyro.get_param_store()
    found = store.get_state()["constraints"]
    for name in found:
        store[name]
    return dict(found)


def clear_transform_caches(module: torch.nn.Module) -> None:
    """Forget what a guide's flow transforms cached from the live pass.

    A cached transform (e.g. Pyro's ``AffineAutoregressive``) answers ``log_prob(y)``
    for the y it produced from its cached x and log-scale, which carry the live
    parameters' gradients: the stopped pass would silently keep the score term.
    """
    for part in module.modules():
        if isinstance(part, torch.distributions.Transform):
            for name in list(vars(part)):
                if name.startswith("_cached_"):
                    setattr(part, name, (None, None) if name == "_cached_x_y" else None)
