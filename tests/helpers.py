"""Guides and models with known answers, for tests."""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist

from pyro_elbo_lab.models import NormalNormal


def posterior_guide(model: NormalNormal, scale_factor: float = 1.0, shift: float = 0.0) -> Callable:
    """A guide equal to the exact posterior (``scale_factor=1, shift=0``) or a distortion of it."""
    posterior = model.exact_posterior()["loc"].base_dist

    def guide(data=None):
        pyro.sample(
            "loc", dist.Normal(posterior.loc + shift, posterior.scale * scale_factor).to_event(1)
        )

    return guide
