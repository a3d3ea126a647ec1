r"""SVI whose whole update, loss, gradients and Adam step, is one compiled graph.

With ``objective.compile=true`` the loss and its gradients already run as one compiled
graph (:mod:`pyro_elbo_lab.engine.compiled`); what is left of a step on a small
model is Python: Pyro's SVI bookkeeping, autograd's hand-over of the gradients and the
optimiser's per-tensor kernels. :class:`CompiledSVI` traces the objective's pure step
together with Adam's update,

.. math::

    (\phi, m, v, t, x, \varepsilon) \mapsto (\mathcal L, \phi', m', v'), \qquad
    m' = \beta_1 m + (1-\beta_1) g,\ v' = \beta_2 v + (1-\beta_2) g^2,\
    \phi' = \phi - \eta \frac{m' / (1-\beta_1^{t})}{\sqrt{v' / (1-\beta_2^{t})} + \epsilon},

(Kingma & Ba 2015, as ``torch.optim.Adam`` computes it), compiles that, and writes the
new parameters back in place: the way NumPyro jit-compiles its whole update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch
from pyro.infer import SVI

from pyro_elbo_lab.engine.compiled import (
    CheckedGraph,
    CompiledPath,
    TracedStep,
    cuda_devices,
    record_graph,
)
from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.optim import FusedAdam

SUPPORTED_ADAM_OPTIONS = frozenset({"lr", "betas", "eps", "weight_decay"})


def adam_update(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    first: Sequence[torch.Tensor],
    second: Sequence[torch.Tensor],
    step: torch.Tensor,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """One Adam step, functional: ``step`` is the 1-based count after this update."""
    beta1, beta2 = betas
    new_params, new_first, new_second = [], [], []
    for param, grad, m, v in zip(params, grads, first, second, strict=True):
        if weight_decay:
            grad = grad + weight_decay * param
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        m_hat = m / (1 - beta1**step)
        v_hat = v / (1 - beta2**step)
        new_params.append(param - lr * m_hat / (v_hat.sqrt() + eps))
        new_first.append(m)
        new_second.append(v)
    return new_params, new_first, new_second


class CompiledSVI(SVI):
    """``pyro.infer.SVI`` with the update compiled into the objective's traced step.

    Needs an engine objective built with ``compile=True`` and :class:`FusedAdam` (plain
    Adam options: ``lr``, ``betas``, ``eps``, ``weight_decay``). The first step for a new
    argument signature runs as plain SVI (it sets up the guide and traces the loss);
    later steps run the compiled update. Where the objective fell back to the eager
    engine, so does this. Adam's moments carry over from the first step, so the run
    follows ``SVI`` with ``FusedAdam`` to float rounding.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        optim: FusedAdam,
        loss: Any,
    ) -> None:
        if not isinstance(getattr(loss, "compiled", None), CompiledPath):
            raise ConfigError(
                "CompiledSVI needs an objective of this package built with compile=true"
            )
        if loss.carries_state:
            raise ConfigError(
                f"CompiledSVI does not carry {type(loss).__name__}'s state between steps; use "
                "SVI (its loss still runs compiled) or another optimiser than fused_adam"
            )
        if not isinstance(optim, FusedAdam):
            raise ConfigError("CompiledSVI needs optim=fused_adam (pyro_elbo_lab.optim.FusedAdam)")
        unsupported = set(optim.pt_optim_args) - SUPPORTED_ADAM_OPTIONS
        if unsupported:
            raise ConfigError(
                f"CompiledSVI compiles plain Adam; optim_args {sorted(unsupported)} are not "
                f"supported (use {sorted(SUPPORTED_ADAM_OPTIONS)})"
            )
        super().__init__(model, guide, optim, loss)
        self.objective = loss  # SVI keeps only its loss methods
        self._updates: dict[int, tuple[Callable, list[torch.Tensor], list[torch.Tensor]]] = {}
        self._count = torch.zeros(())

    def step(self, *args: Any, **kwargs: Any) -> float:
        """One update; returns the loss (as ``SVI.step``)."""
        compiled = self.objective.compiled
        state = self.objective.compile_state()
        traced, tensors = compiled.step_for(self.model, self.guide, args, kwargs, state)
        if traced is None:  # not built yet (this step builds it) or not static (eager)
            loss = super().step(*args, **kwargs)
            self._count += 1
            return loss
        store = dict(pyro.get_param_store().named_parameters())
        params = [store[name] for name in traced.param_names]
        if id(traced) not in self._updates:
            self._updates[id(traced)] = self._build(traced, params, tensors)
        update, first, second = self._updates[id(traced)]
        with torch.no_grad():
            noise = traced.noise()
            (loss,) = update(*params, *first, *second, self._count, *tensors, *noise)
        return float(loss)

    def compiled_graphs(self) -> list[CheckedGraph]:
        """The graphs that run compiled: the updates, and the objective's own steps."""
        updates = [graph for graph, _, _ in self._updates.values() if graph.compiled is not None]
        return updates + self.objective.compiled.compiled_graphs()

    def _build(
        self, traced: TracedStep, params: list[torch.Tensor], tensors: list[torch.Tensor]
    ) -> tuple[Callable, list[torch.Tensor], list[torch.Tensor]]:
        options = dict(self.optim.pt_optim_args)
        count = len(params)
        pure = traced.traced

        def update(*inputs: torch.Tensor) -> tuple[torch.Tensor]:
            # parameters, moments and the step count are written in place: the compiled
            # kernels store into them, with no outputs to allocate or copy back
            param, first, second = (inputs[i * count : (i + 1) * count] for i in range(3))
            step, rest = inputs[3 * count], inputs[3 * count + 1 :]
            loss, *grads = pure(*param, *rest)[: count + 1]
            step.copy_(step + 1)
            new = adam_update(param, grads, first, second, step, **options)
            for targets, values in zip((param, first, second), new, strict=True):
                for target, value in zip(targets, values, strict=True):
                    target.copy_(value)
            return (loss,)

        first, second = self._moments(params)
        with torch.no_grad(), torch.random.fork_rng(devices=cuda_devices([*params, *tensors])):
            example = [*params, *first, *second, self._count, *tensors, *traced.noise()]
            graph = record_graph(update, [t.detach() for t in example], "fake")
        return CheckedGraph(graph, self.objective.compiled.compile_options, "update"), first, second

    def _moments(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Adam's running moments of ``params`` from the eager steps (zeros if none)."""
        state = self.optim._optimizer.state if self.optim._optimizer is not None else {}
        first, second = (
            [state.get(p, {}).get(key, torch.zeros_like(p)).detach().clone() for p in params]
            for key in ("exp_avg", "exp_avg_sq")
        )
        return first, second
