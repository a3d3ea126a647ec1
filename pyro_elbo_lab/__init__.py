"""pyro-elbo-lab: variational objectives and guide families as swappable Pyro components.

Components are looked up by name in :mod:`pyro_elbo_lab.registry`
(``registry.objectives``, ``registry.guides``, ``registry.models``).
"""

__version__ = "0.1.0"
