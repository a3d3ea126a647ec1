"""posteriordb ports: every model with reference draws passes the Stein identities at them;
a port with a wrong density does not; data files of the same layout run, bad ones fail in
one line."""

from __future__ import annotations

import json
import zipfile

import pyro
import pytest
import torch

from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.evaluation.stein import stein_check
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.models.posteriordb import GARCH11, KidIQ, PosteriorDBModel
from pyro_elbo_lab.models.posteriordb.files import packaged
from pyro_elbo_lab.models.posteriordb.recurrence import linear_recurrence
from pyro_elbo_lab.registry import models


def _has_reference_draws(name: str) -> bool:
    factory = models.get(name).factory
    if isinstance(factory, type):
        return (
            factory.reference_posterior_draws is not LatentVariableModel.reference_posterior_draws
        )
    return models.build_example(name).reference_posterior_draws() is not None


WITH_REFERENCE = [name for name in models.names() if _has_reference_draws(name)]


def test_every_posteriordb_posterior_is_registered():
    ported = {cls.posterior for cls in _subclasses(PosteriorDBModel)}
    assert len(ported) == 11
    assert {"eight_schools", *(n for n in WITH_REFERENCE if n != "eight_schools")} >= {
        "kidiq", "kidiq_interaction", "earnings", "mesquite", "nes", "sblrc", "diamonds",
        "ark", "arma11", "garch11", "gp_pois_regr",
    }  # fmt: skip


def _subclasses(cls):
    for sub in cls.__subclasses__():
        if hasattr(sub, "posterior"):
            yield sub
        yield from _subclasses(sub)


@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_port_satisfies_stein_identities_at_its_reference_draws(name):
    """E_p[score] = 0 and E_p[score (u - mean)^T] = -I within Monte Carlo error
    (Bonferroni over all entries at an overall 1e-3 false-alarm rate)."""
    check = stein_check(models.build_example(name))
    assert check.non_finite == 0
    assert check.num_draws >= 1000
    assert check.worst_z < check.threshold(), (check.mean_score_z, check.covariance_z)


class _GarchWithoutJacobian(GARCH11):
    """The classic porting slip: β₁ = (1 − α₁)u without the Jacobian of that map."""

    def model(self, data):
        with pyro.poutine.block(hide=["beta1_jacobian"]):
            super().model(data)


class _KidIQWrongNoise(KidIQ):
    """A likelihood tempered by 0.9: the right shape, the wrong density."""

    def model(self, data):
        with pyro.poutine.scale(scale=0.9):
            super().model(data)


@pytest.mark.parametrize("wrong", [_GarchWithoutJacobian, _KidIQWrongNoise])
def test_stein_check_rejects_a_wrong_port(wrong):
    check = stein_check(wrong())
    assert check.worst_z > check.threshold()


def test_linear_recurrence_matches_the_loop():
    generator = torch.Generator().manual_seed(0)
    coefficient = torch.randn(4, 1, generator=generator)
    increments = torch.randn(4, 37, generator=generator)
    initial = torch.randn(4, 1, generator=generator)
    state, expected = initial[:, 0], []
    for t in range(37):
        state = coefficient[:, 0] * state + increments[:, t]
        expected.append(state)
    result = linear_recurrence(coefficient, increments, initial)
    torch.testing.assert_close(result, torch.stack(expected, -1), rtol=1e-5, atol=1e-5)


def _packaged_data(posterior: str) -> dict:
    with packaged(f"{posterior}.data.json.zip").open("rb") as handle, zipfile.ZipFile(handle) as z:
        return json.loads(z.read(z.namelist()[0]))


def _write(tmp_path, data: dict, name: str = "data.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_data_file_of_the_same_layout_runs_the_same_model(tmp_path):
    data = _packaged_data(KidIQ.posterior)
    half = {"N": 200, "kid_score": data["kid_score"][:200], "mom_iq": data["mom_iq"][:200]}
    model = models.build("kidiq", data_file=_write(tmp_path, half))
    assert model.train_data.shape == (200, 3)
    assert model.reference_posterior_draws() is None  # the packaged draws are for the full data
    packaged_model = models.build("kidiq")
    torch.testing.assert_close(packaged_model.train_data[:200], model.train_data)


def test_reference_path_reads_posteriordbs_own_draws_file(tmp_path):
    reference = models.build("kidiq").reference_posterior_draws()
    chains = [
        {
            "beta[1]": reference["beta"][i::2, 0].tolist(),
            "beta[2]": reference["beta"][i::2, 1].tolist(),
            "sigma": reference["sigma"][i::2].tolist(),
        }
        for i in range(2)
    ]
    archive = tmp_path / "reference_draws.json.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("reference_draws.json", json.dumps(chains))
    model = models.build("kidiq", reference_path=str(archive))
    draws = model.reference_posterior_draws()
    assert draws["beta"].shape == (10_000, 2)
    torch.testing.assert_close(draws["sigma"].mean(), reference["sigma"].mean())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("mom_iq"), "lacks ['mom_iq']"),
        (lambda d: d.update(mom_iq=d["mom_iq"][:-1]), "'mom_iq' has shape (433,), expected (434,)"),
        (lambda d: d["kid_score"].__setitem__(3, float("nan")), "entry 'kid_score' has NaN"),
        (lambda d: d.update(N=4.5), "entry 'N' must hold integers"),
        (lambda d: d.update(mom_iq="high"), "entry 'mom_iq' is not numeric"),
    ],
)  # fmt: skip
def test_bad_data_file_fails_in_one_line(tmp_path, edit, message):
    data = _packaged_data(KidIQ.posterior)
    edit(data)
    with pytest.raises(ConfigError) as error:
        models.build("kidiq", data_file=_write(tmp_path, data))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_data_file_names_the_option():
    with pytest.raises(ConfigError, match=r"model\.data_file '/nowhere\.json' does not exist"):
        models.build("kidiq", data_file="/nowhere.json")


def test_log_of_non_positive_data_is_refused(tmp_path):
    data = _packaged_data("earnings-logearn_interaction")
    data["earn"][0] = 0
    with pytest.raises(ConfigError, match="entry 'earn' must be > 0"):
        models.build("earnings", data_file=_write(tmp_path, data))
