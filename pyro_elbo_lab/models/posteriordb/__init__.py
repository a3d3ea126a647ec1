"""Posteriors of the Stan posterior database, ported to Pyro, with their reference draws."""

from pyro_elbo_lab.models.posteriordb.base import FlatPrior, PosteriorDBModel
from pyro_elbo_lab.models.posteriordb.gaussian_process import GaussianProcessPoisson
from pyro_elbo_lab.models.posteriordb.regressions import (
    NES,
    SBLRC,
    Diamonds,
    Earnings,
    KidIQ,
    KidIQInteraction,
    LinearRegressionPort,
    Mesquite,
)
from pyro_elbo_lab.models.posteriordb.time_series import ARMA11, GARCH11, AutoRegressive

__all__ = [
    "ARMA11",
    "GARCH11",
    "NES",
    "SBLRC",
    "AutoRegressive",
    "Diamonds",
    "Earnings",
    "FlatPrior",
    "GaussianProcessPoisson",
    "KidIQ",
    "KidIQInteraction",
    "LinearRegressionPort",
    "Mesquite",
    "PosteriorDBModel",
]
