"""Writing a guide's parameters by their constrained values, in place."""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import transform_to


def set_param(module: Any, name: str, value: torch.Tensor) -> None:
    """Set the constrained value of ``module``'s PyroParam ``name`` in place (through its
    unconstrained tensor, which the param store holds too)."""
    constraint = module._pyro_params[name][0]
    raw = getattr(module, f"{name}_unconstrained")
    raw.copy_(transform_to(constraint).inv(value.to(raw.dtype)).expand_as(raw))


def write_cholesky(guide: Any, scale_tril: torch.Tensor) -> None:
    """``guide.scale`` × ``guide.scale_tril`` (unit lower) = ``scale_tril``, in place."""
    diagonal = scale_tril.diagonal()
    set_param(guide, "scale", diagonal)
    set_param(guide, "scale_tril", scale_tril / diagonal[:, None])
