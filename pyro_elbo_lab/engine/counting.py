"""Model evaluations: the unit of cost for comparing objectives at equal budget.

One *model evaluation* is one joint density log p(x, z) at one particle, the quantity
whose gradient every objective here takes: a pass of the model over a vectorised
particle plate of size K counts K, a Python loop over K particles (Pyro's
``Trace_ELBO(num_particles=K)``) counts K too. Every pass through the wrapped model counts,
so an objective that must guess the plate depth (no ``max_plate_nesting`` given; the
lab always gives it) pays one unvectorised pass on its first step. The guide's
set-up pass and the evaluation do not run the wrapped model and are not counted; a
pass that :func:`torch.fx` traces for compilation is not an evaluation either (the
compiled steps that replay it are counted by the caller).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pyro.poutine.messenger import Messenger
from torch.fx.experimental.proxy_tensor import get_proxy_mode

from pyro_elbo_lab.engine.program import PARTICLE_PLATE


class _ParticleWidth(Messenger):
    """Records the widest particle plate any sample site of one model pass sits in."""

    def __init__(self) -> None:
        super().__init__()
        self.particles = 1

    def _postprocess_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "sample":
            return
        width = math.prod(
            frame.size for frame in msg["cond_indep_stack"] if frame.name == PARTICLE_PLATE
        )
        self.particles = max(self.particles, width)


class CountedModel:
    """``model`` that counts its evaluations (:attr:`count`) as SVI calls it.

    Pass it where the model goes (``SVI(CountedModel(model), guide, ...)``); it forwards
    the call and adds the number of particles of that pass.
    """

    def __init__(self, model: Callable[..., Any]) -> None:
        self.model = model
        self.count = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if get_proxy_mode() is not None:  # traced for compilation, not evaluated
            return self.model(*args, **kwargs)
        with _ParticleWidth() as width:
            result = self.model(*args, **kwargs)
        self.count += width.particles
        return result
