"""Guide families against exact posteriors: every registered guide fits Normal–Normal,
the mixture holds both modes of a bimodal posterior, the encoder matches per-point
posteriors, and each family keeps Pyro's AutoGuide contract (Predictive, median,
quantiles, plates, vectorised particles).

Tolerances come from Monte Carlo error: moments of M guide draws are compared with the
exact ones within 4 standard errors (sd/sqrt(M) for a mean, sqrt(2/(M-1)) relative for
a variance).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import pyro
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.evaluation.bounds import estimate_iwae
from pyro_elbo_lab.evaluation.estimate import Estimate
from pyro_elbo_lab.evaluation.posterior_error import guide_draws, importance_resampled_draws
from pyro_elbo_lab.lab import run
from pyro_elbo_lab.models import NormalNormal
from pyro_elbo_lab.objectives import IWAE, BetaELBO, IWAEDReG
from pyro_elbo_lab.registry import guides, models
from tests.helpers import assert_normal_moments

MODEL = NormalNormal(num_train=20, seed=0)
POSTERIOR = MODEL.exact_posterior()["loc"].base_dist
DRAWS = 400
#: options a guide needs beyond its defaults on this model
OPTIONS = {"guide_list": {"parts": [{"guide": "mvn", "sites": ["loc"]}]}}

#: every registered guide that should reach the exact posterior of a global-latent model
FITTING = [
    name
    for name in guides.names()
    if not any(guides.get(name).trait(t) for t in ("point_estimate", "local_latents", "no_latents"))
]


def _objective(name: str):
    if name == "trace":
        return Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    return IWAE(num_particles=8, max_plate_nesting=1)


def _fit(guide, objective, steps: int = 1500, model=MODEL, decay_to: float = 0.1) -> None:
    """SVI with lr decaying from 0.05 to ``decay_to`` x 0.05, so the last iterates sit
    close to the optimum."""
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": decay_to ** (1 / steps)})
    svi = SVI(model, guide, optim, objective)
    for _ in range(steps):
        svi.step(model.train_data)


def _draws(guide, model=MODEL, site="loc") -> torch.Tensor:
    """``DRAWS`` draws of ``site`` under the guide, one vectorised pass, ``[DRAWS, -1]``."""
    return guide_draws(model, guide, (model.train_data,), [site], DRAWS, 1)[site]


def _assert_matches_posterior(draws: torch.Tensor) -> None:
    assert_normal_moments(draws.reshape(DRAWS, -1), POSTERIOR.loc, POSTERIOR.scale)


@dataclass(frozen=True)
class IWAEFit:
    """A guide fitted by IWAE (K = 8): its own draws, its importance-resampled draws,
    and the gap between the exact log evidence and its bound."""

    draws: torch.Tensor
    resampled: torch.Tensor
    gap: Estimate


@functools.cache
def _iwae_fit(name: str) -> IWAEFit:
    """One IWAE fit per guide, shared by the two tests that read it."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = guides.build(name, MODEL, **OPTIONS.get(name, {}))
    objective = _objective("iwae")
    _fit(guide, objective)
    draws = _draws(guide)
    args = (MODEL.train_data,)
    resampled = importance_resampled_draws(
        MODEL,
        guide,
        args,
        ["loc"],
        DRAWS,
        num_particles=objective.num_particles,
        max_plate_nesting=1,
        stratify=objective.supports_stratified,
    )["loc"]
    bound = estimate_iwae(
        MODEL,
        guide,
        args,
        num_particles=objective.num_particles,
        num_repeats=4000,
        max_plate_nesting=1,
    )
    gap = Estimate(MODEL.exact_log_evidence() - bound.value, bound.std_error, bound.num_samples)
    return IWAEFit(draws, resampled, gap)


@pytest.mark.slow
@pytest.mark.parametrize("name", FITTING)
def test_every_guide_fits_the_normal_normal_posterior_with_trace(name):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = guides.build(name, MODEL, **OPTIONS.get(name, {}))
    _fit(guide, _objective("trace"))
    _assert_matches_posterior(_draws(guide))


