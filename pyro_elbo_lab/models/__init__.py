"""Latent-variable models with seeded data and, where known, ground truth."""

from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.models.gmm import GaussianMixture
from pyro_elbo_lab.models.normal_normal import NormalNormal

__all__ = ["GaussianMixture", "LatentVariableModel", "NormalNormal"]
