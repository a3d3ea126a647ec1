r"""The posterior as a density on one unconstrained vector, for score-based methods.

Gaussian VI methods that are not ELBO losses (GSM, BaM, Pathfinder) and the Stein
checks of ported models need :math:`\log \tilde p(u) = \log p(x, T(u)) +
\log |\det J_T(u)|` and its score :math:`\nabla_u \log \tilde p(u)` at a batch of points
:math:`u \in \mathbb R^D`, where :math:`T` maps each latent site from the real line onto
its support (``biject_to``, Stan's unconstrained space). The layout of :math:`u` is the
one of an :class:`~pyro.infer.autoguide.AutoMultivariateNormal` over the model, so a
Gaussian fitted here is that guide's ``loc`` and covariance with nothing reordered.

One call is one vectorised pass: the guide's latent vector is replaced by the batch, the
model is weighed at it in a particle plate of size B, and
:math:`\log \tilde p(u) = \log w(u) + \log q(u)` (the guide's Delta sites carry
:math:`-\log|\det J_T|`, so adding back the Gaussian's own density leaves the target).
Distribution arguments are not validated in this pass: a point far outside the posterior
(an ARMA coefficient whose errors overflow) gets a non-finite density or score for the
caller to drop, as Stan rejects such a draw, instead of raising mid-fit. Every row costs
one model evaluation (:attr:`evaluations`), one log-density gradient
evaluation when its score is asked for (:attr:`gradient_evaluations`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoMultivariateNormal
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

from pyro_elbo_lab.engine.particles import sample_log_weights


class UnconstrainedDensity:
    """:math:`\\log \\tilde p(u)` and its score for ``model`` on ``args``, counted.

    :param guide: an ``AutoMultivariateNormal`` over ``model`` whose latent layout
        :math:`u` follows. None: a new one, whose parameters join the active param store
        under Pyro's default names (run under ``pyro.get_param_store().scope()`` to keep
        them apart from another guide's).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        args: tuple,
        *,
        max_plate_nesting: int,
        guide: AutoMultivariateNormal | None = None,
    ) -> None:
        self.model = model
        self.args = args
        self.max_plate_nesting = max_plate_nesting
        self.guide = guide if guide is not None else AutoMultivariateNormal(model)
        with poutine.block():
            self.guide(*args)  # sets the prototype trace and the latent layout up
        self.latent_site = f"_{self.guide._pyro_name}_latent"
        self.sites = {
            name: site
            for name, site in self.guide.prototype_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
        }
        self.dim = int(self.guide.loc.numel())
        self.evaluations = 0
        self.gradient_evaluations = 0

    @property
    def device(self) -> torch.device:
        return self.guide.loc.device

    def log_density(self, points: torch.Tensor) -> torch.Tensor:
        """:math:`\\log \\tilde p(u_b)` for the rows of ``points`` ``[B, D]``, ``[B]``."""
        with torch.no_grad():
            return self._log_density(points)

    def differentiable_log_density(self, points: torch.Tensor) -> torch.Tensor:
        """:math:`\\log \tilde p(u_b)` ``[B]`` with its graph to ``points``, for an optimiser
        that differentiates it (each row counted as one gradient evaluation)."""
        self.gradient_evaluations += points.shape[0]
        return self._log_density(points)

    def count_hessian_vector_products(self, count: int) -> None:
        """Count ``count`` Hessian-vector products, each as two gradient evaluations (a
        forward-over-reverse pass costs about two gradients)."""
        self.gradient_evaluations += 2 * count

    def log_density_and_score(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`\\log \\tilde p(u_b)` ``[B]`` and :math:`\\nabla_u \\log \\tilde p(u_b)`
        ``[B, D]``; non-finite values stay as they are, for the caller to judge."""
        leaf = points.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            values = self._log_density(leaf)
            (score,) = torch.autograd.grad(values.sum(), leaf)
        self.gradient_evaluations += points.shape[0]
        return values.detach(), score

    def pack(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Constrained site values ``[S, *site_shape]`` → their points :math:`u` ``[S, D]``."""
        pieces = []
        for name, site in self.sites.items():
            value = values[name].to(self.device)
            unconstrained = biject_to(site["fn"].support).inv(value)
            pieces.append(unconstrained.reshape(value.shape[0], -1))
        return torch.cat(pieces, -1)

    def _log_density(self, points: torch.Tensor) -> torch.Tensor:
        count = points.shape[0]
        template = poutine.Trace()
        template.add_node(
            self.latent_site,
            type="sample",
            name=self.latent_site,
            value=points.to(self.device, self.guide.loc.dtype).reshape(
                count, *([1] * self.max_plate_nesting), -1
            ),
            is_observed=False,
            fn=None,
            args=(),
            kwargs={},
            infer={"is_auxiliary": True},
            scale=1.0,
            mask=None,
            cond_indep_stack=(),
            done=True,
            stop=False,
            continuation=None,
        )
        with pyro.validation_enabled(False):  # a stray point scores NaN, it does not raise
            weights = sample_log_weights(
                self.model,
                self.guide,
                self.args,
                {},
                num_particles=count,
                max_plate_nesting=self.max_plate_nesting,
                guide_values=template,
            )
        self.evaluations += count
        # log p~(u) = log p(x, T(u)) + log|det dT/du|: the guide's deterministic sites carry
        # -log|det| as their log density. Not log w + log q(u): with the guide's current
        # Gaussian far narrower than the distance to u (a fitter's collapsed state), log q(u)
        # reaches -1e27 and float32 cancels log p(x, T(u)) to 0 (arma11 under BaM and GSM)
        inverse_jacobian = sum(
            site["scale"] * site["log_prob"].reshape(count, -1).sum(-1)
            for name, site in weights.guide_trace.nodes.items()
            if site["type"] == "sample" and name != self.latent_site
        )
        return weights.log_p - inverse_jacobian
