"""Choosing the torch device a run lives on."""

from __future__ import annotations

import torch

from pyro_elbo_lab.errors import ConfigError


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; other names are checked before use.

    Asking for CUDA on a machine without it raises :class:`ConfigError` naming the fix.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device '{name}' is not a torch device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={name} but CUDA is not available on this machine; use device=cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={name} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type != "cpu":
        raise ConfigError(f"device '{name}' is not supported; use auto, cpu, cuda or cuda:N")
    return device
