r""":math:`\log q_{\bar\phi}(z)` from the guide trace already drawn, without a second guide pass.

STL and DReG (Roeder et al. 2017; Tucker et al. 2018) need the guide's log density with
its parameters stopped and the draws live, :math:`\log q_{\bar\phi}(z(\phi))`, so that
gradients reach φ only through the sample path. The general way re-runs the guide with
its parameters detached on the same draws
(:func:`~pyro_elbo_lab.engine.particles.sample_log_weights`): for an amortised guide
that is a second encoder pass and a second Pyro trace, ~15% of a VAE step at K = 5.

Where every site's distribution is a function of φ and the model's arguments alone,
never of another site's draw, the stopped density of a site is the same distribution
with its parameters detached, evaluated at the live draw: no second pass. A guide says
that it is such a guide with a true ``independent_sites`` attribute (the amortised
encoders when not chained; Pyro's ``AutoNormal``, whose ``Delta`` sites are functions of
its draws only, is known here; an ``AutoGuideList`` when all its parts are). Anything
this module cannot rebuild detached (an unknown distribution, a transform with
parameters) leaves the decision to the replay.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro import distributions as dist
from pyro import poutine
from pyro.infer.autoguide import AutoGuideList, AutoNormal

#: site keys holding log densities computed from the live distribution
_LOG_PROB_KEYS = ("log_prob", "unscaled_log_prob", "log_prob_sum", "score_parts")


def has_independent_sites(guide: Any) -> bool:
    """Whether every sample site of ``guide`` takes its distribution's parameters from φ
    and the model's arguments alone (see the module doc)."""
    if isinstance(guide, AutoGuideList):
        return all(has_independent_sites(part) for part in guide)
    if type(guide) is AutoNormal:  # a subclass may draw differently
        return True
    return bool(getattr(guide, "independent_sites", False))


def detached_distribution(fn: Any) -> Any:
    """``fn`` with every tensor parameter detached; ``Delta`` kept as it is (in the guides
    of :func:`has_independent_sites` its point and log density are functions of the
    draws); None where this function does not know how to rebuild ``fn``."""
    if isinstance(fn, dist.Delta):
        return fn
    if isinstance(fn, torch.distributions.Independent):
        base = detached_distribution(fn.base_dist)
        return None if base is None else dist.Independent(base, fn.reinterpreted_batch_ndims)
    if isinstance(fn, torch.distributions.TransformedDistribution):
        base = detached_distribution(fn.base_dist)
        if base is None or any(isinstance(t, torch.nn.Module) for t in fn.transforms):
            return None
        return dist.TransformedDistribution(base, fn.transforms)
    if type(fn) in (dist.Normal, torch.distributions.Normal):
        return dist.Normal(fn.loc.detach(), fn.scale.detach(), validate_args=False)
    if type(fn) in (dist.Bernoulli, torch.distributions.Bernoulli):
        return dist.Bernoulli(logits=fn.logits.detach(), validate_args=False)
    return None


def stopped_guide_trace(guide: Any, latent_guide_trace: poutine.Trace) -> poutine.Trace | None:
    """A copy of ``latent_guide_trace`` (subsample sites pruned) whose sample sites hold
    :math:`\\log q_{\\bar\\phi}(z)` at their live draws, log densities computed; None when
    ``guide`` is not one of :func:`has_independent_sites` or a site's distribution cannot
    be rebuilt detached (then replay the guide)."""
    if not has_independent_sites(guide):
        return None
    stopped = latent_guide_trace.copy()
    for name, site in latent_guide_trace.nodes.items():
        if site["type"] != "sample":
            continue
        fn = detached_distribution(site["fn"])
        if fn is None:
            return None
        stopped.nodes[name] = {
            **{key: value for key, value in site.items() if key not in _LOG_PROB_KEYS},
            "fn": fn,
        }
    stopped.compute_log_prob()
    return stopped
