"""One fused optimiser over all parameters, for steps where Python overhead dominates."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from pyro.optim import PyroOptim


class FusedAdam(PyroOptim):
    r"""Adam (Kingma & Ba 2015) over every parameter SVI hands it, as one multi-tensor step.

    Pyro's ``pyro.optim.Adam`` keeps one ``torch.optim.Adam`` per parameter and steps
    them one by one in Python; with a compiled loss (``objective.compile=true``) on a
    small model that loop costs more than the loss. Here all parameters share one
    ``torch.optim.Adam(foreach=True)`` (new parameters join as a new group the step
    they first appear), with the same update rule and defaults, so a run with it matches
    one with ``pyro.optim.Adam`` to float rounding.

    :param optim_args: keyword arguments of ``torch.optim.Adam`` (``lr``, ``betas``, ...).
    """

    def __init__(self, optim_args: dict[str, Any]) -> None:
        self.pt_optim_args = dict(optim_args)
        self._optimizer: torch.optim.Adam | None = None
        self._known: set[int] = set()

    def __call__(self, params: Iterable[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        """One Adam step on ``params`` (the ones with gradients), then zero their grads."""
        params = [p for p in params if p.grad is not None]
        new = [p for p in params if id(p) not in self._known]
        if new:
            if self._optimizer is None:
                self._optimizer = torch.optim.Adam(new, foreach=True, **self.pt_optim_args)
            else:
                self._optimizer.add_param_group({"params": new})
            self._known.update(id(p) for p in new)
        if self._optimizer is not None:
            self._optimizer.step()
            self._optimizer.zero_grad(set_to_none=True)

    def get_state(self) -> dict:
        return {} if self._optimizer is None else self._optimizer.state_dict()

    def set_state(self, state_dict: dict) -> None:
        if self._optimizer is not None:
            self._optimizer.load_state_dict(state_dict)