@pytest.mark.slow
@pytest.mark.parametrize("name", FITTING)
def test_every_guide_fits_the_normal_normal_posterior_with_iwae(name):
    """The posterior IWAE fits is the importance-resampled guide q_IW (K particles, one
    kept in proportion to its weight): L_K is q_IW's augmented ELBO, so
    KL(q_IW || p) <= log p(x) - L_K. Checked: q_IW's moments, and L_K within 0.1 nat of
    the exact log evidence (plus 4 s.e. of its estimate)."""
    fit = _iwae_fit(name)
    _assert_matches_posterior(fit.resampled)
    assert fit.gap.value < 0.1 + 4 * fit.gap.std_error, fit.gap


#: The guide itself after IWAE, measured (1500 steps, lr 0.05 decaying to 0.005, seed 0)
#: and kept visible. The bound barely weighs these directions (the guide's gradient
#: signal falls as 1/sqrt(K), Rainforth et al. 2018; here tails and a far light
#: component move L_K by < 0.01 nat) or, for SIWAE, not at all: a component that
#: proposes no mass cancels (alpha_c w = p / q_c), so the bound is tight with it. A
#: strict xfail turns red the day one of them starts fitting. The others pass at this
#: seed only: experiments/guides_under_iwae measured a mean-field Gaussian's own sd off
#: by 0.56 at seed 2, while every resampled guide stayed at the noise floor.
KNOWN_MISSES = {
    "flow": "affine-coupling flow left over-dispersed: variance 3.0x and 5.7x",
    "iaf": "IAF mean off by 0.28 posterior sd (tolerance 0.2), variance 1.7x",
    "mixture": (
        "SIWAE is tight with a component 9 posterior sd away holding weight 0.24: "
        "mean off by 5 sd, variance 65x"
    ),
    "student_t": "IWAE keeps heavy tails (df 6): variance 1.46x and 1.35x",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[name]))
        if name in KNOWN_MISSES
        else name
        for name in FITTING
    ],
)
def test_the_guide_itself_fits_the_posterior_after_iwae(name):
    _assert_matches_posterior(_iwae_fit(name).draws)


@pytest.mark.parametrize("name", FITTING)
def test_guides_keep_the_autoguide_contract(name):
    """median / quantiles per site, Predictive draws, and K vectorised particles."""
    pyro.clear_param_store()
    guide = guides.build(name, MODEL, **OPTIONS.get(name, {}))
    guide(MODEL.train_data)
    median = guide.median(MODEL.train_data)
    assert median["loc"].shape == (2,)
    quantiles = guide.quantiles([0.1, 0.5, 0.9], MODEL.train_data)
    assert quantiles["loc"].shape == (3, 2)
    assert (quantiles["loc"][0] < quantiles["loc"][2]).all()
    assert _draws(guide).shape == (DRAWS, 2)
    predictive = Predictive(MODEL.model, guide=guide, num_samples=3)(MODEL.train_data)
    assert predictive["loc"].shape[0] == 3 and predictive["loc"].numel() == 6
    loss = IWAE(num_particles=8, max_plate_nesting=1).loss(MODEL, guide, MODEL.train_data)
    assert math.isfinite(loss)


# -- the mixture ---------------------------------------------------------------------


def _bimodal_run(compose_config, guide: str, objective: str) -> dict:
    record = run(
        compose_config(
            "model=bimodal",
            f"guide={guide}",
            f"objective={objective}",
            "objective.num_particles=8",
            "steps=1000",
            "evaluation.elbo_particles=4000",
            fast=False,
        )
    )
    assert record["status"] == "ok", record["message"]
    return record


@pytest.mark.slow
def test_mixture_holds_both_modes_where_single_gaussians_cannot(compose_config):
    """Label switching makes the posterior of (locs_0, locs_1) bimodal; reverse-KL
    Gaussians pick one mode, the stratified mixture keeps both and gains ~log 2."""
    mixture = _bimodal_run(compose_config, "mixture", "beta_elbo")
    guide_draws = _mode_shares(compose_config)
    assert 0.2 < guide_draws < 0.8, guide_draws
    for single in ("normal", "mvn"):
        other = _bimodal_run(compose_config, single, "trace")["metrics"]
        gap = mixture["metrics"]["elbo"] - other["elbo"]
        se = math.hypot(mixture["metrics"]["elbo_se"], other["elbo_se"])
        assert gap > 4 * se, (single, gap, se)


