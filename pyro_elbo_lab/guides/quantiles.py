"""Posterior medians and quantiles of a guide from its own draws."""

from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

#: Draws per quantile estimate: the error of a quantile is about sd / sqrt(draws).
QUANTILE_DRAWS = 20_000
#: Fixed seed of those draws, so results repeat and the caller's RNG is left untouched.
QUANTILE_SEED = 0


class SampledQuantiles:
    """Mixin for ``AutoGuide`` families whose marginals have no closed-form quantiles.

    Each latent site's quantiles are the empirical quantiles of :data:`QUANTILE_DRAWS`
    draws of the guide itself, taken in one vectorised pass (a plate left of the
    guide's own plates), elementwise per coordinate; the error is about sd/√draws.
    The median is the 0.5 quantile. Draws use a forked RNG with a fixed seed.
    """

    @torch.no_grad()
    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        with torch.random.fork_rng(devices=[]), poutine.block():
            torch.manual_seed(QUANTILE_SEED)
            single = poutine.trace(self).get_trace(*args, **kwargs)  # each site's own shape
            nesting = max((-frame.dim for frame in self._prototype_frames.values()), default=0)
            draws_plate = pyro.plate("_quantile_draws", QUANTILE_DRAWS, dim=-(nesting + 1))
            trace = poutine.trace(draws_plate(self)).get_trace(*args, **kwargs)
        result = {}
        for name, site in single.nodes.items():
            latent = site["type"] == "sample" and not site["is_observed"]
            if not latent or site["infer"].get("is_auxiliary") or site_is_subsample(site):
                continue
            shape = site["value"].shape
            draws = trace.nodes[name]["value"].expand((QUANTILE_DRAWS, *shape))
            levels = torch.as_tensor(quantiles, dtype=draws.dtype, device=draws.device)
            result[name] = torch.quantile(draws.reshape(QUANTILE_DRAWS, -1), levels, dim=0).reshape(
                (len(levels), *shape)
            )
        return result

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return {name: value[0] for name, value in self.quantiles([0.5], *args, **kwargs).items()}
