r"""Csiszár functions f(u), evaluated from log u, under TensorFlow Probability's names.

A Csiszár function is convex with :math:`f(1) = 0` (for normalised p, q) and defines the
f-divergence :math:`D_f[p, q] = \mathbb E_{q}[f(p(Z)/q(Z))]`. Definitions, flags and
names follow ``tfp.vi`` so that a divergence named here means what it means there;
``self_normalized=True`` adds TFP's linear term making :math:`f'(1) = 0` too, which keeps
the divergence non-negative for unnormalised p. Each takes ``logu`` (any shape).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pyro_elbo_lab.errors import ConfigError

CsiszarFunction = Callable[..., torch.Tensor]


def _linear_term(logu: torch.Tensor, self_normalized: bool) -> torch.Tensor | float:
    """:math:`u - 1` when self-normalised, else 0."""
    return torch.expm1(logu) if self_normalized else 0.0


def amari_alpha(logu: torch.Tensor, alpha: float = 1.0, self_normalized: bool = False):
    r""":math:`f(u) = \frac{(u^\alpha - 1) - \alpha (u - 1)}{\alpha(\alpha - 1)}`;
    :math:`-\log u + (u-1)` at α = 0, :math:`u\log u - (u-1)` at α = 1."""
    if alpha == 0:
        return kl_reverse(logu, self_normalized)
    if alpha == 1:
        return kl_forward(logu, self_normalized)
    power = torch.expm1(alpha * logu) - alpha * _linear_term(logu, self_normalized)
    return power / (alpha * (alpha - 1.0))


def kl_reverse(logu: torch.Tensor, self_normalized: bool = False) -> torch.Tensor:
    r""":math:`f(u) = -\log u\ [+ (u - 1)]`: :math:`D_f = \mathrm{KL}(q\,\|\,p)` (mode seeking)."""
    return -logu + _linear_term(logu, self_normalized)


def kl_forward(logu: torch.Tensor, self_normalized: bool = False) -> torch.Tensor:
    r""":math:`f(u) = u\log u\ [- (u - 1)]`: :math:`D_f = \mathrm{KL}(p\,\|\,q)` (mode covering)."""
    return torch.exp(logu) * logu - _linear_term(logu, self_normalized)


def jensen_shannon(logu: torch.Tensor, self_normalized: bool = False) -> torch.Tensor:
    r""":math:`f(u) = u\log u - (1+u)\log(1+u)\ [+ (1+u)\log 2]`:
    :math:`D_f = \mathrm{KL}(p\,\|\,m) + \mathrm{KL}(q\,\|\,m)`, :math:`m = (p+q)/2`."""
    u = torch.exp(logu)
    value = u * logu - (1.0 + u) * F.softplus(logu)
    return value + (1.0 + u) * math.log(2.0) if self_normalized else value


def arithmetic_geometric(logu: torch.Tensor, self_normalized: bool = False) -> torch.Tensor:
    r""":math:`f(u) = (1+u)\log\frac{1+u}{\sqrt u}\ [- (1+u)\log 2]`:
    :math:`D_f = \mathrm{KL}(m\,\|\,p) + \mathrm{KL}(m\,\|\,q)`."""
    one_plus_u = 1.0 + torch.exp(logu)
    value = one_plus_u * (F.softplus(logu) - 0.5 * logu)
    return value - one_plus_u * math.log(2.0) if self_normalized else value


def pearson(logu: torch.Tensor) -> torch.Tensor:
    r""":math:`f(u) = (u - 1)^2`: Pearson's χ², :math:`\int p^2/q - 1`."""
    return torch.expm1(logu) ** 2


def chi_square(logu: torch.Tensor) -> torch.Tensor:
    r""":math:`f(u) = u^2 - 1`: the χ² divergence (equals Pearson's for normalised p, q)."""
    return torch.expm1(2.0 * logu)


def squared_hellinger(logu: torch.Tensor) -> torch.Tensor:
    r""":math:`f(u) = (\sqrt u - 1)^2`: :math:`D_f = 2 - 2\int\sqrt{pq}`."""
    return torch.expm1(0.5 * logu) ** 2


