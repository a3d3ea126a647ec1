"""VSBC: prior simulation from the Pyro model, calibrated where the guide is exact,
asymmetric where it is biased, refused where the model has no prior draws."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab import run
from pyro_elbo_lab.registry import models


def test_prior_predictive_keeps_covariates_and_simulates_the_response():
    model = models.build("kidiq_interaction")
    with pytest.raises(ConfigError, match="improper"):
        model.prior_predictive()  # flat priors have no draws
    model = models.build("sblrc")
    pyro.set_rng_seed(0)
    truth, data = model.prior_predictive()
    assert set(truth) == {"beta", "sigma"}
    torch.testing.assert_close(data[:, :-1], model.train_data[:, :-1])
    assert not torch.equal(data[:, -1], model.train_data[:, -1])
    residual = data[:, -1] - data[:, :-1] @ truth["beta"]
    assert abs(float(residual.std()) / float(truth["sigma"]) - 1) < 0.25  # 100 points


def test_prior_predictive_leaves_deterministic_sites_computed():
    pyro.set_rng_seed(1)
    truth, data = models.build("eight_schools").prior_predictive()
    assert set(truth) == {"mu", "tau", "theta_trans"} and data.shape == (8, 2)


def test_time_series_ports_refuse_prior_simulation():
    with pytest.raises(ConfigError, match="with_observations"):
        models.build("arma11").prior_predictive()


@pytest.mark.slow
def test_vsbc_is_symmetric_for_an_exact_guide(compose_config):
    """Normal–Normal with a mean-field Normal guide: q can be the exact posterior, so
    the quantiles of the truth are uniform, hence symmetric (KS p-values not small)."""
    record = _vsbc_run(
        compose_config, "model=normal_normal", "guide=normal", "steps=300",
        "vsbc.datasets=40", "vsbc.posterior_samples=500",
    )  # fmt: skip
    assert record["vsbc"]["datasets"] == 40 and record["vsbc"]["diverged"] == 0
    assert set(record["vsbc"]["parameters"]) == {"loc[1]", "loc[2]"}
    assert record["metrics"]["vsbc_min_pvalue"] > 0.01
    assert record["metrics"]["vsbc_max_asymmetry"] < 0.1


@pytest.mark.slow
def test_vsbc_flags_a_biased_guide(compose_config):
    """A point estimate at the mode of a right-skewed posterior (Beta(1, 6) prior, five
    coin flips): the mode sits below the median, so the true bias lies above the
    estimate more often than not: mean quantile above ½, asymmetric quantiles."""
    record = _vsbc_run(
        compose_config, "model=beta_bernoulli", "model.prior_a=1.0", "model.prior_b=6.0",
        "model.num_train=5", "model.num_heldout=1", "guide=delta", "steps=300",
        "vsbc.datasets=40", "vsbc.posterior_samples=10",
    )  # fmt: skip
    (calibration,) = record["vsbc"]["parameters"].values()
    assert calibration["mean_quantile"] > 0.65
    assert calibration["ks_pvalue"] < 0.01


def test_vsbc_measures_the_guide_a_run_evaluates(compose_config):
    """guide=laplace fits a point and is evaluated as the Gaussian at it: the truth's
    quantiles come from that Gaussian (fractions), not from the point (0 or 1 only)."""
    record = _vsbc_run(
        compose_config, "model=normal_normal", "guide=laplace", "steps=50",
        "vsbc.datasets=3", "vsbc.posterior_samples=200",
    )  # fmt: skip
    quantiles = [q for p in record["vsbc"]["parameters"].values() for q in p["quantiles"]]
    assert any(0 < q < 1 for q in quantiles), quantiles


def _vsbc_run(compose_config, *overrides: str) -> dict:
    """A plain-protocol VSBC run of ``overrides``, checked to have finished."""
    record = run(compose_config("protocol=plain", "progress_bar=false", *overrides))
    assert record["status"] == "ok", record["message"]
    return record
