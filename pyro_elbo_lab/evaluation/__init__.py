"""What we measure about a fitted guide."""

from pyro_elbo_lab.evaluation.bounds import estimate_elbo, estimate_iwae
from pyro_elbo_lab.evaluation.estimate import Estimate
from pyro_elbo_lab.evaluation.predictive import heldout_log_likelihood
from pyro_elbo_lab.evaluation.suite import EvaluationSettings, evaluate_guide

__all__ = [
    "Estimate",
    "EvaluationSettings",
    "estimate_elbo",
    "estimate_iwae",
    "evaluate_guide",
    "heldout_log_likelihood",
]
