r"""The engine: the machinery every objective shares, one job per module.

=====================  ==================================================================
module                 job
=====================  ==================================================================
``program``            running a (model, guide) pair: the particle plate, unvectorised
                       traces, the model's plate depth
``particles``          the vectorised particle pass: K draws of the guide weighed under the
                       model, :math:`\log w_k` and what gradient estimators need
``reduce``             site log densities summed per particle or per datapoint
``groups``             log-weights arranged jointly or per datapoint for a bound
``strata``             stratified draws of mixture guides (a Pyro ``Messenger``)
``parameters``         programs run with their parameters read as other tensors (stopped,
                       or traced), through public routes
``checks``             refusals before compute: one line naming site, reason and fix
``logmath``            log-space reductions over particles
``options``            the options every engine objective takes, checked in one place
``compiled``           the compiled fast path: one traced, compiled step
``compiled_svi``       SVI with the Adam update traced into that step
``counting``           model evaluations (one per particle), the cost unit of budgets
``unconstrained``      the posterior as a counted density and score on one unconstrained
                       vector (score-based fitters, Stein checks)
=====================  ==================================================================

Only the names below leave the package; nothing outside it imports a private name.
"""

from pyro_elbo_lab.engine.checks import (
    SiteChecks,
    check_latents,
    distribution_name,
    not_vectorisable,
    refuse_model_parameters,
    require_batch_dims_in_plates,
    require_reparameterized,
)
from pyro_elbo_lab.engine.compile_cache import compile_cache_dir, use_compile_cache
from pyro_elbo_lab.engine.compiled import WARNING_PREFIX, CompiledPath
from pyro_elbo_lab.engine.compiled_svi import CompiledSVI
from pyro_elbo_lab.engine.counting import CountedModel
from pyro_elbo_lab.engine.gradient_scale import LatentGradientScale
from pyro_elbo_lab.engine.groups import WeightGroups, group_weights
from pyro_elbo_lab.engine.logmath import (
    leave_one_out_mean,
    log_mean_exp,
    log_sum_exp_without_each,
)
from pyro_elbo_lab.engine.options import EngineOptions, PyroELBOOptions
from pyro_elbo_lab.engine.parameters import (
    DetachedParameters,
    ParameterValues,
    parameter_constraints,
    run_with_parameters,
    stopped_call,
)
from pyro_elbo_lab.engine.particles import (
    LogWeights,
    model_has_params,
    model_log_density_at_stopped_latents,
    sample_log_weights,
    sample_observed_log_likelihood,
    weighed_particles,
)
from pyro_elbo_lab.engine.program import (
    PARTICLE_PLATE,
    detached_values,
    guess_max_plate_nesting,
    particle_plate,
    plate_depth,
    random_streams_restored,
    unbatched_traces,
)
from pyro_elbo_lab.engine.reduce import SiteReducer
from pyro_elbo_lab.engine.strata import StratifiedDraw, StratifiedParticles
from pyro_elbo_lab.engine.unconstrained import UnconstrainedDensity

__all__ = [
    "PARTICLE_PLATE",
    "WARNING_PREFIX",
    "CompiledPath",
    "CompiledSVI",
    "CountedModel",
    "DetachedParameters",
    "EngineOptions",
    "LatentGradientScale",
    "LogWeights",
    "ParameterValues",
    "PyroELBOOptions",
    "SiteChecks",
    "SiteReducer",
    "StratifiedDraw",
    "StratifiedParticles",
    "UnconstrainedDensity",
    "WeightGroups",
    "check_latents",
    "compile_cache_dir",
    "detached_values",
    "distribution_name",
    "group_weights",
    "guess_max_plate_nesting",
    "leave_one_out_mean",
    "log_mean_exp",
    "log_sum_exp_without_each",
    "model_has_params",
    "model_log_density_at_stopped_latents",
    "not_vectorisable",
    "parameter_constraints",
    "particle_plate",
    "plate_depth",
    "random_streams_restored",
    "refuse_model_parameters",
    "require_batch_dims_in_plates",
    "require_reparameterized",
    "run_with_parameters",
    "sample_log_weights",
    "sample_observed_log_likelihood",
    "stopped_call",
    "unbatched_traces",
    "use_compile_cache",
    "weighed_particles",
]
