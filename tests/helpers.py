"""Guides and models with known answers, for tests."""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

from pyro_elbo_lab.models import NormalNormal
from pyro_elbo_lab.models.base import LatentVariableModel


def assert_normal_moments(draws: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> None:
    """Mean and variance of M draws ``[M, D]`` within 4 Monte Carlo s.e. of N(loc, scale²):
    sd/sqrt(M) for a mean, sqrt(2/(M-1)) relative for a variance."""
    count = draws.shape[0]
    mean_error = (draws.mean(0) - loc) / scale
    variance_ratio = draws.var(0) / scale**2
    assert (mean_error.abs() < 4 / math.sqrt(count)).all(), mean_error
    assert ((variance_ratio - 1).abs() < 4 * math.sqrt(2 / (count - 1))).all(), variance_ratio


def posterior_guide(model: NormalNormal, scale_factor: float = 1.0, shift: float = 0.0) -> Callable:
    """A guide equal to the exact posterior (``scale_factor=1, shift=0``) or a distortion of it."""
    posterior = model.exact_posterior()["loc"].base_dist

    def guide(data=None):
        pyro.sample(
            "loc", dist.Normal(posterior.loc + shift, posterior.scale * scale_factor).to_event(1)
        )

    return guide


def set_gaussian_guide(guide, loc: torch.Tensor, scale: torch.Tensor) -> None:
    """Set an AutoNormal / AutoDiagonalNormal / AutoMultivariateNormal on a one-site model
    to N(loc, diag(scale²)) (the guide must have been called once)."""
    store = pyro.get_param_store()
    prefix = type(guide).__name__
    if isinstance(guide, AutoNormal):
        store[f"{prefix}.locs.loc"] = loc.clone()
        store[f"{prefix}.scales.loc"] = scale.clone()
    else:
        with torch.no_grad():
            guide.loc.copy_(loc)
        store[f"{prefix}.scale"] = scale.clone()
        if isinstance(guide, AutoMultivariateNormal):
            store[f"{prefix}.scale_tril"] = torch.eye(loc.shape[-1])
    guide()  # PyroModule re-syncs with the store on access


def distorted_autonormal(
    model: NormalNormal, shift: float = 0.3, factor: float = 1.5
) -> AutoNormal:
    """A fresh AutoNormal at N(posterior mean + shift, (factor x posterior sd)²)."""
    posterior = model.exact_posterior()["loc"].base_dist
    pyro.clear_param_store()
    guide = AutoNormal(model)
    guide()
    set_gaussian_guide(guide, posterior.loc + shift, posterior.scale * factor)
    return guide


def guide_parameters(guide) -> list[torch.Tensor]:
    """The guide's unconstrained leaf parameters, as the optimiser sees them."""
    guide()
    return list(guide.parameters())


def gradient_draws(objective, model, guide, num_draws: int) -> torch.Tensor:
    """``num_draws`` independent gradient estimates of the guide parameters, ``[M, P]``."""
    params = guide_parameters(guide)
    draws = []
    for _ in range(num_draws):
        loss = objective.differentiable_loss(model, guide)
        draws.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(draws)


def assert_mean_gradients_agree(first: torch.Tensor, second: torch.Tensor) -> None:
    """Two sets of gradient draws ``[M, P]`` have equal means within 4 standard errors."""
    difference = first.mean(0) - second.mean(0)
    se = (first.var(0) / len(first) + second.var(0) / len(second)).sqrt()
    assert (difference.abs() < 4 * se).all(), (difference, se)


class LocalLatentModel:
    r"""z_n ~ N(0, 1), x_n | z_n ~ N(z_n, 1): every latent local, so per-datapoint bounds
    apply; exact p(x_n) = N(x_n; 0, 2) and p(z_n | x_n) = N(x_n / 2, 1/2)."""

    def __init__(self, num_data: int = 12, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.data = torch.randn(num_data, generator=generator) * 2**0.5

    def model(self, data, subsample_size=None):
        with pyro.plate("data", data.shape[0], subsample_size=subsample_size) as index:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=data[index])

    def guide(self, data, subsample_size=None, scale_factor: float = 1.0):
        with pyro.plate("data", data.shape[0], subsample_size=subsample_size) as index:
            pyro.sample("z", dist.Normal(data[index] / 2, scale_factor * 0.5**0.5))

    def exact_log_evidence(self) -> float:
        return float(dist.Normal(0.0, 2**0.5).log_prob(self.data).sum())


class GaussianTarget(LatentVariableModel):
    """A posterior given directly: z ~ ``prior`` (no likelihood), one dummy data row."""

    def __init__(self, prior: dist.Distribution) -> None:
        self.prior = prior
        super().__init__(num_train=1, num_heldout=0, seed=0)

    def simulate(self, num_data, generator):
        return torch.zeros(num_data, 1)

    def model(self, data):
        pyro.sample("z", self.prior)


def correlated_gaussian(dim: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """A mean and a covariance with strong correlations (seeded)."""
    generator = torch.Generator().manual_seed(3)
    factor = torch.randn(dim, dim, generator=generator)
    covariance = factor @ factor.T + 0.5 * torch.eye(dim)
    return 3 * torch.randn(dim, generator=generator), covariance
