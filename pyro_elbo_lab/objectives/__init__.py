"""Variational objectives: Pyro's own, registered, and ours on the shared particle engine."""

from pyro_elbo_lab.objectives import pyro_builtin
from pyro_elbo_lab.objectives.base import ParticleObjective
from pyro_elbo_lab.objectives.beta_elbo import BetaELBO
from pyro_elbo_lab.objectives.cubo import CUBO
from pyro_elbo_lab.objectives.fdiv import FDivergence
from pyro_elbo_lab.objectives.iwae import IWAE, IWAEDReG
from pyro_elbo_lab.objectives.msc import MarkovianScoreClimbing
from pyro_elbo_lab.objectives.renyi import RenyiBound, VRMax
from pyro_elbo_lab.objectives.rws import ParticleRWS, RWSDReG, RWSScore
from pyro_elbo_lab.objectives.stl import StickingTheLanding
from pyro_elbo_lab.objectives.tvo import ThermodynamicVariationalObjective
from pyro_elbo_lab.objectives.vimco import VIMCO

__all__ = [
    "CUBO",
    "IWAE",
    "VIMCO",
    "BetaELBO",
    "FDivergence",
    "IWAEDReG",
    "MarkovianScoreClimbing",
    "ParticleObjective",
    "ParticleRWS",
    "RWSDReG",
    "RWSScore",
    "RenyiBound",
    "StickingTheLanding",
    "ThermodynamicVariationalObjective",
    "VRMax",
    "pyro_builtin",
]
