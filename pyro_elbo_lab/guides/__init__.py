"""Variational families: Pyro's autoguides, registered, and ours."""

from pyro_elbo_lab.guides import pyro_builtin
from pyro_elbo_lab.guides.pyro_builtin import guide_target

__all__ = ["guide_target", "pyro_builtin"]