def _mode_shares(compose_config) -> float:
    """Share of the fitted mixture's draws in the mode locs_0 < locs_1."""
    model = models.build("bimodal")
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = guides.build("mixture", model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), BetaELBO(num_particles=8))
    for _ in range(1000):
        svi.step(model.train_data)
    locs = _draws(guide, model, site="locs").reshape(DRAWS, 2)
    return float((locs[:, 0] < locs[:, 1]).double().mean())


def test_mixture_stratified_particles_carry_the_mixture_weights():
    pyro.clear_param_store()
    guide = guides.build("mixture", MODEL, num_components=2)
    guide(MODEL.train_data)
    with torch.no_grad():
        guide.logits.copy_(torch.tensor([math.log(0.8), math.log(0.2)]))
    from pyro_elbo_lab.engine import sample_log_weights

    weights = sample_log_weights(
        MODEL, guide, (MODEL.train_data,), {}, num_particles=6, max_plate_nesting=1, stratify=True
    )
    expected = torch.tensor([0.8, 0.2] * 3).log() - math.log(3)
    assert torch.allclose(weights.log_particle_weights, expected, atol=1e-6)
    assert torch.allclose(weights.log_particle_weights.exp().sum(), torch.tensor(1.0))


def test_stratified_elbo_is_unbiased_for_the_mixture_elbo():
    """sum_k pi_k log w_k (stratified) and the ancestral Monte Carlo ELBO agree in mean."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = guides.build("mixture", MODEL, init_scale=0.3)
    guide(MODEL.train_data)
    stratified = torch.tensor(
        [-BetaELBO(num_particles=8).loss(MODEL, guide, MODEL.train_data) for _ in range(300)]
    )
    ancestral = torch.tensor(
        [
            -Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1).loss(
                MODEL, guide, MODEL.train_data
            )
            for _ in range(300)
        ]
    )
    se = math.sqrt(stratified.var() / 300 + ancestral.var() / 300)
    assert abs(float(stratified.mean() - ancestral.mean())) < 4 * se


def test_low_rank_mixture_refuses_path_objectives_that_cannot_stratify():
    pyro.clear_param_store()
    guide = guides.build("mixture", MODEL, rank=1)
    with pytest.raises(ConfigError, match="stratif"):
        IWAEDReG(num_particles=8).loss(MODEL, guide, MODEL.train_data)
    # the diagonal mixture's ancestral draws are implicitly reparameterised
    pyro.clear_param_store()
    diagonal = guides.build("mixture", MODEL)
    assert math.isfinite(IWAEDReG(num_particles=8).loss(MODEL, diagonal, MODEL.train_data))
    with pytest.raises(ConfigError, match=r"multiple of guide\.num_components"):
        IWAE(num_particles=3).loss(MODEL, guide, MODEL.train_data)


# -- the amortised encoder -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("subsample", [None, 25])
def test_amortized_encoder_matches_the_per_point_posteriors(subsample, compose_config):
    steps = 3000 if subsample else 1500  # minibatches: more, noisier steps
    overrides = [
        "model=factor_analysis",
        "guide=amortized",
        "objective=trace",
        f"steps={steps}",
        "optim=clipped_adam",
        f"optim.optim_args.lrd={0.05 ** (1 / steps)}",  # lr 0.05 -> 0.0025
    ]
    if subsample:
        overrides.append(f"model.subsample_size={subsample}")
    record = run(compose_config(*overrides, fast=False))
    assert record["status"] == "ok", record["message"]
    error = record["metrics"]["posterior_error"]["ability"]
    # Standardised by each point's posterior sd, over all 100 points.
    assert error["mean_error_rms"] < 0.25 and error["sd_error_rms"] < 0.25, error


def test_amortized_guide_follows_the_models_minibatch():
    model = models.build("factor_analysis", subsample_size=10)
    pyro.clear_param_store()
    guide = guides.build("amortized", model)
    guide_trace = pyro.poutine.trace(guide).get_trace(model.train_data)
    assert guide_trace.nodes["ability"]["value"].shape == (10, 1)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(
        model.train_data
    )
    assert torch.equal(model_trace.nodes["data"]["value"], guide_trace.nodes["data"]["value"])
    # the minibatch log-likelihood is scaled by N / batch
    assert model_trace.nodes["obs"]["scale"] == pytest.approx(100 / 10)


def test_amortized_guide_per_point_median_and_quantiles():
    model = models.build("factor_analysis")
    pyro.clear_param_store()
    guide = guides.build("amortized", model)
    guide(model.train_data)
    assert guide.median(model.train_data)["ability"].shape == (100, 1)
    assert guide.quantiles([0.1, 0.9], model.train_data)["ability"].shape == (2, 100, 1)


def test_amortized_refuses_models_without_local_latents():
    with pytest.raises(ConfigError, match="guide=normal"):
        guides.build("amortized", MODEL)


# -- compositions and configuration errors ----------------------------------------------


def test_guide_list_gives_each_part_its_family():
    model = models.build("eight_schools")
    pyro.clear_param_store()
    guide = guides.build(
        "guide_list",
        model,
        parts=[{"guide": "student_t", "sites": ["tau"]}, {"guide": "mvn", "sites": ["mu"]}],
    )
    guide(model.train_data)
    families = [type(part).__name__ for part in guide]
    assert families == ["AutoMultivariateStudentT", "AutoMultivariateNormal", "AutoNormal"]
    assert set(guide.median(model.train_data)) == {"mu", "tau", "theta_trans"}


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("mixture", {"num_components": 0}, "num_components"),
        ("student_t", {"init_df": 1.0}, "init_df"),
        ("flow", {"kind": "radial"}, "kind"),
        ("structured", {"conditionals": "cauchy"}, "conditionals"),
        ("guide_list", {"parts": [{"guide": "normal", "sites": ["nope"]}]}, "not latents"),
        ("guide_list", {"parts": []}, "at least one"),
        ("amortized", {"hidden": []}, "hidden"),
    ],
)
def test_bad_guide_settings_name_the_fix(name, params, message):
    model = models.build("factor_analysis") if name == "amortized" else MODEL
    with pytest.raises(ConfigError, match=message):
        guides.build(name, model, **params)


# -- the Student-t on eight schools -----------------------------------------------------


def _eight_schools_tau_errors(name: str, steps: int = 3000) -> tuple[float, float]:
    """Standardised errors of the guide's tau mean and sd against the posteriordb draws."""
    model = models.build("eight_schools")
    reference = model.reference_posterior_draws()["tau"]
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = guides.build(name, model)
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    _fit(guide, elbo, steps, model=model, decay_to=0.05)
    tau = guide_draws(model, guide, (model.train_data,), ["tau"], 20_000, 1)["tau"].flatten()
    scale = reference.std()
    return float((tau.mean() - reference.mean()) / scale), float((tau.std() - scale) / scale)


@pytest.mark.slow
def test_student_t_gets_tau_closer_to_the_reference_than_normal():
    """Measured (seeds 0 and 1): normal -0.22/-0.23 and -0.19/-0.18 (mean/sd), student_t
    -0.13/-0.08 and -0.15/-0.15. Its fitted df grows large (~170): the gain comes from
    the full scale matrix as much as from the tails (mvn: -0.14/-0.11)."""
    normal = _eight_schools_tau_errors("normal")
    student_t = _eight_schools_tau_errors("student_t")
    # 20k guide draws and 10k reference draws: s.e. of each error below 0.02.
    assert abs(student_t[0]) < abs(normal[0]) - 0.04, (student_t, normal)
    assert abs(student_t[1]) < abs(normal[1]) - 0.04, (student_t, normal)
