r"""Where a fit starts: one Gaussian over the model's unconstrained latents.

Every fitter and guide family starts from the same object, a Gaussian
:math:`\mathcal N(m, LL^\top)` over the unconstrained latent vector :math:`u` (the
layout of an ``AutoMultivariateNormal``, :class:`~pyro_elbo_lab.engine.UnconstrainedDensity`),
found by one of:

- ``median``: the prior median, :math:`L = s I` (``init_scale``); no cost, Pyro's default;
- ``map``: the mode of :math:`\log\tilde p(u) = \log p(x, T(u)) + \log|\det J_T(u)|` by
  L-BFGS with a strong-Wolfe line search (``torch.optim.LBFGS``) from the median, then
  Newton steps (D ≤ :data:`LAPLACE_MAX_DIM`: float32 L-BFGS stalls on the ridges of
  strongly correlated regressions, kidiq's 26 units short of its intercept), with
  :math:`L = s I` around it;
- ``laplace``: the mode and :math:`\Sigma = H^{-1}`, :math:`H = -\nabla^2\log\tilde p` there
  from D exact Hessian-vector products (each counted as two gradient evaluations), for
  D ≤ :data:`LAPLACE_MAX_DIM`, after Newton steps that polish the L-BFGS mode; curvature
  that is not positive (a flat or saddle direction) is floored at :data:`MIN_CURVATURE`
  relative to the largest and said so;
- ``pathfinder``: single-path Pathfinder's best Gaussian (Zhang et al. 2022), run to its
  own convergence from the median.

The Laplace form is the mode of the unconstrained density, so it carries the Jacobian:
it is the Gaussian ADVI would fit if the posterior were Gaussian in :math:`u`, the point
where the study's fits are meant to arrive. Every evaluation a start spends counts in the
run's budget (:attr:`StartingGaussian.model_evals`, ``gradient_evals``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pyro
import torch

from pyro_elbo_lab.engine.unconstrained import UnconstrainedDensity
from pyro_elbo_lab.errors import ConfigError, require
from pyro_elbo_lab.models.base import LatentVariableModel

INIT_METHODS = ("median", "map", "laplace", "pathfinder")
#: the largest latent dimension whose Hessian the Laplace start forms exactly
LAPLACE_MAX_DIM = 300
#: Hessian eigenvalues below this fraction of the largest are raised to it
MIN_CURVATURE = 1e-8
#: L-BFGS curvature pairs a Pathfinder Gaussian needs before it serves as a start: a path
#: that starts at (or a float32 step from) the mode stops within a step or two, its
#: covariance the uninformed identity or a secant of round-off (arma11: sds of 1, or of
#: 4e-14, against posterior sds of 0.01 to 0.06; BaM and GSM wandered 170 sd from there)
INFORMING_PAIRS = 2
#: the loss L-BFGS sees where the density is not finite (an inf would poison the line
#: search's cubic interpolation with NaN)
NOT_FINITE_LOSS = 1e30


@dataclass(frozen=True)
class StartingGaussian:
    """:math:`\\mathcal N(m, LL^\\top)` over the unconstrained latents (float64), their
    layout, how it was found and what it cost."""

    mean: torch.Tensor
    scale_tril: torch.Tensor
    method: str
    #: ``(site, unconstrained shape)`` in the order of the latent vector
    sites: tuple[tuple[str, torch.Size], ...] = ()
    model_evals: int = 0
    gradient_evals: int = 0
    note: str = ""
    #: False for a Pathfinder Gaussian that fewer than INFORMING_PAIRS curvature pairs
    #: informed (its covariance the initial identity or a round-off secant)
    informed: bool = True

    @property
    def covariance(self) -> torch.Tensor:
        return self.scale_tril @ self.scale_tril.T

    def summary(self) -> dict[str, object]:
        """What a run record says about its start."""
        return {
            "method": self.method,
            "model_evals": self.model_evals,
            "gradient_evals": self.gradient_evals,
            **({"note": self.note} if self.note else {}),
        }


def starting_gaussian(
    model: LatentVariableModel,
    method: str,
    *,
    init_scale: float = 0.1,
    max_iterations: int = 1000,
) -> StartingGaussian:
    """The start ``method`` (one of :data:`INIT_METHODS`) finds for ``model``."""
    require(
        method in INIT_METHODS,
        f"init must be one of {', '.join(INIT_METHODS)}, got {method!r}",
    )
    with pyro.get_param_store().scope():  # its own guide's parameters stay apart
        density = UnconstrainedDensity(
            model.model, (model.train_data,), max_plate_nesting=model.max_plate_nesting
        )
        median = density.guide.loc.detach().double()
        eye = torch.eye(median.shape[0], dtype=torch.float64, device=median.device)
        sites = tuple(density.guide._unconstrained_shapes.items())
        if method == "median":
            return StartingGaussian(median, init_scale * eye, method, sites)
        if method == "pathfinder":
            start = _pathfinder_start(model, max_iterations)
            if not start.informed and start.mean.shape[0] <= LAPLACE_MAX_DIM:
                start = _laplace_at_path_end(density, start)
            return dataclasses.replace(start, sites=sites)
        mode, note = maximum_a_posteriori(density, median, max_iterations)
        if method == "map" and mode.shape[0] > LAPLACE_MAX_DIM:
            return _spent(
                density, StartingGaussian(mode, init_scale * eye, method, sites, note=note)
            )
        try:
            mode, scale_tril, note, decrement = laplace_at_mode(density, mode)
            stuck = decrement >= STALLED_DECREMENT
        except torch.linalg.LinAlgError:
            stuck = True
        if stuck:
            # L-BFGS's line search can leap past a model's numerical domain, or stall
            # where the density explodes (arma11's errors beyond |theta| = 1, where a
            # prior median may lie); Pathfinder's backtracking path does not
            fallback = _pathfinder_start(model, max_iterations)
            mode, scale_tril, note, _ = laplace_at_mode(density, fallback.mean)
            note = "; ".join(
                n for n in ("L-BFGS did not reach the mode: from Pathfinder's mean", note) if n
            )
            density.evaluations += fallback.model_evals
            density.gradient_evaluations += fallback.gradient_evals
        if method == "map":
            scale_tril = init_scale * eye
        return _spent(density, StartingGaussian(mode, scale_tril, method, sites, note=note))


def maximum_a_posteriori(
    density: UnconstrainedDensity, start: torch.Tensor, max_iterations: int
) -> tuple[torch.Tensor, str]:
    """The mode of :math:`\\log\\tilde p(u)` by L-BFGS (strong Wolfe) from ``start``, and
    a note where it did not reach a gradient norm of 1e-3 (e.g. an improper direction)."""
    point = start.float().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [point], lr=1.0, max_iter=max_iterations, history_size=10,
        tolerance_grad=1e-5, tolerance_change=1e-9, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = -density.differentiable_log_density(point[None])[0]
        if not torch.isfinite(value):  # outside the model's numerical domain: a wall the
            value = point.sum() * 0 + NOT_FINITE_LOSS  # line search backs off from
        value.backward()
        return value

    optimizer.step(closure)
    gradient_norm = float(point.grad.norm())
    note = "" if gradient_norm < 1e-3 else f"L-BFGS stopped at gradient norm {gradient_norm:.2g}"
    return point.detach().double(), note


#: damped Newton steps that polish the L-BFGS mode before the Laplace covariance is
#: formed, until the Newton decrement falls below NEWTON_TOLERANCE
NEWTON_STEPS = 20
NEWTON_TOLERANCE = 1e-4
_MAX_HALVINGS = 20
#: a mode whose Newton decrement sqrt(g' H^-1 g) exceeds this is noted in the record
MODE_TOLERANCE = 0.01
#: a Newton decrement this large after the polishing steps: L-BFGS stalled away from the
#: mode (one Laplace sd or more), and the start goes on from Pathfinder's mean
STALLED_DECREMENT = 1.0


def laplace_at_mode(
    density: UnconstrainedDensity, start: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, str, float]:
    """The mode, polished by damped Newton steps from ``start`` (a float32 L-BFGS stops
    where successive losses round to the same number; a Newton step, halved until it
    ascends, needs no such resolution), and the Cholesky factor of :math:`H^{-1}` there,
    from exact Hessian-vector products; and the Newton decrement there (how far from the
    mode, in the Laplace sds: below :data:`MODE_TOLERANCE` at one)."""
    dim = start.shape[0]
    if dim > LAPLACE_MAX_DIM:
        raise ConfigError(
            f"init=laplace forms the {dim}x{dim} Hessian, above {LAPLACE_MAX_DIM} latents; "
            "use init=map or init=pathfinder"
        )
    mode = start
    value, gradient, hessian = _curvature(density, mode)
    if not (math.isfinite(value) and hessian.isfinite().all()):
        raise torch.linalg.LinAlgError("the log density or its Hessian is not finite there")
    for _ in range(NEWTON_STEPS):
        covariance, _ = _floored_inverse(hessian)
        direction = covariance @ gradient
        if float(gradient @ direction) ** 0.5 < NEWTON_TOLERANCE:
            break
        for halving in range(_MAX_HALVINGS):  # damped: the first step length that ascends
            trial = mode + 0.5**halving * direction
            trial_value, trial_gradient, trial_hessian = _curvature(density, trial)
            if trial_value > value and trial_hessian.isfinite().all():
                break
        else:
            break
        mode, value, gradient, hessian = trial, trial_value, trial_gradient, trial_hessian
    covariance, note = _floored_inverse(hessian)
    # the Newton decrement: how far the point is from the mode, in the Laplace sd's units
    decrement = float(gradient @ covariance @ gradient) ** 0.5
    if decrement >= MODE_TOLERANCE:
        note = "; ".join(n for n in (note, f"Newton decrement {decrement:.2g} at the mode") if n)
    return mode, torch.linalg.cholesky(covariance), note, decrement


def _curvature(
    density: UnconstrainedDensity, point: torch.Tensor
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """:math:`\\log\tilde p`, its gradient and :math:`H = -\nabla^2\\log\tilde p` at
    ``point`` (float64), the Hessian row by row from D Hessian-vector products."""
    leaf = point.float().clone().requires_grad_(True)
    value = density.differentiable_log_density(leaf[None])[0]
    (gradient,) = torch.autograd.grad(value, leaf, create_graph=True)
    dim = leaf.shape[0]
    rows = [torch.autograd.grad(gradient[i], leaf, retain_graph=True)[0] for i in range(dim)]
    density.count_hessian_vector_products(dim)
    hessian = -torch.stack(rows).double()
    return float(value.detach()), gradient.detach().double(), (hessian + hessian.T) / 2


def _floored_inverse(hessian: torch.Tensor) -> tuple[torch.Tensor, str]:
    """:math:`H^{-1}` with eigenvalues below :data:`MIN_CURVATURE` × the largest raised."""
    eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
    floor = MIN_CURVATURE * float(eigenvalues.abs().max().clamp(min=1e-30))
    raised = int((eigenvalues < floor).sum())
    note = f"{raised} Hessian eigenvalue(s) below {floor:.2g} raised to it" if raised else ""
    covariance = eigenvectors @ torch.diag(1 / eigenvalues.clamp(min=floor)) @ eigenvectors.T
    return (covariance + covariance.T) / 2, note


def _spent(density: UnconstrainedDensity, start: StartingGaussian) -> StartingGaussian:
    return dataclasses.replace(
        start, model_evals=density.evaluations, gradient_evals=density.gradient_evaluations
    )


def _laplace_at_path_end(density: UnconstrainedDensity, path: StartingGaussian) -> StartingGaussian:
    """Laplace's Gaussian at the end of a Pathfinder path that learnt too little
    curvature (fewer than :data:`INFORMING_PAIRS` L-BFGS pairs behind its best Gaussian)."""
    mode, scale_tril, note, _ = laplace_at_mode(density, path.mean)
    density.evaluations += path.model_evals
    density.gradient_evaluations += path.gradient_evals
    note = "; ".join(
        n
        for n in (
            f"Pathfinder's path learnt fewer than {INFORMING_PAIRS} curvature pairs: "
            "Laplace at its end",
            note,
        )
        if n
    )
    return _spent(density, StartingGaussian(mode, scale_tril, "pathfinder", (), note=note))


def _pathfinder_start(model: LatentVariableModel, max_iterations: int) -> StartingGaussian:
    from pyro.infer.autoguide import AutoMultivariateNormal

    from pyro_elbo_lab.fitters.pathfinder import Pathfinder

    pathfinder = Pathfinder(model, AutoMultivariateNormal(model.model), init_radius=None)
    for _ in range(max_iterations):
        if pathfinder.converged:
            break
        pathfinder.step()
    state = pathfinder.state
    note = "" if pathfinder.converged else f"Pathfinder did not converge in {max_iterations} steps"
    return StartingGaussian(
        state.mean, state.cholesky, "pathfinder", (),
        pathfinder.model_evals, pathfinder.gradient_evals, note,
        informed=pathfinder.best_pairs >= INFORMING_PAIRS,
    )  # fmt: skip
