r"""Deterministic ADVI (DADVI; Giordano, Ingram & Broderick, JMLR 2024) and SAA for VI
(Burroni, Domke & Sheldon, UAI 2024): fix the Monte Carlo draws, solve a deterministic
problem with a second-order method.

With M draws :math:`\varepsilon_m` of the guide's base noise held fixed, the negative
ELBO becomes a deterministic function of the guide's parameters φ,

.. math::

    F(\phi) = -\frac1M\sum_{m=1}^M \log\tilde p\big(T_\phi(\varepsilon_m)\big) - H(q_\phi),

(:math:`\log\tilde p` the unconstrained log density, T the guide's reparameterisation),
minimised here by trust-region Newton–CG on exact Hessian-vector products
(:mod:`~pyro_elbo_lab.fitters.newton`) until a step predicts less than ``tolerance``
nats of decrease; for a guide whose draws have no second derivative (the Student-t's
Gamma draw) by L-BFGS with a strong-Wolfe line search, until a step achieves less.
For the Gaussian families (normal, diagonal_normal, mvn, lowrank_mvn)
:math:`T_\phi(\varepsilon) = \mu + L\varepsilon` and the entropy is exact; their draws
are standardised (centred, sample covariance exactly I: M is raised to the noise
dimension + 1 where it is smaller), so on a Gaussian target the fixed-draw
objective's optimum is the exact one, which iid draws only reach as M → ∞ (a variance
reduction beyond the paper's iid draws). Any other reparameterised guide (student_t,
flows, mixtures) is weighed by the engine with its random stream reset to the same seed
at every evaluation: common random numbers, the same draws as functions of φ.

``linear_response`` (mean-field guides): the covariance of the latents by linear
response, :math:`\Sigma_{LR} = [\nabla^2 F]^{-1}_{\mu\mu}` (Giordano et al., eq. 3, with
:math:`\partial\mathbb E_q[z]/\partial\mu = I` and zero for the scales), which recovers the
correlations and marginal variances that the mean-field guide itself understates.

``fitter=saa``: DADVI at M draws, then warm-started at 2M, 4M, ... until two successive
solutions' symmetrised KL falls below ``accuracy`` (their Monte Carlo error then no
longer moves them), after Burroni et al.'s schedule of growing sample sizes with a
quasi-Newton (here Newton–CG) inner solver.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pyro
import torch
from pyro.infer.autoguide import AutoContinuous, AutoNormal
from torch.distributions import kl_divergence

from pyro_elbo_lab.engine.particles import sample_log_weights
from pyro_elbo_lab.engine.unconstrained import UnconstrainedDensity
from pyro_elbo_lab.errors import ConfigError, require, require_positive_float, require_positive_int
from pyro_elbo_lab.fitters.base import Fitter
from pyro_elbo_lab.fitters.newton import NewtonState, newton_cg_step
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.registry import fitters

GAUSSIAN_FAMILIES = (
    "AutoNormal",
    "AutoDiagonalNormal",
    "AutoMultivariateNormal",
    "AutoLowRankMultivariateNormal",
)
#: the seed of the fixed draws (apart from the run's own stream, which it leaves alone)
DRAW_SEED = 20240601


class FixedDrawObjective:
    """:math:`F(\\phi)` on M fixed draws, its gradient and Hessian-vector products, over
    the guide's parameters as one flat float64 vector (each evaluation counted)."""

    def __init__(self, model: LatentVariableModel, guide: Any, num_draws: int) -> None:
        self.model, self.guide, self.num_draws = model, guide, num_draws
        with pyro.get_param_store().scope():
            self.density = UnconstrainedDensity(
                model.model, (model.train_data,), max_plate_nesting=model.max_plate_nesting
            )
        self.parameters = [p for p in guide.parameters() if p.requires_grad]
        self.gaussian = type(guide).__name__ in GAUSSIAN_FAMILIES
        self.model_evals = 0
        self.gradient_evals = 0
        if self.gaussian:
            # standardising needs more draws than noise dimensions: at least dim + 1
            self.num_draws = max(num_draws, self._noise_dim() + 1)
            self.noise = standardised_noise(self.num_draws, self._noise_dim(), self._dtype)

    @property
    def _dtype(self) -> torch.dtype:
        return self.parameters[0].dtype

    def point(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.parameters]).double()

    def set(self, point: torch.Tensor) -> None:
        offset = 0
        with torch.no_grad():
            for parameter in self.parameters:
                size = parameter.numel()
                parameter.copy_(point[offset : offset + size].reshape(parameter.shape))
                offset += size

    def value_and_gradient(self, point: torch.Tensor) -> tuple[float, torch.Tensor]:
        self.set(point)
        value = self._objective()
        gradients = torch.autograd.grad(value, self.parameters, allow_unused=True)
        self.gradient_evals += self.num_draws
        return float(value.detach()), self._flat(gradients)

    def hessian_vector(self, point: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        self.set(point)
        value = self._objective()
        gradients = torch.autograd.grad(value, self.parameters, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(gradients, self._split(vector), strict=True))
        products = torch.autograd.grad(dot, self.parameters, allow_unused=True)
        self.gradient_evals += 3 * self.num_draws  # the gradient, and the product as two
        return self._flat(products)

    def _objective(self) -> torch.Tensor:
        self.model_evals += self.num_draws
        if self.gaussian:
            points, entropy = self._gaussian_draws()
            log_density = self.density.differentiable_log_density(points)
            return -log_density.double().mean() - entropy.double()
        with torch.random.fork_rng(devices=[]):  # the same draws at every evaluation
            torch.manual_seed(DRAW_SEED)
            weights = sample_log_weights(
                self.model.model, self.guide, (self.model.train_data,), {},
                num_particles=self.num_draws, max_plate_nesting=self.model.max_plate_nesting,
            )  # fmt: skip
        return -weights.log_weights.double().mean()

    def _gaussian_draws(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`\\mu + L\\varepsilon_m` for the fixed draws, and the entropy of q."""
        guide = self.guide
        if isinstance(guide, AutoNormal):
            pieces = [guide._get_loc_and_scale(name) for name, _ in self._sites()]
            loc = torch.cat([loc.reshape(-1) for loc, _ in pieces])
            scale = torch.cat([scale.reshape(-1) for _, scale in pieces])
            entropy = scale.log().sum() + 0.5 * loc.numel() * math.log(2 * math.pi * math.e)
            return loc + scale * self.noise, entropy
        posterior = guide.get_posterior()
        entropy = posterior.entropy()
        if isinstance(posterior, torch.distributions.Independent):
            return posterior.base_dist.loc + posterior.base_dist.scale * self.noise, entropy
        if isinstance(posterior, torch.distributions.LowRankMultivariateNormal):
            rank = posterior.cov_factor.shape[-1]
            low, rest = self.noise[:, :rank], self.noise[:, rank:]
            draws = posterior.loc + low @ posterior.cov_factor.T + rest * posterior.cov_diag.sqrt()
            return draws, entropy
        return posterior.loc + self.noise @ posterior.scale_tril.T, entropy

    def _noise_dim(self) -> int:
        dim = self.density.dim
        if type(self.guide).__name__ == "AutoLowRankMultivariateNormal":
            return dim + self.guide.cov_factor.shape[-1]
        return dim

    def _sites(self) -> list[tuple[str, Any]]:
        return list(self.density.guide._unconstrained_shapes.items())

    def _flat(self, tensors: tuple) -> torch.Tensor:
        return torch.cat([
            (t if t is not None else torch.zeros_like(p)).reshape(-1)
            for t, p in zip(tensors, self.parameters, strict=True)
        ]).double()  # fmt: skip

    def _split(self, vector: torch.Tensor) -> list[torch.Tensor]:
        pieces, offset = [], 0
        for parameter in self.parameters:
            size = parameter.numel()
            pieces.append(vector[offset : offset + size].reshape(parameter.shape).to(self._dtype))
            offset += size
        return pieces


def standardised_noise(count: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """``count`` draws of N(0, I_dim), centred and whitened so that their mean is 0 and
    their (1/count) second moment exactly I (needs count > dim)."""
    require(
        count > dim,
        f"fitter.num_draws={count} fixed draws cannot be standardised in {dim} dimensions; "
        f"use fitter.num_draws >= {dim + 1}",
    )
    generator = torch.Generator().manual_seed(DRAW_SEED)
    noise = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    noise = noise - noise.mean(0)
    covariance = noise.T @ noise / count
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    whitening = eigenvectors @ torch.diag(eigenvalues.rsqrt()) @ eigenvectors.T
    return (noise @ whitening).to(dtype)


@fitters.register(
    "dadvi",
    description="Deterministic ADVI (Giordano et al. 2024): fixed draws, trust-region Newton-CG",
    any_reparameterised_guide=True,
)
class DADVI(Fitter):
    """``fitter=dadvi``: the fixed-draw negative ELBO minimised by Newton–CG (one
    iteration a step) until a step predicts less than ``tolerance`` nats of decrease."""

    deterministic: ClassVar[bool] = True

    def __init__(
        self,
        model: LatentVariableModel,
        guide: Any,
        *,
        num_draws: int = 30,
        tolerance: float = 1e-5,
        max_cg: int = 200,
        linear_response: bool = False,
    ) -> None:
        require_positive_int("fitter.num_draws", num_draws, minimum=2)
        require_positive_float("fitter.tolerance", tolerance)
        require_positive_int("fitter.max_cg", max_cg)
        _require_reparameterised(guide)
        if linear_response and type(guide).__name__ not in ("AutoNormal", "AutoDiagonalNormal"):
            raise ConfigError(
                "fitter.linear_response corrects a mean-field guide's covariance; use "
                "guide=normal or guide=diagonal_normal, or fitter.linear_response=false"
            )
        self.model, self.guide = model, guide
        self.tolerance, self.max_cg = tolerance, max_cg
        self.arrived = False
        with pyro.poutine.block(), torch.no_grad():
            guide(model.train_data)  # its parameters exist from its first call
        self.linear_response = linear_response
        self.response: dict[str, list[float]] | None = None
        self._objective = FixedDrawObjective(model, guide, num_draws)
        self._begin()

    def _begin(self) -> None:
        point = self._objective.point()
        value, gradient = self._objective.value_and_gradient(point)
        self.state = NewtonState(point, value, gradient)
        try:  # guides whose draws have no second derivative (a Gamma's implicit
            self._objective.hessian_vector(point, torch.zeros_like(point))  # gradient)
            self.solver = "newton-cg"
        except (RuntimeError, NotImplementedError):
            self.solver = "lbfgs"
            self._lbfgs = torch.optim.LBFGS(
                self._objective.parameters, lr=1.0, max_iter=20, history_size=20,
                tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe",
            )  # fmt: skip

    def step(self) -> float:
        if not self.converged:
            self._iterate()
            if self._stationary():
                self.converged = self._arrived()
        return self.state.value

    def _iterate(self) -> None:
        if self.solver == "newton-cg":
            self.state = newton_cg_step(
                self.state, self._objective.value_and_gradient,
                self._objective.hessian_vector, self.max_cg,
            )  # fmt: skip
            self._objective.set(self.state.point)
            return
        objective = self._objective

        def closure() -> torch.Tensor:
            self._lbfgs.zero_grad()
            value = objective._objective()
            value.backward()
            objective.gradient_evals += objective.num_draws
            return value

        self._lbfgs.step(closure)
        point = objective.point()
        value, gradient = objective.value_and_gradient(point)
        # no Hessian: the decrease this step achieved stands in for the predicted one
        predicted = max(self.state.value - value, 0.0)
        self.state = NewtonState(
            point, value, gradient, self.state.radius, self.state.iterations + 1, 0, predicted
        )

    def _stationary(self) -> bool:
        """Arrived (the last step's predicted decrease below ``tolerance`` nats), or
        stuck (a trust region shrunk to nothing: not arrived, and the record says so)."""
        self.arrived = self.state.predicted < self.tolerance
        return self.arrived or self.state.radius < 1e-12

    def _arrived(self) -> str:
        if self.linear_response and self.arrived:
            self.response = self._linear_response()
        norm = float(self.state.gradient.abs().max())
        how = "predicted decrease" if self.arrived else "trust region collapsed at"
        return (
            f"{how} {self.state.predicted:.2g} nats, gradient {norm:.2g}, at "
            f"M={self._objective.num_draws} fixed draws"
        )

    def _linear_response(self) -> dict[str, list[float]]:
        """:math:`[\\nabla^2F]^{-1}_{\\mu\\mu}`: marginal sds and the covariance of the
        unconstrained latents (Giordano et al.)."""
        objective = self._objective
        size = self.state.point.numel()
        eye = torch.eye(size, dtype=torch.float64)
        hessian = torch.stack([objective.hessian_vector(self.state.point, e) for e in eye])
        hessian = (hessian + hessian.T) / 2
        covariance = torch.linalg.inv(hessian)
        names = [name for name, p in self.guide.named_parameters() if p.requires_grad]
        mask = torch.cat([
            torch.full((p.numel(),), name == "loc" or name.startswith("locs."))
            for name, p in zip(names, objective.parameters, strict=True)
        ])  # fmt: skip
        block = covariance[mask][:, mask]
        return {"sd": block.diagonal().sqrt().tolist(), "covariance": block.tolist()}

    def details(self) -> dict[str, Any]:
        """What the record says about the solve."""
        details: dict[str, Any] = {
            "num_draws": self._objective.num_draws,
            "solver": self.solver,
            "iterations": self.state.iterations,
            "hessian_vector_products": self.state.hessian_vector_products,
            "gradient_max": float(self.state.gradient.abs().max()),
            "objective": self.state.value,
        }
        if self.response is not None:
            details["linear_response"] = self.response
        return details

    @property
    def model_evals(self) -> int:
        return self._objective.model_evals

    @property
    def gradient_evals(self) -> int:
        return self._objective.gradient_evals


@fitters.register(
    "saa",
    description="SAA for VI (Burroni et al. 2024): fixed-draw problems at growing M, warm-started",
    any_reparameterised_guide=True,
)
class SAA(DADVI):
    """``fitter=saa``: DADVI at ``num_draws``, then 2×, 4×, ... warm-started, until two
    successive solutions' symmetrised KL < ``accuracy`` (or ``max_draws``)."""

    def __init__(
        self,
        model: LatentVariableModel,
        guide: Any,
        *,
        num_draws: int = 16,
        max_draws: int = 2048,
        accuracy: float = 1e-3,
        tolerance: float = 1e-5,
        max_cg: int = 200,
    ) -> None:
        require_positive_float("fitter.accuracy", accuracy)
        require_positive_int("fitter.max_draws", max_draws, minimum=num_draws)
        require(
            type(guide).__name__ in GAUSSIAN_FAMILIES,
            f"fitter=saa compares successive solutions as Gaussians; use guide=normal, "
            f"diagonal_normal, mvn or lowrank_mvn, got {type(guide).__name__}",
        )
        super().__init__(model, guide, num_draws=num_draws, tolerance=tolerance, max_cg=max_cg)
        self.max_draws, self.accuracy = max_draws, accuracy
        self.stages: list[dict[str, float]] = []
        self._previous: Any = None
        self._spent = (0, 0)

    def step(self) -> float:
        if self.converged:
            return self.state.value
        self._iterate()
        if self._stationary():
            self._next_stage()
        return self.state.value

    def _next_stage(self) -> None:
        from pyro_elbo_lab.evaluation.exact_kl import guide_gaussian

        current = guide_gaussian(self.guide, [name for name, _ in self._objective._sites()])
        draws = self._objective.num_draws
        stage = {"num_draws": draws, "iterations": self.state.iterations}
        if self._previous is not None:
            divergence = float(
                kl_divergence(current, self._previous) + kl_divergence(self._previous, current)
            )
            stage["symmetrised_kl"] = divergence
            if divergence < self.accuracy:
                self.stages.append(stage)
                self.converged = (
                    f"solutions at M={draws // 2} and M={draws} differ by symmetrised KL "
                    f"{divergence:.2g} < {self.accuracy:g}"
                )
                return
        self.stages.append(stage)
        self._previous = current
        if 2 * draws > self.max_draws:
            self.converged = f"fitter.max_draws={self.max_draws} reached"
            return
        spent = (
            self._spent[0] + self._objective.model_evals,
            self._spent[1] + self._objective.gradient_evals,
        )
        self._spent = spent
        self._objective = FixedDrawObjective(self.model, self.guide, 2 * draws)
        self._begin()

    def details(self) -> dict[str, Any]:
        return {**super().details(), "stages": self.stages}

    @property
    def model_evals(self) -> int:
        return self._spent[0] + self._objective.model_evals

    @property
    def gradient_evals(self) -> int:
        return self._spent[1] + self._objective.gradient_evals


def _require_reparameterised(guide: Any) -> None:
    if not isinstance(guide, AutoNormal | AutoContinuous):
        raise ConfigError(
            f"fitter=dadvi/saa differentiates the guide's draws of fixed base noise; "
            f"guide={type(guide).__name__} has none (an encoder or discrete sites): use "
            "guide=normal, diagonal_normal, mvn, lowrank_mvn, student_t, flow or iaf"
        )
