"""A Monte Carlo estimate with its standard error and sample size."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Estimate:
    """``value`` ± ``std_error`` from ``num_samples`` independent draws."""

    value: float
    std_error: float
    num_samples: int

    @classmethod
    def from_draws(cls, draws: torch.Tensor) -> Estimate:
        """Mean and standard error of the mean of i.i.d. ``draws`` (1-D)."""
        draws = draws.detach().double().flatten()
        count = draws.numel()
        std_error = float(draws.std(unbiased=True)) / math.sqrt(count) if count > 1 else math.nan
        return cls(value=float(draws.mean()), std_error=std_error, num_samples=count)
