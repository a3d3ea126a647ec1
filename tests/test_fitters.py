"""GSM, BaM and Pathfinder: exact on Gaussian targets (GSM, BaM), sensible on a
non-Gaussian one, registered, driven by the lab's loop, and refused where they cannot work."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.fitters import Gaussian, bam_update, gsm_update
from pyro_elbo_lab.lab import run
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.registry import fitters
from tests.helpers import GaussianTarget, correlated_gaussian

GAUSSIAN_FITTERS = ["gsm", "bam", "pathfinder"]


def _fit(name: str, target: LatentVariableModel, iterations: int, **options):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoMultivariateNormal(target.model)
    fitter = fitters.build(name, target, guide, **options)
    for _ in range(iterations):
        fitter.step()
        if fitter.converged:
            break
    with torch.no_grad():
        return fitter, guide.get_posterior()


@pytest.mark.parametrize(
    ("name", "options", "iterations"),
    [
        ("gsm", {}, 400),
        ("bam", {}, 100),
        ("bam", {"schedule": "constant", "learning_rate": 1e4, "batch_size": 20}, 5),
    ],
)
def test_score_based_fitters_reach_a_gaussian_target_exactly(name, options, iterations):
    """Both fixed points are the target itself: mean and covariance to float32 precision
    (the scores are float32), in the guide that every evaluation reads."""
    mean, covariance = correlated_gaussian()
    fitter, posterior = _fit(
        name, GaussianTarget(dist.MultivariateNormal(mean, covariance)), iterations
    )
    torch.testing.assert_close(posterior.loc, mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(posterior.covariance_matrix, covariance, atol=1e-3, rtol=1e-4)
    assert fitter.gradient_evals == fitter.model_evals == fitter.batch_size * fitter.iteration


def test_pathfinder_finds_the_mode_and_a_close_covariance_of_a_gaussian_target():
    """Pathfinder's Gaussian sits at the L-BFGS path's best point: the mean is the mode,
    the covariance an inverse-Hessian estimate (exact only with an exact line search)."""
    mean, covariance = correlated_gaussian()
    target = dist.MultivariateNormal(mean, covariance)
    fitter, posterior = _fit("pathfinder", GaussianTarget(target), 200)
    assert fitter.converged
    whitened = torch.linalg.solve_triangular(
        target.scale_tril, (posterior.loc - mean)[:, None], upper=False
    )
    assert float(whitened.detach().norm()) < 0.05
    kl = torch.distributions.kl_divergence(posterior, target).detach()
    assert float(kl) < 0.6  # from 10.3 at q0 = N(0, I)
    # every scored Gaussian costs its K = 5 ELBO draws on top of the path's gradients
    scored = fitter.model_evals - fitter.gradient_evals
    assert scored > 0 and scored % fitter.elbo_draws == 0


@pytest.mark.parametrize("name", GAUSSIAN_FITTERS)
def test_fitters_on_a_non_gaussian_target(name):
    """Independent Student-t(5) coordinates (mean 0, sd 1.29 × scale): every method's
    Gaussian is centred within 0.15 scale units and its sds within a factor 1.6 of the
    target's, well inside the spread between the t's scale (1) and sd (1.29)."""
    scale = torch.tensor([0.5, 1.0, 3.0])
    target = dist.StudentT(5.0, torch.zeros(3), scale).to_event(1)
    _, posterior = _fit(name, GaussianTarget(target), {"gsm": 1500, "bam": 300}.get(name, 500))
    assert bool(((posterior.loc / scale).abs() < 0.15).all()), posterior.loc
    ratio = posterior.covariance_matrix.diagonal().sqrt() / scale
    assert bool(((ratio > 1 / 1.6) & (ratio < 1.6 * math.sqrt(5 / 3))).all()), ratio


def test_gsm_update_matches_the_score_at_a_single_draw():
    """GSM's defining property: after one single-draw update the new Gaussian's score at
    the draw equals the target's score there."""
    generator = torch.Generator().manual_seed(1)
    state = Gaussian(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    point = torch.randn(1, 3, generator=generator, dtype=torch.float64)
    score = torch.randn(1, 3, generator=generator, dtype=torch.float64)
    new = gsm_update(state, point, score)
    new_score = -torch.linalg.solve(new.covariance, (point[0] - new.mean))
    torch.testing.assert_close(new_score, score[0])


def test_bam_update_with_infinite_learning_rate_matches_batch_moments():
    """λ → ∞: a Gaussian target's batch of D+1 or more draws pins q to the target."""
    mean, covariance = correlated_gaussian(3)
    mean, covariance = mean.double(), covariance.double()
    generator = torch.Generator().manual_seed(2)
    points = torch.randn(10, 3, generator=generator, dtype=torch.float64) * 2
    scores = -torch.linalg.solve(covariance, (points - mean).T).T
    state = Gaussian(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    new = bam_update(state, points, scores, learning_rate=1e10)
    torch.testing.assert_close(new.mean, mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(new.covariance, covariance, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", GAUSSIAN_FITTERS)
def test_lab_runs_each_fitter_and_records_its_cost(name, compose_config):
    config = compose_config(
        "model=kidiq_interaction", "guide=mvn", f"fitter={name}", "steps=20", "protocol=plain",
        "evaluation.elbo_particles=200", "evaluation.posterior_samples=300",
    )  # fmt: skip
    record = run(config)
    assert record["status"] == "ok", record["message"]
    assert record["components"]["objective"] == name == record["components"]["fitter"]
    fit, start = record["fit"], record["fit"]["start"]
    own_gradients = fit["gradient_evals"] - start["gradient_evals"]  # beside its start's
    assert 0 < own_gradients <= fit["model_evals"] - start["model_evals"]
    metrics = record["metrics"]
    for key in ("posterior_w1_mean", "posterior_sliced_w1", "posterior_gaussian_w2"):
        assert math.isfinite(metrics[key]), key
    assert isinstance(metrics["psis_khat"], float)  # inf where q misses the posterior
    assert set(metrics["posterior_distances"]["parameters"]) == {
        "beta[1]", "beta[2]", "beta[3]", "beta[4]", "sigma"
    }  # fmt: skip
    assert run(config)["metrics"]["elbo"] == metrics["elbo"]  # same seed, same numbers


def test_svi_records_one_gradient_evaluation_per_model_evaluation(compose_config):
    """SVI's own steps spend one gradient per model evaluation; the default (Laplace) start
    adds its line-search evaluations and Hessian-vector products on top, counted apart."""
    fit = run(compose_config("model=kidiq", "steps=10", "protocol=plain", "objective=iwae"))["fit"]
    start = fit["start"]
    assert start["method"] == "laplace" and start["gradient_evals"] > start["model_evals"] > 0
    svi_model_evals = fit["model_evals"] - start["model_evals"]
    assert fit["gradient_evals"] - start["gradient_evals"] == svi_model_evals > 10


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["fitter=gsm", "guide=normal"], "fitter=gsm fits a full-covariance Gaussian"),
        (
            ["fitter=bam", "guide=mvn", "++fitter.schedule=cosine"],
            "must be one of 'decaying', 'constant'",
        ),
        (["fitter=bam", "guide=mvn", "++fitter.batch_size=0"], "batch_size must be"),
        (["fitter=gsm", "guide=mvn", "++fitter.momentum=0.9"], "momentum"),
        (["fitter=pathfinder", "guide=mvn", "final_lr_fraction=0.1"], "final_lr_fraction"),
    ],
)
def test_fitter_misconfiguration_fails_in_one_line(overrides, message, compose_config):
    config = compose_config("model=kidiq", "steps=5", "protocol=plain", *overrides)
    with pytest.raises(ConfigError, match=message) as error:
        run(config)
    assert "\n" not in str(error.value)


def test_unknown_fitter_lists_svi_too():
    from pyro_elbo_lab.lab.components import _check_fitter  # the check the lab runs

    class _Components:
        fitter_name, fitter_params = "advi", {}

    with pytest.raises(ConfigError, match="choose svi or one of bam, dadvi, gsm, pathfinder, saa"):
        _check_fitter(_Components())


def test_gaussian_fitter_refuses_a_mean_field_guide():
    target = GaussianTarget(dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pytest.raises(ConfigError, match=r"into guide=mvn .* use guide=mvn, or name no guide"):
        fitters.build("gsm", target, AutoNormal(target.model))


@pytest.mark.parametrize("name", GAUSSIAN_FITTERS)
def test_a_gaussian_fitter_fills_guide_mvn_unless_the_user_names_another(name, compose_config):
    record = run(compose_config("model=kidiq", f"fitter={name}", "steps=5", "protocol=plain"))
    assert record["status"] == "ok", record["message"]
    assert record["components"]["guide"] == "mvn"
    with pytest.raises(ConfigError, match=f"fitter={name} fits a full-covariance Gaussian"):
        run(compose_config("model=kidiq", f"fitter={name}", "guide=normal", "steps=5"))
