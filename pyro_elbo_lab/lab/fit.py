"""The SVI loop: fit for a step budget, stop at the first non-finite loss."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer import SVI
from tqdm.auto import tqdm

from pyro_elbo_lab.engine import CompiledSVI
from pyro_elbo_lab.lab.components import Components
from pyro_elbo_lab.lab.console import interactive
from pyro_elbo_lab.objectives.pyro_builtin import scalar_loss
from pyro_elbo_lab.optim import FusedAdam

PARAMETER_CHECK_EVERY = 25


@dataclass
class FitResult:
    """What the loop did: losses per step, whether it diverged, how long it took."""

    losses: list[float] = field(default_factory=list)
    diverged: bool = False
    wall_time_s: float = 0.0
    #: time of the steps after the first, which pays one-off set-up (guide prototype, caches)
    steady_time_s: float = 0.0

    @property
    def steps_completed(self) -> int:
        return len(self.losses)

    @property
    def steps_per_second(self) -> float:
        """Steps per second after the first step (the first sets the guide up)."""
        steady_steps = self.steps_completed - 1
        return steady_steps / self.steady_time_s if steady_steps > 0 else math.nan

    def final_loss(self) -> float:
        """Mean loss over the last 10% of steps (at least one), less noisy than the last."""
        finite = [loss for loss in self.losses if math.isfinite(loss)]
        if not finite:
            return math.nan
        tail = max(1, len(finite) // 10)
        return sum(finite[-tail:]) / tail

    def history(self, num_points: int) -> dict[str, list[float]]:
        """The finite losses averaged into at most ``num_points`` consecutive bins."""
        count = len(self.losses)
        if count == 0:
            return {"step": [], "loss": []}
        bins = min(num_points, count)
        losses = torch.tensor(self.losses, dtype=torch.float64)
        edges = torch.linspace(0, count, bins + 1).round().long().tolist()
        steps, means = [], []
        for start, stop in itertools.pairwise(edges):
            window = losses[start:stop]
            window = window[window.isfinite()]
            if len(window):  # objectives that report no loss leave no points
                steps.append((start + stop - 1) / 2)
                means.append(float(window.mean()))
        return {"step": steps, "loss": means}


def _parameters_finite() -> bool:
    values = [value.detach() for value in pyro.get_param_store().values()]
    return not values or bool(torch.stack([value.isfinite().all() for value in values]).all())


def _svi(components: Components) -> SVI:
    """SVI, or :class:`CompiledSVI` (the Adam step compiled with the loss) when the
    objective is compiled and the optimiser is ``fused_adam``."""
    objective, optim = components.objective, components.optim
    compiled = getattr(objective, "compiled", None) is not None
    if compiled and isinstance(optim, FusedAdam) and not objective.carries_state:
        return CompiledSVI(components.model, components.guide, optim, objective)
    return SVI(components.model, components.guide, optim, loss=objective)


def fit(
    components: Components,
    steps: int,
    progress_bar: bool = True,
    label: str = "",
    on_step: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Run ``steps`` SVI steps on the training data; stop early when the fit diverges.
    ``on_step(step, loss)`` sees every step's loss (e.g. a tracker).

    Divergence: a non-finite loss (objectives whose registry entry says
    ``reports_loss=False``, such as tail-adaptive, record NaN instead) or non-finite
    parameters, checked every ``PARAMETER_CHECK_EVERY`` steps and at the end.
    """
    svi = _svi(components)
    reports_loss = getattr(components.objective, "reports_loss", True)
    data = components.model.train_data
    result = FitResult()
    show = progress_bar and interactive()
    start = time.perf_counter()
    first_step_done = start
    with tqdm(total=steps, disable=not show, desc=label, leave=False) as bar:
        for step in range(steps):
            step_value = svi.step(data)
            loss = scalar_loss(step_value) if reports_loss else math.nan
            result.losses.append(loss)
            if on_step is not None:
                on_step(step, loss)
            if step == 0:
                first_step_done = time.perf_counter()
            finite = math.isfinite(loss) if reports_loss else True
            if finite and (step % PARAMETER_CHECK_EVERY == 0 or step == steps - 1):
                finite = _parameters_finite()
            if not finite:
                result.diverged = True
                break
            if show and step % 25 == 0:
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            bar.update()
    end = time.perf_counter()
    result.wall_time_s = end - start
    result.steady_time_s = end - first_step_done
    return result
