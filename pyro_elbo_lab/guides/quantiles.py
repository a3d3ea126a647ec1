"""Posterior medians and quantiles of an AutoContinuous guide from draws of its posterior."""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import biject_to

#: Draws per quantile estimate: the error of a quantile is about sd / sqrt(draws).
QUANTILE_DRAWS = 100_000
#: Fixed seed of those draws, so results repeat and the caller's RNG is left untouched.
QUANTILE_SEED = 0


class SampledQuantiles:
    """Mixin for ``AutoContinuous`` guides whose posterior has no closed-form quantiles.

    Each latent coordinate's marginal quantile is estimated from
    :data:`QUANTILE_DRAWS` draws of ``get_posterior()`` in unconstrained space (error
    about sd/√draws), then mapped through the site's bijection, which is monotone per
    coordinate for the univariate supports autoguides handle. The median is the 0.5
    quantile. Draws use a forked RNG with a fixed seed.
    """

    @torch.no_grad()
    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        posterior = self.get_posterior(*args, **kwargs)
        devices = [posterior.mean.device] if posterior.mean.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(QUANTILE_SEED)
            draws = posterior.sample((QUANTILE_DRAWS,))
        levels = torch.as_tensor(quantiles, dtype=draws.dtype, device=draws.device)
        latents = torch.quantile(draws, levels, dim=0)
        result: dict[str, list[torch.Tensor]] = {}
        for latent in latents:
            for site, unconstrained in self._unpack_latent(latent):
                result.setdefault(site["name"], []).append(
                    biject_to(site["fn"].support)(unconstrained)
                )
        return {name: torch.stack(values) for name, values in result.items()}

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return {name: value[0] for name, value in self.quantiles([0.5], *args, **kwargs).items()}
