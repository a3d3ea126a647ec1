"""posterior.nc: a run's fitted posterior as ArviZ data (az.summary and az.loo work)."""

from __future__ import annotations

import math
import warnings

import matplotlib
import pytest

matplotlib.use("Agg")

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab import run

with warnings.catch_warnings():  # ArviZ 0.x announces its 1.x refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    az = pytest.importorskip("arviz")


def test_eight_schools_posterior_and_reference_files_read_in_arviz(tmp_path, compose_config):
    config = compose_config("model=eight_schools", "steps=400", "posterior_draws=300")
    record = run(config, output_dir=tmp_path)
    assert record["status"] == "ok", record["message"]
    assert record["posterior_files"] == {
        "posterior": "posterior.nc",
        "reference_posterior": "reference_posterior.nc",
    }
    data = az.from_netcdf(tmp_path / "posterior.nc")
    assert {"posterior", "log_likelihood", "observed_data"} <= set(data.groups())
    theta = data.posterior["theta"]
    assert theta.dims == ("chain", "draw", "data") and theta.shape == (1, 300, 8)
    summary = az.summary(data, var_names=["mu", "tau", "theta"])
    assert len(summary) == 2 + 8 and summary["mean"].notna().all()
    loo = az.loo(data, pointwise=True)
    assert math.isfinite(float(loo.elpd_loo)) and loo.loo_i.shape == (8,)
    assert data.observed_data["obs"].shape == (8,)
    assert az.plot_posterior(data, var_names=["mu", "tau"]).size == 2

    reference = az.from_netcdf(tmp_path / "reference_posterior.nc")
    assert reference.posterior["theta"].dims == theta.dims
    assert reference.posterior.sizes["draw"] == 10_000
    # after the default 400 steps the guide's mean of mu is within 0.5 reference sd of
    # NUTS's (measured: 4.50 vs 4.41, sd 3.31; 300 draws put 0.06 sd of noise on it)
    mu_gap = abs(float(data.posterior["mu"].mean()) - float(reference.posterior["mu"].mean()))
    assert mu_gap < 0.5 * float(reference.posterior["mu"].std())


def test_global_and_event_sites_get_arviz_dim_names(tmp_path, compose_config):
    config = compose_config("model=gmm", "model.num_train=60", "posterior_draws=50")
    record = run(config, output_dir=tmp_path)
    assert record["status"] == "ok", record["message"]
    data = az.from_netcdf(tmp_path / "posterior.nc")
    assert data.posterior["locs"].dims == ("chain", "draw", "components", "locs_dim_1")
    assert data.log_likelihood["obs"].dims == ("chain", "draw", "data")
    assert data.log_likelihood["obs"].shape == (1, 50, 60)
    assert math.isfinite(float(az.loo(data).elpd_loo))


def test_posterior_draws_must_be_a_count(compose_config):
    with pytest.raises(ConfigError, match=r"posterior_draws must be an integer >= 0"):
        run(compose_config("posterior_draws=-1"))


ROWWISE_MODEL = '''
import pyro
import pyro.distributions as dist


def model(data):
    """y_i ~ N(theta_i, 1), theta_i ~ N(0, 1): p(theta_i | y) = N(y_i / 2, 1/2) per row."""
    with pyro.plate("data", data.shape[0]):
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(theta, 1.0), obs=data[:, 0])
'''


@pytest.mark.slow
@pytest.mark.parametrize("num_heldout", [0, 5])
def test_the_data_plate_coordinate_is_the_users_row_whatever_the_shuffle(
    tmp_path, compose_config, num_heldout
):
    """Row i of the file holds y = 3 (i - 10): after fitting, theta's posterior mean at
    coordinate i is y_i / 2 (the exact posterior, N(y_i/2, 1/2)). 2,000 draws put a
    Monte Carlo error of sqrt(0.5/2000) = 0.016 on each mean; the mean-field guide can
    reach the exact posterior, where STL's gradient noise vanishes, so 0.15 leaves room
    for the fit and is far below the 1.5 between neighbouring rows, which a permutation
    would show."""
    (tmp_path / "rowwise.py").write_text(ROWWISE_MODEL)
    y = [3.0 * (i - 10) for i in range(20)]
    (tmp_path / "rows.csv").write_text("y\n" + "\n".join(map(str, y)) + "\n")
    config = compose_config(
        "model=custom", f"model.target={tmp_path / 'rowwise.py'}:model",
        f"model.data={tmp_path / 'rows.csv'}", f"model.num_heldout={num_heldout}",
        "model.local_latents=true", "objective=stl", "steps=3000", "optim.optim_args.lr=0.05",
        "posterior_draws=2000",
    )  # fmt: skip
    record = run(config, output_dir=tmp_path / "run")
    assert record["status"] == "ok", record["message"]
    data = az.from_netcdf(tmp_path / "run" / "posterior.nc")
    rows = [int(row) for row in data.posterior["theta"].coords["data"].values]
    assert len(rows) == 20 - num_heldout and set(rows) <= set(range(20))
    assert (rows == list(range(20))) == (num_heldout == 0)  # no shuffle without held-out rows
    means = data.posterior["theta"].mean(("chain", "draw"))
    for row in rows:
        assert float(data.observed_data["y"].sel(data=row)) == y[row]
        assert float(means.sel(data=row)) == pytest.approx(y[row] / 2, abs=0.15)
    assert [int(r) for r in data.log_likelihood["y"].coords["data"].values] == rows
