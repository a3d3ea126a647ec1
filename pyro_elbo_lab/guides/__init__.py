"""Variational families: Pyro's autoguides, registered, and ours."""

from pyro_elbo_lab.guides import empty, pyro_builtin, structured
from pyro_elbo_lab.guides.amortized import (
    AmortizedEncoderGuide,
    AutoAmortizedBernoulli,
    AutoAmortizedNormal,
)
from pyro_elbo_lab.guides.discrete import AutoLocalCategorical
from pyro_elbo_lab.guides.flows import AutoFlow, AutoIAF
from pyro_elbo_lab.guides.mixture import AutoGaussianMixture
from pyro_elbo_lab.guides.pyro_builtin import guide_target
from pyro_elbo_lab.guides.student_t import AutoMultivariateStudentT

__all__ = [
    "AmortizedEncoderGuide",
    "AutoAmortizedBernoulli",
    "AutoAmortizedNormal",
    "AutoFlow",
    "AutoGaussianMixture",
    "AutoIAF",
    "AutoLocalCategorical",
    "AutoMultivariateStudentT",
    "empty",
    "guide_target",
    "pyro_builtin",
    "structured",
]
