r"""Guides for sampled discrete latents of a data plate (e.g. a mixture's assignments)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoGuide, AutoGuideList

from pyro_elbo_lab.errors import ConfigError, require_positive_float
from pyro_elbo_lab.guides.pyro_builtin import InitLoc, latent_sites, normal_plus_local_part
from pyro_elbo_lab.registry import guides


class AutoLocalCategorical(AutoGuide):
    r"""Mean-field :math:`q(c_n) = \mathrm{Categorical}(\mathrm{softmax}\,\eta_n)` for
    every categorical latent of the data plate, one logit vector per point.

    The sites are sampled, not enumerated, so the objective needs a score-function
    gradient for them (``trace_graph``, ``vimco``, ``trace`` without baselines, ...). The
    data plate comes from ``create_plates`` (pass the model's own plate factory to share
    its minibatch: the guide draws the indices and reads the minibatch's logits).

    :param init_scale: the logits start as ``init_scale`` × N(0, 1) (a symmetric start
        gives every point the same q and the score-function gradient the same noise).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        data_plate: str = "data",
        init_scale: float = 0.1,
        create_plates: Callable[..., Any] | None = None,
    ) -> None:
        self.data_plate = data_plate
        self._init_scale = init_scale
        super().__init__(model, create_plates=create_plates)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            fn = site["fn"]
            support = fn.support
            in_plate = [f for f in site["cond_indep_stack"] if f.name == self.data_plate]
            if not (isinstance(support, dist.constraints.integer_interval) and in_plate):
                raise ConfigError(
                    f"AutoLocalCategorical guides categorical sites of the data plate "
                    f"'{self.data_plate}'; site '{name}' is not one (block it from this part)"
                )
            size = in_plate[0].full_size or in_plate[0].size
            categories = int(support.upper_bound) - int(support.lower_bound) + 1
            logits = self._init_scale * torch.randn(size, categories, device=site["value"].device)
            setattr(self, f"{name}_logits", torch.nn.Parameter(logits))

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        values = {}
        with self._create_plates(*args, **kwargs)[self.data_plate] as index:
            for name, _ in self.prototype_trace.iter_stochastic_nodes():
                logits = getattr(self, f"{name}_logits")[index]
                values[name] = pyro.sample(name, dist.Categorical(logits=logits))
        return values

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Per point, the most probable category (the mode; categories have no median
        between them)."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        return {
            name: getattr(self, f"{name}_logits").argmax(-1)
            for name, _ in self.prototype_trace.iter_stochastic_nodes()
        }


@guides.register(
    "discrete_local",
    local_latents=True,
    score_function=True,
    discrete_latents=True,
    example_overrides=["model=gmm", "model.assignment=sampled"],
)
def discrete_local(
    model: Callable[..., Any],
    init_scale: float = 0.1,
    init_loc: InitLoc = "median",
) -> AutoGuideList:
    """AutoNormal for the continuous latents and a categorical per point for the data
    plate's sampled discrete ones (``model=gmm model.assignment=sampled``)."""
    require_positive_float("guide.init_scale", init_scale)
    data_plate = getattr(model, "data_plate", "data")
    discrete = [
        name
        for name, site in latent_sites(model).items()
        if isinstance(site["fn"].support, dist.constraints.integer_interval)
    ]
    if not discrete:
        raise ConfigError(
            "guide=discrete_local needs sampled discrete latents in the data plate, e.g. "
            "model=gmm model.assignment=sampled; this model has none: use guide=normal"
        )
    return normal_plus_local_part(
        model,
        model,
        discrete,
        lambda part: AutoLocalCategorical(part, data_plate=data_plate, init_scale=init_scale),
        init_loc,
        init_scale,
    )