def total_variation(logu: torch.Tensor) -> torch.Tensor:
    r""":math:`f(u) = \tfrac12 |u - 1|`: the total variation distance."""
    return 0.5 * torch.expm1(logu).abs()


def triangular(logu: torch.Tensor) -> torch.Tensor:
    r""":math:`f(u) = (u-1)^2/(1+u)`: the triangular discrimination."""
    return torch.expm1(logu) ** 2 / (1.0 + torch.exp(logu))


def jeffreys(logu: torch.Tensor) -> torch.Tensor:
    r""":math:`f(u) = \tfrac12(u\log u - \log u)`: the symmetrised KL,
    :math:`\tfrac12(\mathrm{KL}(p\|q)+\mathrm{KL}(q\|p))`."""
    return 0.5 * torch.expm1(logu) * logu


def log1p_abs(logu: torch.Tensor) -> torch.Tensor:
    r""":math:`f(u) = u^{\operatorname{sign}(u-1)} - 1`."""
    return torch.expm1(logu.abs())


def modified_gan(logu: torch.Tensor, self_normalized: bool = False) -> torch.Tensor:
    r""":math:`f(u) = \log(1+u) - \log u\ [+ \tfrac12(u - 1)]`."""
    return F.softplus(logu) - logu + 0.5 * _linear_term(logu, self_normalized)


def t_power(logu: torch.Tensor, t: float = 0.5, self_normalized: bool = False) -> torch.Tensor:
    r""":math:`f(u) = s\,[u^t - 1\ (- t(u - 1))]`, :math:`s = -1` for 0 < t < 1, else +1."""
    sign = -1.0 if 0.0 < t < 1.0 else 1.0
    return sign * (torch.expm1(t * logu) - t * _linear_term(logu, self_normalized))


CSISZAR_FUNCTIONS: dict[str, CsiszarFunction] = {
    f.__name__: f
    for f in (
        amari_alpha,
        arithmetic_geometric,
        chi_square,
        jeffreys,
        jensen_shannon,
        kl_forward,
        kl_reverse,
        log1p_abs,
        modified_gan,
        pearson,
        squared_hellinger,
        t_power,
        total_variation,
        triangular,
    )
}
#: The extra parameter each family takes, with TFP's default.
FAMILY_PARAMETERS: dict[str, tuple[str, float]] = {
    "amari_alpha": ("alpha", 1.0),
    "t_power": ("t", 0.5),
}
#: Functions that take TFP's ``self_normalized`` flag.
SELF_NORMALIZABLE = frozenset(
    {
        "amari_alpha",
        "arithmetic_geometric",
        "jensen_shannon",
        "kl_forward",
        "kl_reverse",
        "modified_gan",
        "t_power",
    }
)


def csiszar_function(
    name: str, parameter: float | None = None, self_normalized: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(logu)`` for a TFP name, with its family parameter (α, t) and flag bound."""
    if name not in CSISZAR_FUNCTIONS:
        raise ConfigError(
            f"unknown Csiszar function {name!r}; choose one of {sorted(CSISZAR_FUNCTIONS)}"
        )
    if self_normalized and name not in SELF_NORMALIZABLE:
        raise ConfigError(
            f"{name} has no self_normalized form (TFP gives it only to "
            f"{sorted(SELF_NORMALIZABLE)}); use self_normalized=false"
        )
    function = CSISZAR_FUNCTIONS[name]
    options: dict[str, float | bool] = {}
    if name in FAMILY_PARAMETERS:
        key, default = FAMILY_PARAMETERS[name]
        options[key] = default if parameter is None else float(parameter)
    elif parameter is not None:
        raise ConfigError(
            f"{name} takes no family parameter (only {sorted(FAMILY_PARAMETERS)} do); leave it null"
        )
    if name in SELF_NORMALIZABLE:
        options["self_normalized"] = self_normalized

    def f(logu: torch.Tensor) -> torch.Tensor:
        return function(logu, **options)

    return f
