r"""A step size that decays with the budget spent, so constant-step noise does not set
the floor a run converges to.

With a constant step size, stochastic gradients leave the iterates in a noise ball
whose size grows with the step (Robbins & Monro 1951 take steps that decay to zero);
a step tuned for a fixed budget trades that noise against speed, so a ``Trace_ELBO``
run tuned for equal cost would end still descending. Here the step of every
parameter decays geometrically in the fraction :math:`f` of the budget spent,

.. math::  \eta(f) = \eta_0 \, r^{f}, \qquad r = \texttt{final\_lr\_fraction},

the same schedule in model evaluations, steps or seconds whatever the objective's
cost per step. It multiplies whatever the optimiser does itself (``ClippedAdam``'s
``lrd``).
"""

from __future__ import annotations

import pyro.optim


class BudgetDecay:
    """Scales every learning rate of a Pyro optimiser to :math:`r^f` of where it began."""

    def __init__(self, optim: pyro.optim.PyroOptim, final_lr_fraction: float) -> None:
        self.optim = optim
        self.final_lr_fraction = final_lr_fraction
        self.factor = 1.0

    def update(self, fraction_spent: float) -> None:
        """Set the step sizes for ``fraction_spent`` of the budget (clipped to [0, 1])."""
        factor = self.final_lr_fraction ** min(max(fraction_spent, 0.0), 1.0)
        for optimizer in self.optim.optim_objs.values():
            for group in optimizer.param_groups:
                group["lr"] *= factor / self.factor
        self.factor = factor
