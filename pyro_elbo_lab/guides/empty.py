"""The guide of a model without latents: nothing to draw."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyro.infer.autoguide import AutoGuide

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.guides.pyro_builtin import latent_sites
from pyro_elbo_lab.registry import guides


class AutoEmpty(AutoGuide):
    """A guide with no sites, for a model whose latents are all summed out inside it
    (e.g. ``model=sbn model.marginal=exact``): the objectives then fit the model's own
    parameters by its exact log-likelihood, as Pyro's ELBOs do for a model without
    latents."""

    def forward(self, *args: Any, **kwargs: Any) -> dict:
        return {}

    def median(self, *args: Any, **kwargs: Any) -> dict:
        return {}


@guides.register(
    "none",
    no_latents=True,
    example_overrides=[
        "model=sbn",
        "model.marginal=exact",
        "model.num_train=40",
        "model.num_heldout=10",
        "model.num_latents=3",
    ],
)
def no_guide(model: Callable[..., Any]) -> AutoEmpty:
    """No guide: for models whose latents are all marginalised (``model.marginal=exact``)."""
    sites = latent_sites(model)
    if sites:
        raise ConfigError(
            f"guide=none is for models without latents, but this model has {list(sites)}: "
            "choose a guide for them (e.g. guide=normal), or marginalise them in the model"
        )
    return AutoEmpty(model)
