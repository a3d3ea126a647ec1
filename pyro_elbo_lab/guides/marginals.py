"""A guide's marginal means and standard deviations over the unconstrained latents."""

from __future__ import annotations

from typing import Any

import torch
from pyro.infer.autoguide import AutoContinuous, AutoNormal


def guide_marginals(guide: Any) -> torch.Tensor | None:
    """``[2, D]`` float64: the marginal means (row 0) and sds (row 1) of the guide's
    distribution over the model's unconstrained latents, in the model's coordinates (a
    whitened guide's image); None for a guide without closed-form marginals (flows,
    amortised and discrete guides) or one not yet set up."""
    if getattr(guide, "prototype_trace", None) is None:
        return None
    try:
        with torch.no_grad():
            if isinstance(guide, AutoNormal):
                names = [name for name, _ in guide.prototype_trace.iter_stochastic_nodes()]
                pieces = [guide._get_loc_and_scale(name) for name in names]
                loc = torch.cat([loc.reshape(-1) for loc, _ in pieces])
                scale = torch.cat([scale.reshape(-1) for _, scale in pieces])
            elif isinstance(guide, AutoContinuous):
                loc, scale = guide._loc_scale()
            else:
                return None
    except (NotImplementedError, AttributeError):
        return None
    return torch.stack([loc.reshape(-1), scale.reshape(-1)]).detach().double().cpu()
