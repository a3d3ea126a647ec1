r"""``schedule=raabbvi``: fixed-step phases, each run to stationarity, then averaged.

After Welandawe, Andersen, Vehtari & Huggins (JMLR 2024, "RABVI"/"RAABBVI"): with a fixed
learning rate :math:`\gamma` the iterates settle into a noise ball around the optimum
whose size grows with :math:`\gamma`; the iterate average over the ball sits much closer.
So a run goes in phases :math:`k = 0, 1, \dots` at :math:`\gamma_k = \gamma_0\rho^k`:

1. step at :math:`\gamma_k` until the phase's iterates are stationary (their averages
   over the halves of the certificate's window agree, checked every
   :math:`W_k = W_0/\rho^k` steps: a smaller step mixes more slowly, so its window
   grows; :class:`~pyro_elbo_lab.fitters.certificate.IterateCertificate`);
2. replace the parameters by their average over that window (Polyak–Ruppert) and
   measure the symmetrised KL between this phase's averaged guide and the last one's
   (closed form for Gaussian guides);
3. stop when that KL falls below ``accuracy`` (the averages no longer move: the
   phases have reached the optimum to that accuracy), else halve the step and go on.

What is implemented of the paper: fixed-rate phases with stationarity
detection, iterate averaging, geometric step decrease (ρ = 0.5 by default) and a
termination rule on the symmetrised KL between consecutive averaged approximations. Its
cost-aware termination (the predicted KL decrease against the predicted cost of one
more phase) is replaced by this accuracy threshold; for guides without a Gaussian form
the run ends after ``max_phases`` or at the budget.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from torch.distributions import kl_divergence

from pyro_elbo_lab.errors import require, require_positive_float, require_positive_int
from pyro_elbo_lab.evaluation.exact_kl import guide_gaussian
from pyro_elbo_lab.fitters.certificate import Certificate, IterateCertificate
from pyro_elbo_lab.guides.marginals import guide_marginals

SCHEDULES = ("constant", "raabbvi")


@dataclass
class ScheduleSettings:
    """The ``schedule`` node of the lab's config."""

    kind: str = "constant"
    decrease: float = 0.5
    window: int = 200
    accuracy: float = 0.005
    max_phases: int = 8

    def __post_init__(self) -> None:
        require(
            self.kind in SCHEDULES,
            f"schedule.kind must be one of {', '.join(SCHEDULES)}, got {self.kind!r}",
        )
        require(
            isinstance(self.decrease, float | int) and 0 < self.decrease < 1,
            f"schedule.decrease must lie in (0, 1), got {self.decrease!r}",
        )
        require_positive_int("schedule.window", self.window, minimum=20)
        require_positive_float("schedule.accuracy", self.accuracy)
        require_positive_int("schedule.max_phases", self.max_phases)


class RobustSchedule:
    """Drives the learning rate of an SVI fit through RAABBVI-style phases."""

    def __init__(self, settings: ScheduleSettings, optim: Any, guide: Any, sites: list[str]):
        self.settings = settings
        self.optim = optim
        self.guide = guide
        self.sites = sites
        self.store = pyro.get_param_store()
        self.phase = 0
        self.phase_steps = 0
        #: steps per check in this phase: a step γρᵏ mixes 1/ρᵏ times slower, so the
        #: window that averages its noise away grows by 1/ρ per phase
        self.window = settings.window
        self.watch = IterateCertificate(functools.partial(guide_marginals, guide))
        self.previous: Any = None
        self.divergences: list[float] = []
        self.done: str | None = None

    def update(self, loss: float) -> str | None:
        """After one step; returns the reason once the schedule has terminated."""
        self.phase_steps += 1
        self.watch.observe(self._parameters(), loss)
        window = self.window
        if self.phase_steps % window or self.phase_steps < 2 * window:
            return None
        if not self.watch.verdict(averaged=True).converged:
            return None
        self._end_phase()
        return self.done

    def certificate(self) -> Certificate:
        """Converged when the averaged phases agree within ``accuracy``."""
        last = self.divergences[-1] if self.divergences else math.nan
        rule = f"RAABBVI: symmetrised KL between averaged phases < {self.settings.accuracy:g}"
        message = self.done or f"{self.phase} phase(s) finished; last KL {last:.3g}"
        converged = (
            None
            if not self.divergences and self.done is None
            else bool(self.divergences and last < self.settings.accuracy)
        )
        return Certificate(converged, last, rule, message)

    def _end_phase(self) -> None:
        average = self.watch.window_average()
        if average is not None:
            offset = 0
            with torch.no_grad():
                for parameter in self._parameters():
                    size = parameter.numel()
                    parameter.copy_(average[offset : offset + size].reshape(parameter.shape))
                    offset += size
        current = guide_gaussian(self.guide, self.sites)
        if current is not None and self.previous is not None:
            divergence = float(
                kl_divergence(current, self.previous) + kl_divergence(self.previous, current)
            )
            self.divergences.append(divergence)
            if divergence < self.settings.accuracy:
                self.done = (
                    f"phase {self.phase}: symmetrised KL {divergence:.3g} to the last phase's "
                    f"average < {self.settings.accuracy:g} (stationary by the iterate certificate)"
                )
                return
        self.previous = current
        self.phase += 1
        if self.phase >= self.settings.max_phases:
            self.done = f"{self.phase} phases (schedule.max_phases)"
            return
        for optimizer in self.optim.optim_objs.values():
            for group in optimizer.param_groups:
                group["lr"] *= self.settings.decrease
        self.window = math.ceil(self.window / self.settings.decrease)
        self.phase_steps = 0
        self.watch = IterateCertificate(functools.partial(guide_marginals, self.guide))

    def _parameters(self) -> list[torch.Tensor]:
        return [parameter for _, parameter in self.store.named_parameters()]
