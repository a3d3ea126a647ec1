"""pyro-elbo-lab: variational objectives and guide families as swappable Pyro components."""

from pyro_elbo_lab.registry import guides, models, objectives

__version__ = "0.1.0"
__all__ = ["__version__", "guides", "models", "objectives"]
