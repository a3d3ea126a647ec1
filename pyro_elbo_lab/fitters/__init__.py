r"""Fitters: how a run turns a guide into an approximation, one iteration at a time.

``fitter=svi`` (the lab's default, :mod:`pyro_elbo_lab.lab.fit`) steps Pyro's SVI with an
objective and an optimiser. The others are not ELBO losses: they fit a full-covariance
Gaussian over the unconstrained latents by their own updates and write it into an
``AutoMultivariateNormal`` (``guide=mvn``), so everything downstream is unchanged.

==============  =============================================================
``gsm``         Gaussian score matching (Modi et al. 2023)
``bam``         batch and match (Cai et al. 2024)
``pathfinder``  Pathfinder (Zhang et al. 2022), single- or multi-path
``dadvi``       deterministic ADVI (Giordano et al. 2024), any reparameterised guide
``saa``         SAA for VI (Burroni et al. 2024), Gaussian guides
==============  =============================================================
"""

from pyro_elbo_lab.fitters.bam import BatchAndMatch, bam_update
from pyro_elbo_lab.fitters.base import Fitter
from pyro_elbo_lab.fitters.dadvi import DADVI, SAA
from pyro_elbo_lab.fitters.gaussian import Gaussian, GaussianFitter
from pyro_elbo_lab.fitters.gsm import GaussianScoreMatching, gsm_update
from pyro_elbo_lab.fitters.pathfinder import Pathfinder

__all__ = [
    "DADVI",
    "SAA",
    "BatchAndMatch",
    "Fitter",
    "Gaussian",
    "GaussianFitter",
    "GaussianScoreMatching",
    "Pathfinder",
    "bam_update",
    "gsm_update",
]
