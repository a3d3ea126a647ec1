"""Latent-variable models with seeded data and, where known, ground truth."""

from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.models.beta_bernoulli import BetaBernoulli
from pyro_elbo_lab.models.custom import CustomModel
from pyro_elbo_lab.models.eight_schools import EightSchools
from pyro_elbo_lab.models.factor_analysis import FactorAnalysis
from pyro_elbo_lab.models.gmm import GaussianMixture
from pyro_elbo_lab.models.linear_regression import BayesianLinearRegression
from pyro_elbo_lab.models.normal_normal import NormalNormal
from pyro_elbo_lab.models.posteriordb import PosteriorDBModel
from pyro_elbo_lab.models.sbn import SigmoidBeliefNetwork
from pyro_elbo_lab.models.tiny_gmm import TinyGaussianMixture, bimodal
from pyro_elbo_lab.models.vae import VariationalAutoencoder

__all__ = [
    "BayesianLinearRegression",
    "BetaBernoulli",
    "CustomModel",
    "EightSchools",
    "FactorAnalysis",
    "GaussianMixture",
    "LatentVariableModel",
    "NormalNormal",
    "PosteriorDBModel",
    "SigmoidBeliefNetwork",
    "TinyGaussianMixture",
    "VariationalAutoencoder",
    "bimodal",
]
