r"""posteriordb's time series: AR(K), ARMA(1,1) and GARCH(1,1), conditional on the first
observations as the Stan programs are. Each likelihood term
:math:`y_t \mid y_{<t}` is one row of the data plate; the ARMA errors and the GARCH
variances are first-order recursions, computed by a log-depth scan
(:func:`~pyro_elbo_lab.models.posteriordb.recurrence.linear_recurrence`).
"""

from __future__ import annotations

from typing import ClassVar

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from pyro_elbo_lab.models.posteriordb.base import FIT_DEFAULTS, PosteriorDBModel, flat
from pyro_elbo_lab.models.posteriordb.files import Field
from pyro_elbo_lab.models.posteriordb.recurrence import linear_recurrence
from pyro_elbo_lab.models.posteriordb.regressions import LinearRegressionPort
from pyro_elbo_lab.registry import models

#: where ARMA errors are clipped (see :class:`ARMA11`)
ERROR_BOUND = 1e15
_SERIES = {"T": Field("int"), "y": Field("real", ("T",))}


def _after(first: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
    """``[first, series[0], ..., series[T-2]]``: the series lagged by one, ``first`` in
    front (per particle: ``first`` is ``[K, 1]`` under a particle plate, else a scalar)."""
    first = first if first.dim() else first[None]
    return torch.cat([first, series[:-1].expand(*first.shape[:-1], -1)], -1)


@models.register(
    "ark",
    description="posteriordb arK-arK: AR(5) time series; 7 params",
    **FIT_DEFAULTS,
)
class AutoRegressive(LinearRegressionPort):
    r"""posteriordb ``arK-arK``: :math:`y_t \sim \mathcal N(\alpha + \sum_k \beta_k y_{t-k},
    \sigma^2)` for t > K; α, β ~ N(0, 10²), σ ~ half-Cauchy(2.5). A regression on lags."""

    posterior = "arK-arK"
    schema: ClassVar = {"K": Field("int"), **_SERIES}

    def design(self, data):
        order, series = int(data["K"]), data["y"]
        lags = torch.stack([series[order - k : len(series) - k] for k in range(1, order + 1)], -1)
        return lags, series[order:]

    def coefficient_prior(self, size):
        return dist.Normal(self._zero().expand(size), 10.0).to_event(1)

    def intercept(self):
        return pyro.sample("alpha", dist.Normal(self._zero(), 10.0))

    def sigma_prior(self):
        return dist.HalfCauchy(self._zero() + 2.5)


@models.register(
    "arma11",
    description="posteriordb arma-arma11: ARMA(1,1) time series; 4 params",
    **FIT_DEFAULTS,
)
class ARMA11(PosteriorDBModel):
    r"""posteriordb ``arma-arma11``: :math:`y_t = \mu + \phi y_{t-1} + \theta\,\epsilon_{t-1}
    + \epsilon_t`, :math:`\epsilon_t \sim \mathcal N(0, \sigma^2)`, with
    :math:`y_0 = \mu, \epsilon_0 = 0`; μ ~ N(0, 10²), φ, θ ~ N(0, 2²), σ ~ half-Cauchy(2.5).
    The errors follow :math:`\epsilon_t = -\theta\,\epsilon_{t-1} + (y_t - \mu - \phi y_{t-1})`
    (no stationarity constraint, as in the Stan program).

    With :math:`|\theta| > 1` the errors grow like :math:`|\theta|^t`: the recursion runs in
    float64 and the errors are clipped at ±10¹⁵ (beyond float64, where the scan meets
    ∞ − ∞, at +10¹⁵), where the log density is already below
    −10²⁸, so a wide guide's stray draw gets a steep finite penalty instead of NaN
    (Stan rejects such a draw; both leave the posterior's region untouched)."""

    posterior = "arma-arma11"
    schema: ClassVar = dict(_SERIES)

    def rows(self, data):
        return data["y"][:, None].float()

    def model(self, data: torch.Tensor) -> None:
        series = data[:, 0]
        zero = torch.zeros((), device=self.device)
        mu = pyro.sample("mu", dist.Normal(zero, 10.0))
        phi = pyro.sample("phi", dist.Normal(zero, 2.0))
        theta = pyro.sample("theta", dist.Normal(zero, 2.0))
        sigma = pyro.sample("sigma", dist.HalfCauchy(zero + 2.5))
        innovations = series - mu - phi * _after(mu, series)
        errors = linear_recurrence(-theta.double(), innovations.double())
        errors = errors.nan_to_num(ERROR_BOUND).clamp(-ERROR_BOUND, ERROR_BOUND).to(series.dtype)
        with pyro.plate(self.data_plate, len(series)):
            pyro.sample("obs", dist.Normal(series - errors, sigma), obs=series)


@models.register(
    "garch11",
    description="posteriordb garch-garch11: GARCH(1,1) volatility, constrained; 4 params",
    **FIT_DEFAULTS,
)
class GARCH11(PosteriorDBModel):
    r"""posteriordb ``garch-garch11``: :math:`y_t \sim \mathcal N(\mu, \sigma_t^2)`,
    :math:`\sigma_t^2 = \alpha_0 + \alpha_1 (y_{t-1} - \mu)^2 + \beta_1 \sigma_{t-1}^2`,
    :math:`\sigma_1` given; flat priors on μ, α₀ > 0, α₁ ∈ (0, 1), β₁ ∈ (0, 1 − α₁).

    β₁'s support depends on α₁, which autoguides cannot follow, so the port samples
    :math:`u = \beta_1 / (1 - \alpha_1) \in (0, 1)` and adds :math:`\log(1 - \alpha_1)`, the
    Jacobian of :math:`u \mapsto \beta_1`: the same posterior over (α₁, β₁), and the same
    unconstrained space Stan uses. ``beta1`` is a deterministic site.
    """

    posterior = "garch-garch11"
    schema: ClassVar = {**_SERIES, "sigma1": Field("real")}

    def rows(self, data):
        return data["y"][:, None].float()

    def model(self, data: torch.Tensor) -> None:
        series = data[:, 0]
        mu = pyro.sample("mu", flat())
        alpha0 = pyro.sample("alpha0", flat(constraints.positive))
        alpha1 = pyro.sample("alpha1", flat(constraints.unit_interval))
        fraction = pyro.sample("beta1_fraction", flat(constraints.unit_interval))
        pyro.factor("beta1_jacobian", torch.log1p(-alpha1))
        beta1 = pyro.deterministic("beta1", (1 - alpha1) * fraction)
        first_variance = float(self.data["sigma1"]) ** 2
        increments = alpha0 + alpha1 * (series[:-1] - mu) ** 2
        later = linear_recurrence(beta1, increments, first_variance)
        variance = torch.cat([torch.full_like(later[..., :1], first_variance), later], -1)
        with pyro.plate(self.data_plate, len(series)):
            pyro.sample("obs", dist.Normal(mu, variance.sqrt()), obs=series)

    def latents_from_reference(self, draws):
        return {
            **draws,
            "beta1_fraction": draws["beta1"] / (1 - draws["alpha1"]),
        }
