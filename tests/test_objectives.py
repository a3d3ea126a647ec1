"""Objectives on the engine, checked against exact answers.

Tolerances come from the Monte Carlo standard error of the quantity compared (a
difference must exceed, or stay within, 4 standard errors), never hand-tuned.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.models import GaussianMixture, NormalNormal
from pyro_elbo_lab.objectives import (
    IWAE,
    VIMCO,
    BetaELBO,
    IWAEDReG,
    RenyiBound,
    StickingTheLanding,
)
from pyro_elbo_lab.registry import objectives
from tests.helpers import (
    LocalLatentModel,
    assert_mean_gradients_agree,
    distorted_autonormal,
    gradient_draws,
    guide_parameters,
    posterior_guide,
    set_gaussian_guide,
)

MODEL = NormalNormal(num_train=20, seed=0)
EXACT = MODEL.exact_log_evidence()
POSTERIOR = MODEL.exact_posterior()["loc"].base_dist
#: every objective of this package (Pyro's own are checked in test_contracts)
OURS = [
    name
    for name in objectives.names()
    if objectives.get(name).factory.__module__ != "pyro_elbo_lab.objectives.pyro_builtin"
]
LOWER_BOUNDS = {
    "iwae": lambda: IWAE(num_particles=8),
    "iwae_dreg": lambda: IWAEDReG(num_particles=8),
    "stl": lambda: StickingTheLanding(num_particles=8),
    "vr(alpha=0.5)": lambda: RenyiBound(alpha=0.5, num_particles=8),
    "vr(alpha=0.5, dreg)": lambda: RenyiBound(alpha=0.5, num_particles=8, dreg=True),
    "beta_elbo(beta=1)": lambda: BetaELBO(beta=1.0, num_particles=8),
}


def bound_draws(objective, model, guide, repeats: int, *args) -> torch.Tensor:
    return torch.tensor(
        [-objective.loss(model, guide, *args) for _ in range(repeats)], dtype=torch.float64
    )


def mean_and_se(draws: torch.Tensor) -> tuple[float, float]:
    return float(draws.mean()), float(draws.std() / math.sqrt(len(draws)))


def narrow_guide():
    """Narrower than the posterior and shifted by ~2 sd: bounds sit 2-4 nats below log p(x)."""
    return posterior_guide(MODEL, scale_factor=0.7, shift=0.4)


@pytest.mark.parametrize("name", LOWER_BOUNDS)
def test_lower_bounds_sit_below_the_log_evidence(name):
    guide = narrow_guide()
    mean, se = mean_and_se(bound_draws(LOWER_BOUNDS[name](), MODEL, guide, 200))
    assert mean + 4 * se < EXACT


@pytest.mark.parametrize("name", [n for n in LOWER_BOUNDS if not n.startswith("beta")] + ["vr_max"])
def test_bounds_equal_the_log_evidence_at_the_exact_posterior(name):
    objective = objectives.build("vr_max") if name == "vr_max" else LOWER_BOUNDS[name]()
    draws = bound_draws(objective, MODEL, posterior_guide(MODEL), 5)
    # Every weight equals p(x) there: no Monte Carlo error, only float32 rounding.
    assert torch.allclose(draws, torch.full_like(draws, EXACT), atol=2e-3)


def test_beta_elbo_converges_to_the_log_evidence_at_the_exact_posterior():
    # Its closed-form KL leaves the likelihood term's noise: exact in expectation only.
    mean, se = mean_and_se(
        bound_draws(BetaELBO(num_particles=8), MODEL, posterior_guide(MODEL), 200)
    )
    assert abs(mean - EXACT) < 4 * se


@pytest.mark.slow
def test_iwae_increases_with_k_and_iwae_1_is_the_elbo():
    guide = narrow_guide()
    estimates = {k: bound_draws(IWAE(num_particles=k), MODEL, guide, 300) for k in (1, 10, 100)}
    means = {k: mean_and_se(draws) for k, draws in estimates.items()}
    for smaller, larger in ((1, 10), (10, 100)):
        gap = means[larger][0] - means[smaller][0]
        assert gap > 4 * math.hypot(means[larger][1], means[smaller][1])
    assert means[100][0] < EXACT
    elbo = mean_and_se(torch.tensor([-Trace_ELBO().loss(MODEL, guide) for _ in range(300)]))
    assert abs(means[1][0] - elbo[0]) < 4 * math.hypot(means[1][1], elbo[1])


@pytest.mark.slow
def test_dreg_is_an_unbiased_estimate_of_the_iwae_gradient():
    guide = distorted_autonormal(MODEL)
    standard = gradient_draws(IWAE(num_particles=10), MODEL, guide, 1500)
    dreg = gradient_draws(IWAEDReG(num_particles=10), MODEL, guide, 1500)
    assert_mean_gradients_agree(standard, dreg)


@pytest.mark.slow
def test_dreg_guide_snr_does_not_fall_with_k_while_iwae_does():
    """Rainforth et al. (2018): IWAE's guide SNR is O(1/sqrt(K)); DReG's is not."""
    guide = distorted_autonormal(MODEL)

    def snr(objective_class, k):
        draws = gradient_draws(objective_class(num_particles=k), MODEL, guide, 400)
        return float((draws.mean(0).abs() / draws.std(0)).mean())

    iwae = {k: snr(IWAE, k) for k in (1, 100)}
    dreg = {k: snr(IWAEDReG, k) for k in (1, 100)}
    # An SNR from 400 draws has relative error ~1/sqrt(400) = 5%; theory moves IWAE's
    # down by a factor sqrt(100) = 10 between K=1 and K=100, and DReG's not at all.
    assert iwae[100] < 0.5 * iwae[1], iwae
    assert dreg[100] > dreg[1], dreg


@pytest.mark.parametrize("guide_class", [AutoNormal, AutoDiagonalNormal, AutoMultivariateNormal])
def test_stl_gradient_variance_vanishes_at_the_exact_posterior(guide_class):
    pyro.clear_param_store()
    guide = guide_class(MODEL)
    guide()
    set_gaussian_guide(guide, POSTERIOR.loc, POSTERIOR.scale)
    stl = gradient_draws(StickingTheLanding(num_particles=1), MODEL, guide, 50)
    trace = gradient_draws(_TraceAsObjective(), MODEL, guide, 50)
    assert float(stl.var(0).max()) <= 1e-12
    assert float(trace.var(0).max()) > 1e-3


class _TraceAsObjective:
    def differentiable_loss(self, model, guide):
        return Trace_ELBO().differentiable_loss(model, guide)


def test_vr_at_alpha_zero_is_iwae_value_and_gradient():
    guide = distorted_autonormal(MODEL)
    params = guide_parameters(guide)
    results = []
    for objective in (IWAE(num_particles=6), RenyiBound(alpha=0.0, num_particles=6)):
        pyro.set_rng_seed(5)
        loss = objective.differentiable_loss(MODEL, guide)
        results.append((loss, torch.autograd.grad(loss, params)))
    (iwae_loss, iwae_grads), (vr_loss, vr_grads) = results
    assert torch.allclose(iwae_loss, vr_loss)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(iwae_grads, vr_grads, strict=True))


def test_vr_dreg_at_alpha_zero_is_iwae_dreg():
    guide = distorted_autonormal(MODEL)
    params = guide_parameters(guide)
    grads = []
    for objective in (IWAEDReG(num_particles=6), RenyiBound(alpha=0.0, num_particles=6, dreg=True)):
        pyro.set_rng_seed(5)
        grads.append(torch.autograd.grad(objective.differentiable_loss(MODEL, guide), params))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


@pytest.mark.slow
def test_vr_approaches_the_elbo_as_alpha_goes_to_one():
    guide = narrow_guide()
    vr = mean_and_se(bound_draws(RenyiBound(alpha=0.999, num_particles=8), MODEL, guide, 300))
    elbo = mean_and_se(bound_draws(StickingTheLanding(num_particles=8), MODEL, guide, 300))
    iwae = mean_and_se(bound_draws(IWAE(num_particles=8), MODEL, guide, 300))
    assert abs(vr[0] - elbo[0]) < 4 * math.hypot(vr[1], elbo[1])
    assert iwae[0] - vr[0] > 4 * math.hypot(vr[1], iwae[1])  # and it is no longer IWAE


@pytest.mark.parametrize("subsample_size", [None, 4])
def test_per_datapoint_iwae_is_exact_at_the_posterior_and_scales_minibatches(subsample_size):
    local = LocalLatentModel(num_data=12)
    objective = IWAE(num_particles=5, per_datapoint=True)
    draws = bound_draws(objective, local.model, local.guide, 200, local.data, subsample_size)
    mean, se = mean_and_se(draws)
    if subsample_size is None:
        assert torch.allclose(draws, torch.full_like(draws, local.exact_log_evidence()), atol=1e-3)
    else:  # N/B-scaled minibatch bounds: unbiased for the full sum
        assert abs(mean - local.exact_log_evidence()) < 4 * se


def test_per_datapoint_iwae_is_tighter_than_the_joint_bound():
    local = LocalLatentModel(num_data=12)

    def guide(data, subsample_size=None):
        local.guide(data, subsample_size, scale_factor=2.0)

    joint = mean_and_se(bound_draws(IWAE(num_particles=10), local.model, guide, 200, local.data))
    per_point = mean_and_se(
        bound_draws(IWAE(num_particles=10, per_datapoint=True), local.model, guide, 200, local.data)
    )
    assert per_point[0] - joint[0] > 4 * math.hypot(per_point[1], joint[1])
    assert per_point[0] < local.exact_log_evidence()


def test_per_datapoint_bounds_refuse_global_latents():
    with pytest.raises(ConfigError, match=r"\['loc'\] are global .* use per_datapoint=false"):
        IWAE(num_particles=2, per_datapoint=True).loss(MODEL, posterior_guide(MODEL))


def test_beta_elbo_warms_up_linearly_and_resets():
    objective = BetaELBO(beta=2.0, beta_start=0.5, warmup_steps=4)
    guide = distorted_autonormal(MODEL)
    optim = pyro.optim.Adam({"lr": 0.0})
    svi = SVI(MODEL, guide, optim, loss=objective)
    betas = []
    for _ in range(6):
        betas.append(objective.current_beta)
        svi.step()
    assert betas == [0.5, 0.875, 1.25, 1.625, 2.0, 2.0]
    objective.loss(MODEL, guide)  # evaluation does not advance the schedule
    assert objective.steps_taken == 6
    objective.reset()
    assert objective.current_beta == 0.5


@pytest.mark.slow
def test_beta_elbo_uses_the_closed_form_kl_and_matches_the_monte_carlo_elbo():
    guide = narrow_guide()
    objective = BetaELBO(beta=1.0, num_particles=8)
    analytic = mean_and_se(bound_draws(objective, MODEL, guide, 300))
    assert objective.analytic_kl_sites == ("loc",)
    monte_carlo = mean_and_se(bound_draws(StickingTheLanding(num_particles=8), MODEL, guide, 300))
    assert abs(analytic[0] - monte_carlo[0]) < 4 * math.hypot(analytic[1], monte_carlo[1])
    # The closed form leaves no sampling noise in the KL term itself.
    _, kl = objective.likelihood_and_kl(objective._batch(MODEL, guide, (), {}, stop=False))
    assert torch.allclose(kl, kl[0].expand_as(kl))


@pytest.mark.parametrize("name", OURS)
@pytest.mark.parametrize("model_class", [NormalNormal, GaussianMixture])
def test_objectives_train_through_plain_svi_with_autonormal(name, model_class):
    model = model_class()
    guide = AutoNormal(model)
    objective = objectives.build(name, num_particles=4)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=objective)
    elbo = Trace_ELBO(num_particles=500, vectorize_particles=True, max_plate_nesting=1)
    before = elbo.loss(model, guide, model.train_data)
    losses = [svi.step(model.train_data) for _ in range(30)]
    assert all(math.isfinite(loss) for loss in losses)
    # Judged by the ELBO, not each objective's own loss: CUBO's and MSC's estimates
    # are not monotone in the fit while q is far from the posterior.
    assert elbo.loss(model, guide, model.train_data) < before


@pytest.mark.parametrize("name", OURS)
def test_objectives_train_the_gmm_through_the_lab(name, compose_config):
    from pyro_elbo_lab.lab import run

    record = run(compose_config(f"objective={name}", "model=gmm", "steps=10"))
    assert record["status"] == "ok", record["message"]


def test_objectives_work_as_elbo_modules_with_a_torch_optimiser():
    pyro.clear_param_store()
    guide = AutoNormal(MODEL)
    loss_module = IWAEDReG(num_particles=8)(MODEL, guide)
    loss_module(MODEL.train_data)  # set the guide up
    optimiser = torch.optim.Adam(loss_module.parameters(), lr=0.05)
    for _ in range(200):
        optimiser.zero_grad()
        loss = loss_module(MODEL.train_data)
        loss.backward()
        optimiser.step()
    assert abs(-loss.detach().item() - EXACT) < 1.0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RenyiBound(alpha=1.0), r"alpha must be a number other than 1"),
        (lambda: RenyiBound(alpha=-math.inf, dreg=True), r"dreg is not defined for alpha=-inf"),
        (lambda: IWAE(num_particles=4, vectorize_particles=False), r"one vectorised pass"),
        (lambda: IWAE(particles=4), r"IWAE has no parameter 'particles'"),
        (lambda: VIMCO(num_particles=1), r"objective.num_particles must be an integer >= 2"),
        (lambda: IWAE(compile_options=["max-autotune"]), r"compile_options must be a mapping"),
        (lambda: StickingTheLanding(per_datapoint=True), r"has no per-datapoint form"),
        (lambda: BetaELBO(beta=-1.0), r"objective.beta must be >= 0"),
        (lambda: IWAE(num_particles=0), r"objective.num_particles must be an integer >= 1"),
    ],
)
def test_bad_objective_settings_name_the_fix(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_our_objectives_refuse_enumerated_models_with_the_fix():
    model = GaussianMixture(num_train=20, assignment="enumerated")
    guide = AutoNormal(pyro.poutine.block(model, hide=["assignment"]))
    with pytest.raises(ConfigError, match="objective=trace_enum"):
        IWAE(num_particles=2).loss(model, guide)
