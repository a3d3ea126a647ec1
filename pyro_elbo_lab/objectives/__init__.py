"""Variational objectives: Pyro's own, registered, and ours on the shared particle engine."""

from pyro_elbo_lab.objectives import pyro_builtin
from pyro_elbo_lab.objectives.base import ParticleObjective
from pyro_elbo_lab.objectives.beta_elbo import BetaELBO
from pyro_elbo_lab.objectives.iwae import IWAE, IWAEDReG
from pyro_elbo_lab.objectives.particles import LogWeights, sample_log_weights
from pyro_elbo_lab.objectives.renyi import RenyiBound, vr_max
from pyro_elbo_lab.objectives.stl import StickingTheLanding

__all__ = [
    "IWAE",
    "BetaELBO",
    "IWAEDReG",
    "LogWeights",
    "ParticleObjective",
    "RenyiBound",
    "StickingTheLanding",
    "pyro_builtin",
    "sample_log_weights",
    "vr_max",
]
