"""Variational objectives: Pyro's own, registered, and ours on the shared particle engine."""

from pyro_elbo_lab.objectives import pyro_builtin
from pyro_elbo_lab.objectives.particles import LogWeights, sample_log_weights

__all__ = ["LogWeights", "pyro_builtin", "sample_log_weights"]
