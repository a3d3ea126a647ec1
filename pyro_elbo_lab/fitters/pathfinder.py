r"""Pathfinder (single path; Zhang, Carpenter, Gelman, Vehtari, JMLR 2022).

Pathfinder runs L-BFGS on :math:`f(u) = -\log\tilde p(u)` from a random start and, at
every iterate :math:`u_l`, forms the Gaussian :math:`\mathcal N(\mu_l, \Sigma_l)` of a
quasi-Newton step: :math:`\Sigma_l` is the inverse Hessian estimate built from the last
J position and gradient differences :math:`(s_j, y_j)` and :math:`\mu_l = u_l - \Sigma_l
\nabla f(u_l)`. It estimates each Gaussian's ELBO with K draws and returns the best.

- :math:`\Sigma_l`: BFGS updates :math:`H \leftarrow (I - \rho s y^\top) H (I - \rho y
  s^\top) + \rho s s^\top`, :math:`\rho = 1/y^\top s`, over the history from
  :math:`H_0 = \mathrm{diag}(\alpha)`; this is the compact form of the paper's eq. (II.1),
  built densely (D is at most hundreds here). :math:`\alpha` follows the paper's
  Algorithm 3, the diagonal that best fits the curvature seen so far:
  :math:`1/\alpha_d \leftarrow \frac{a}{b\,\alpha_d} + \frac{y_d^2}{b}
  - \frac{a\,s_d^2}{b\,c\,\alpha_d^2}` with :math:`a = y^\top\mathrm{diag}(\alpha) y,
  b = y^\top s, c = s^\top\mathrm{diag}(\alpha)^{-1}s`. Pairs with :math:`y^\top s \le
  10^{-12}\|y\|` are skipped (no positive curvature).
- The L-BFGS step direction uses the same history with the usual scaling
  :math:`H_0 = (s^\top y / y^\top y) I` and a backtracking Armijo line search; every trial
  point is one gradient evaluation.
- Defaults are the paper's: history J = 6, K = 5 ELBO draws per iterate, start uniform
  on :math:`(-2, 2)^D`, at most ``steps`` iterations; it stops when the relative change
  of f falls below ``tolerance`` (1e-13 in the paper, for float64; the lab's densities
  are float32, resolved to about 1e-7, hence the default here) twice in a row, the
  second time after restarting from steepest descent (a wild start's huge gradients can
  scale the history so that steps stall), or when the line search fails.

With ``paths`` = J > 1 (multi-path Pathfinder, the paper's section 3), J paths run one
after another from dispersed starts (uniform on :math:`(-r, r)^D`); each contributes its
best Gaussian, ``num_draws`` draws of every one are weighed against the target over the
paths' equal mixture (the paper weighs each draw by its own path's density; the mixture
is the balance heuristic, which no single path's missing mode can blow up), the weights
are Pareto-smoothed (:mod:`~pyro_elbo_lab.fitters.psis`, k̂ recorded) and ``num_draws``
draws resampled. The guide gets their mean and covariance; the draws themselves are
:attr:`Pathfinder.resampled`, bimodal where the target is.

The lab drives it one iteration at a time; after each, the guide holds the best Gaussian
so far. Cost: :attr:`gradient_evals` counts the optimisation's gradients,
:attr:`model_evals` adds the K log densities per iterate.

Reference: L. Zhang, B. Carpenter, A. Gelman, A. Vehtari, "Pathfinder: Parallel
quasi-Newton variational inference", JMLR 23(306), 2022.
"""

from __future__ import annotations

import math
from collections import deque

import torch
from pyro.infer.autoguide import AutoMultivariateNormal

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.fitters.gaussian import Gaussian, GaussianFitter
from pyro_elbo_lab.fitters.psis import pareto_smoothed_log_weights
from pyro_elbo_lab.fitters.start import StartingGaussian
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.registry import fitters

_CURVATURE_EPSILON = 1e-12
_ARMIJO = 1e-4
_MAX_HALVINGS = 30


