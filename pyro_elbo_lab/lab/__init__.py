"""The Hydra lab: build, fit, evaluate, record, report."""

from pyro_elbo_lab.lab.run import run

__all__ = ["run"]