def update_diagonal(alpha: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pathfinder's Algorithm 3: the diagonal inverse-Hessian estimate after pair (s, y)."""
    a = (y * alpha * y).sum()
    b = (y * s).sum()
    c = (s / alpha * s).sum()
    return 1 / (a / (b * alpha) + y**2 / b - a * s**2 / (b * c * alpha**2))


def inverse_hessian(
    alpha: torch.Tensor, history: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """BFGS inverse Hessian from ``diag(alpha)`` through the (s, y) pairs, oldest first."""
    estimate = torch.diag(alpha)
    eye = torch.eye(alpha.shape[0], dtype=alpha.dtype, device=alpha.device)
    for s, y in history:
        rho = 1 / (y @ s)
        left = eye - rho * torch.outer(s, y)
        estimate = left @ estimate @ left.T + rho * torch.outer(s, s)
    return (estimate + estimate.T) / 2


def lbfgs_direction(
    gradient: torch.Tensor, history: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """The two-loop recursion: :math:`-H\\nabla f` with :math:`H_0 = (s^\\top y/y^\\top y) I`."""
    q = gradient.clone()
    coefficients = []
    for s, y in reversed(history):
        coefficient = (s @ q) / (y @ s)
        q = q - coefficient * y
        coefficients.append(coefficient)
    if history:
        s, y = history[-1]
        q = q * (s @ y) / (y @ y)
    for (s, y), coefficient in zip(history, reversed(coefficients), strict=True):
        q = q + s * (coefficient - (y @ q) / (y @ s))
    return -q


@fitters.register(
    "pathfinder",
    description="Pathfinder (Zhang et al. 2022): best L-BFGS Gaussians of 1 or more paths, PSIS",
)
class Pathfinder(GaussianFitter):
    """Single-path Pathfinder (Zhang et al. 2022): the best quasi-Newton Gaussian along
    an L-BFGS path, by ELBO."""

    name = "pathfinder"
    deterministic = True
    uncertifiable = (
        "Pathfinder keeps the best Gaussian along its L-BFGS path(s) by an ELBO estimate "
        "(resampled across paths): it optimises no objective to a fixed point"
    )

    def __init__(
        self,
        model: LatentVariableModel,
        guide: AutoMultivariateNormal,
        *,
        history_size: int = 6,
        elbo_draws: int = 5,
        init_radius: float | None = 2.0,
        tolerance: float = 1e-7,
        paths: int = 1,
        num_draws: int = 1000,
    ) -> None:
        for option, value in (("history_size", history_size), ("elbo_draws", elbo_draws)):
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"fitter.{option} must be an integer >= 1, got {value!r}")
        if not ((init_radius is None or init_radius > 0) and tolerance >= 0):
            raise ConfigError(
                f"fitter.init_radius must be > 0 and fitter.tolerance >= 0, got "
                f"{init_radius!r} and {tolerance!r}"
            )
        for option, value in (("paths", paths), ("num_draws", num_draws)):
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"fitter.{option} must be an integer >= 1, got {value!r}")
        super().__init__(model, guide, init_scale=1.0)
        self.elbo_draws, self.tolerance = elbo_draws, tolerance
        self.paths, self.num_draws, self.init_radius = paths, num_draws, init_radius or 2.0
        #: each finished path's best Gaussian and its ELBO estimate
        self.finished: list[tuple[Gaussian, float]] = []
        self.resampled: torch.Tensor | None = None
        self.khat = math.nan
        self.history: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=history_size)
        if init_radius is None:  # the guide's own start (its loc: the prior median)
            start = self.state.mean.clone()
        else:
            start = (torch.rand_like(self.state.mean) * 2 - 1) * init_radius
        self._begin_path(start)

    def start_from(self, start: StartingGaussian) -> None:
        """The path starts at the run's starting Gaussian's mean (its Gaussian is q₀)."""
        super().start_from(start)
        self._begin_path(self.state.mean.clone())

    def _begin_path(self, start: torch.Tensor) -> None:
        self.converged = None
        self.history.clear()
        self.position, self.value, self.gradient = self._evaluate(start)
        self.alpha = torch.ones_like(start)
        self.best_elbo = -float("inf")
        #: curvature pairs this path had taken when its best Gaussian was found: 0 means
        #: that Gaussian's covariance is the uninformed initial one (a path that starts at
        #: the mode takes no step)
        self.best_pairs = self.pairs_seen = 0
        self.restarted = False
        self._consider()

    def _evaluate(self, point: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor]:
        """f and ∇f at ``point`` (float64); f = +inf where the density is not finite."""
        log_density, score, finite = self.scores_at(point[None])
        if not bool(finite[0]):
            return point, float("inf"), torch.zeros_like(point)
        return point, -float(log_density[0]), -score[0]

    def _consider(self) -> None:
        """The quasi-Newton Gaussian at the current iterate; kept (and written into the
        guide) if its K-draw ELBO estimate is the best so far."""
        covariance = inverse_hessian(self.alpha, list(self.history))
        proposal = Gaussian(self.position - covariance @ self.gradient, covariance)
        if not proposal.is_valid():
            self.rejected_updates += 1
            return
        draws = proposal.sample(self.elbo_draws)
        log_density = self.density.log_density(draws.float()).double()
        elbo = float((log_density - proposal.log_prob(draws)).mean())
        if elbo > self.best_elbo:
            self.best_elbo, self.best_pairs = elbo, self.pairs_seen
            self.accept(proposal)

    def step(self) -> float:
        value = self._path_step()
        if self.converged and self.paths > 1 and self.resampled is None:
            self.finished.append((self.state, self.best_elbo))
            if len(self.finished) < self.paths:  # the next path, from a dispersed start
                self._begin_path((torch.rand_like(self.state.mean) * 2 - 1) * self.init_radius)
            else:
                self._resample()
        return value

    def _resample(self) -> None:
        """Multi-path Pathfinder: ``num_draws`` draws of every path's Gaussian, weighed by
        the target over the paths' equal mixture (the balance heuristic: a draw is as
        likely from any path), Pareto-smoothed, resampled; their moments go into the
        guide."""
        gaussians = [gaussian for gaussian, _ in self.finished]
        draws = torch.cat([gaussian.sample(self.num_draws) for gaussian in gaussians])
        log_q = torch.stack([gaussian.log_prob(draws) for gaussian in gaussians])
        log_mixture = log_q.logsumexp(0) - math.log(len(gaussians))
        log_target = self.density.log_density(draws.float()).double()
        log_weights = torch.where(log_target.isfinite(), log_target - log_mixture, -math.inf)
        smoothed, self.khat = pareto_smoothed_log_weights(log_weights)
        chosen = torch.multinomial(smoothed.softmax(0), self.num_draws, replacement=True)
        self.resampled = draws[chosen]
        centred = self.resampled - self.resampled.mean(0)
        covariance = centred.T @ centred / (self.num_draws - 1)
        self.accept(Gaussian(self.resampled.mean(0), covariance))
        self.converged = (
            f"{self.paths} paths, {self.num_draws} draws resampled with PSIS "
            f"(k-hat {self.khat:.2f})"
        )

    def details(self) -> dict[str, object]:
        if self.paths == 1:
            return {}
        return {
            "paths": self.paths,
            "path_elbos": [elbo for _, elbo in self.finished],
            "psis_khat": self.khat,
            "resampled_draws": self.num_draws,
        }

    def _path_step(self) -> float:
        if self.converged:
            return self.value
        direction = lbfgs_direction(self.gradient, list(self.history))
        slope = float(direction @ self.gradient)
        if not slope < 0:  # not a descent direction: restart from steepest descent
            self.history.clear()
            direction, slope = -self.gradient, -float(self.gradient @ self.gradient)
        step_length = 1.0 if self.history else 1.0 / max(1.0, float(self.gradient.norm()))
        for _ in range(_MAX_HALVINGS):
            point, value, gradient = self._evaluate(self.position + step_length * direction)
            if value <= self.value + _ARMIJO * step_length * slope:
                break
            step_length /= 2
        else:
            if self.history:  # a quasi-Newton direction no step along which decreases f:
                # a history poisoned by a pair from where the density explodes (arma11's
                # prior median has |theta| > 1: gradient 7e26, so the direction is ~1e-27 g);
                # forget it and retry from steepest descent before calling it converged
                self.history.clear()
                self.alpha = torch.ones_like(self.alpha)
                self.pairs_seen = 0
                return self.value
            self.converged = "line search found no decrease"
            return self.value
        s, y = point - self.position, gradient - self.gradient
        change = abs(self.value - value) / max(abs(self.value), abs(value), 1.0)
        if float(y @ s) > _CURVATURE_EPSILON * float(y.norm()):
            self.alpha = update_diagonal(self.alpha, s, y)
            self.history.append((s, y))
            self.pairs_seen += 1
        self.position, self.value, self.gradient = point, value, gradient
        self._consider()
        if change >= self.tolerance:
            self.restarted = False
        elif self.restarted or not self.history:
            self.converged = f"relative change of -log p below {self.tolerance:g}"
        else:  # a stalled quasi-Newton step (e.g. a history scaled by a wild start): retry
            self.history.clear()  # once from steepest descent before calling it converged
            self.restarted = True
        return value
