r"""A catalogue of valid Pyro (model, guide) pairs: every shape of program that Pyro's
``Trace_ELBO`` accepts and an objective must either handle or refuse.

Each :class:`Case` builds a fresh program (call it after ``pyro.clear_param_store()``):
the model, the guide, their arguments, the model's plate depth and the ELBO that is the
reference for it (``Trace_ELBO``, or ``TraceEnum_ELBO`` where a site is enumerated).
The kinds of program follow the catalogue of Pyro's own valid-model tests (nested and
side-by-side plates, ``dim=None`` plates, subsampling on one or both sides, scales and
masks, constrained latents under autoguides, ``.to_event()`` sites, score-function and
enumerated sites, factors, programs without latents, neural-network parameters,
user-level batch plates); the cases here are our own. The lab's registered models join
as cases too (:func:`lab_model_cases`), so a new model is checked like the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiagonalNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.nn import PyroModule, PyroParam
from torch import nn


@dataclass
class Program:
    """A model, its guide, and the arguments both are called with."""

    model: Callable[..., Any]
    guide: Callable[..., Any]
    #: the model's plate depth (the particle plate goes left of it)
    max_plate_nesting: int
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One valid (model, guide) pair: ``build()`` makes a fresh :class:`Program`.

    :param reference: the Pyro ELBO that accepts it as it is: ``"trace"`` or
        ``"trace_enum"`` (a site marked for enumeration).
    :param features: what the case exercises, for the outcome table.
    :param repeats: seed-paired draws of the expectation check where the default is too
        few for the t-test (gradients heavy-tailed at the guide's start; None: default).
    """

    name: str
    build: Callable[[], Program]
    reference: str = "trace"
    features: tuple[str, ...] = ()
    repeats: int | None = None


AUTOGUIDES = {
    "auto_normal": AutoNormal,
    "auto_diagonal_normal": AutoDiagonalNormal,
    "auto_mvn": AutoMultivariateNormal,
    "auto_delta": AutoDelta,
}


def _data(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- models ----------------------------------------------------------------------------
def normal_model() -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 4):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=_data(4))


def gamma_model() -> None:
    rate = pyro.sample("rate", dist.Gamma(2.0, 2.0))
    with pyro.plate("data", 5):
        pyro.sample("x", dist.Exponential(rate), obs=_data(5).abs() + 0.1)


def constrained_model() -> None:
    """A simplex, an interval and a positive latent together."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3)))
    mix = pyro.sample("mix", dist.Beta(2.0, 2.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.5))
    locs = torch.tensor([-1.0, 0.0, 1.0])
    components = dist.Normal(
        mix.unsqueeze(-1) * locs, scale.unsqueeze(-1).expand((*scale.shape, 3))
    )
    with pyro.plate("data", 6):
        pyro.sample(
            "x",
            dist.MixtureSameFamily(dist.Categorical(weights), components),
            obs=_data(6),
        )


def event_model() -> None:
    loc = pyro.sample("loc", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", 4):
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=_data(4, 3))


def side_by_side_plates_model() -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("first", 3):
        first = pyro.sample("first_z", dist.Normal(loc, 1.0))
        pyro.sample("first_x", dist.Normal(first, 0.5), obs=_data(3))
    with pyro.plate("second", 4):
        second = pyro.sample("second_z", dist.Normal(loc, 1.0))
        pyro.sample("second_x", dist.Normal(second, 0.5), obs=_data(4, seed=1))


def nested_plates_model() -> None:
    with pyro.plate("groups", 3, dim=-2):
        group = pyro.sample("group_loc", dist.Normal(0.0, 1.0))
        with pyro.plate("members", 4, dim=-1):
            member = pyro.sample("member_loc", dist.Normal(group, 1.0))
            pyro.sample("x", dist.Normal(member, 0.5), obs=_data(3, 4))


def auto_dim_plates_model() -> None:
    """Plates with ``dim=None``: Pyro allocates their dims."""
    with pyro.plate("rows", 3):
        row = pyro.sample("row_loc", dist.Normal(0.0, 1.0))
        with pyro.plate("columns", 2):
            pyro.sample("x", dist.Normal(row, 1.0), obs=_data(2, 3))


def several_sites_model() -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 5):
        shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        spread = pyro.sample("spread", dist.LogNormal(0.0, 0.3))
        pyro.sample("x", dist.Normal(loc + shift, spread), obs=_data(5))
        pyro.sample("y", dist.Normal(shift, 1.0), obs=_data(5, seed=1))


SUBSAMPLE_DATA = _data(10)


def subsampled_global_model() -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 10, subsample_size=4) as index:
        pyro.sample("x", dist.Normal(loc, 1.0), obs=SUBSAMPLE_DATA[index])


def subsampled_local_model() -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 10, subsample_size=4) as index:
        shift = pyro.sample("shift", dist.Normal(loc, 1.0))
        pyro.sample("x", dist.Normal(shift, 0.5), obs=SUBSAMPLE_DATA[index])


def subsampled_local_guide() -> None:
    loc_mean = pyro.param("loc_mean", torch.tensor(0.0))
    pyro.sample("loc", dist.Normal(loc_mean, 0.8))
    shift_means = pyro.param("shift_means", torch.zeros(10))
    with pyro.plate("data", 10, subsample_size=4) as index:
        pyro.sample("shift", dist.Normal(shift_means[index], 0.7))


def scaled_likelihood_model() -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 4), poutine.scale(scale=2.5):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=_data(4))


def scaled_everywhere_model() -> None:
    """A float scale on a latent in model and guide alike (e.g. a tempered posterior)."""
    with poutine.scale(scale=0.5):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 4):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=_data(4))


def scaled_everywhere_guide() -> None:
    with poutine.scale(scale=0.5):
        _normal_guide_site("loc", ())


def model_side_scaled_latent_model() -> None:
    with poutine.scale(scale=3.0):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 4):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=_data(4))


def model_side_masked_latent_model() -> None:
    with pyro.plate("data", 4):
        with poutine.mask(mask=torch.tensor([True, False, True, True])):
            shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(shift, 1.0), obs=_data(4))


WEIGHTS = torch.tensor([0.5, 1.0, 2.0, 0.25, 1.5])


def tensor_scaled_data_model() -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 5), poutine.scale(scale=WEIGHTS):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=_data(5))


def tensor_scaled_local_model() -> None:
    """Per-datapoint weights on local latents and observations alike."""
    with pyro.plate("data", 5), poutine.scale(scale=WEIGHTS):
        shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(shift, 1.0), obs=_data(5))


def masked_observation_model() -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 5), poutine.mask(mask=torch.tensor([1, 1, 0, 1, 0]).bool()):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=_data(5))


def obs_mask_model() -> None:
    """``obs_mask``: the missing entries become a latent site ``x_unobserved``."""
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 5):
        pyro.sample(
            "x",
            dist.Normal(loc, 1.0),
            obs=_data(5),
            obs_mask=torch.tensor([True, True, False, True, False]),
        )


def bernoulli_latent_model() -> None:
    on = pyro.sample("on", dist.Bernoulli(0.4))
    with pyro.plate("data", 4):
        pyro.sample("x", dist.Normal(2.0 * on, 1.0), obs=_data(4))


def bernoulli_latent_guide() -> None:
    probability = pyro.param(
        "probability", torch.tensor(0.5), constraint=dist.constraints.unit_interval
    )
    pyro.sample("on", dist.Bernoulli(probability))


def poisson_event_model() -> None:
    counts = pyro.sample("counts", dist.Poisson(torch.full((2,), 3.0)).to_event(1))
    pyro.sample("x", dist.Normal(counts, 1.0).to_event(1), obs=torch.tensor([2.0, 4.0]))


def poisson_event_guide() -> None:
    rates = pyro.param("rates", torch.full((2,), 2.5), constraint=dist.constraints.positive)
    pyro.sample("counts", dist.Poisson(rates).to_event(1))


def score_function_normal_guide() -> None:
    """A continuous guide site drawn without ``rsample``: score-function gradients only."""
    mean = pyro.param("loc_mean", torch.tensor(0.2))
    pyro.sample("loc", dist.Normal(mean, 0.9).has_rsample_(False))


def enumerated_global_model() -> None:
    component = pyro.sample(
        "component", dist.Categorical(torch.tensor([0.3, 0.7])), infer={"enumerate": "parallel"}
    )
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    locs = torch.stack([loc - 1.0, loc + 1.0], -1)
    with pyro.plate("data", 4):
        pyro.sample(
            "x", dist.Normal(pyro.ops.indexing.Vindex(locs)[..., component], 1.0), obs=_data(4)
        )


@config_enumerate
def enumerated_local_model() -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 5):
        component = pyro.sample("component", dist.Bernoulli(0.4))
        pyro.sample("x", dist.Normal(loc + 2.0 * component, 1.0), obs=_data(5))


def factor_model() -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    pyro.factor("soft_constraint", -0.5 * (loc - 0.3) ** 2)
    with pyro.plate("data", 4):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=_data(4))


def factor_only_model() -> None:
    offset = pyro.param("offset", torch.tensor(0.2))
    pyro.factor("log_density", -0.5 * (offset - _data(3)).pow(2).sum())


def observed_only_model() -> None:
    scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
    with pyro.plate("data", 6):
        pyro.sample("x", dist.Normal(0.0, scale), obs=_data(6))


def empty_guide() -> None:
    """A guide with nothing to sample: the model has no latents."""


FEATURES = _data(6, 2, seed=2)


def module_model() -> None:
    """A ``pyro.module`` regression whose weights are model parameters θ."""
    regression = pyro.module("regression", _module("regression", lambda: nn.Linear(2, 1)))
    noise = pyro.sample("noise", dist.LogNormal(0.0, 0.5))
    with pyro.plate("data", 6):
        pyro.sample("y", dist.Normal(regression(FEATURES).squeeze(-1), noise), obs=_data(6))


class BayesianRegression(PyroModule):
    """A ``PyroModule`` model: a learned offset (``PyroParam``) and a latent slope."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = PyroParam(torch.tensor(0.1))

    def forward(self) -> None:
        slope = pyro.sample("slope", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", 6):
            mean = self.offset + (slope * FEATURES).sum(-1)
            pyro.sample("y", dist.Normal(mean, 1.0), obs=_data(6))


class AmortisedLocalGuide(PyroModule):
    """A ``PyroModule`` guide: an encoder from each point to its local latent."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(1, 2)

    def forward(self) -> None:
        loc_mean = pyro.param("loc_mean", torch.tensor(0.0))
        pyro.sample("loc", dist.Normal(loc_mean, 0.8))
        out = self.encoder(_data(5).unsqueeze(-1))
        with pyro.plate("data", 5):
            pyro.sample("shift", dist.Normal(out[:, 0], nn.functional.softplus(out[:, 1]) + 0.1))


def unbatched_only_model() -> None:
    """Valid for one draw at a time (``@`` ignores batch dims): cannot vectorise."""
    slope = pyro.sample("slope", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", 6):
        pyro.sample("y", dist.Normal(FEATURES @ slope, 1.0), obs=_data(6))


def local_model() -> None:
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 5):
        shift = pyro.sample("shift", dist.Normal(loc, 1.0))
        pyro.sample("x", dist.Normal(shift, 0.5), obs=_data(5))


def module_guide() -> None:
    """A hand-written guide whose encoder is registered with ``pyro.module``."""
    encoder = pyro.module("encoder", _module("encoder", lambda: nn.Linear(1, 2)))
    loc_mean = pyro.param("loc_mean", torch.tensor(0.0))
    pyro.sample("loc", dist.Normal(loc_mean, 0.8))
    out = encoder(_data(5).unsqueeze(-1))
    with pyro.plate("data", 5):
        pyro.sample("shift", dist.Normal(out[:, 0], nn.functional.softplus(out[:, 1]) + 0.1))


_MODULES: dict[str, nn.Module] = {}


def _module(name: str, make: Callable[[], nn.Module]) -> nn.Module:
    """One module per name per program (built fresh by :meth:`Case.build`)."""
    if name not in _MODULES:
        torch.manual_seed(0)
        _MODULES[name] = make()
    return _MODULES[name]


def outer_plate_only_model() -> None:
    """A model whose only plate sits at dim -2 (its plate depth is 2, dim -1 unused)."""
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 3, dim=-2):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=_data(3, 1))


def user_batched_model() -> None:
    """A model vectorised by its author over 3 chains in an outer plate of its own."""
    with pyro.plate("chains", 3, dim=-2):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 4, dim=-1):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=_data(4))


# -- hand-written guides -----------------------------------------------------------------
def _normal_guide_site(name: str, shape: tuple[int, ...], event_dims: int = 0) -> torch.Tensor:
    mean = pyro.param(f"{name}_mean", torch.full(shape, 0.1))
    scale = pyro.param(
        f"{name}_scale", torch.full(shape, 0.8), constraint=dist.constraints.positive
    )
    return pyro.sample(name, dist.Normal(mean, scale).to_event(event_dims))


def normal_guide() -> None:
    _normal_guide_site("loc", ())


def gamma_guide() -> None:
    concentration = pyro.param(
        "concentration", torch.tensor(3.0), constraint=dist.constraints.positive
    )
    rate = pyro.param("rate_param", torch.tensor(2.5), constraint=dist.constraints.positive)
    pyro.sample("rate", dist.Gamma(concentration, rate))


def event_guide() -> None:
    _normal_guide_site("loc", (3,), event_dims=1)


def side_by_side_plates_guide() -> None:
    _normal_guide_site("loc", ())
    with pyro.plate("first", 3):
        _normal_guide_site("first_z", (3,))
    with pyro.plate("second", 4):
        _normal_guide_site("second_z", (4,))


def nested_plates_guide() -> None:
    with pyro.plate("groups", 3, dim=-2):
        _normal_guide_site("group_loc", (3, 1))
        with pyro.plate("members", 4, dim=-1):
            _normal_guide_site("member_loc", (3, 4))


def auto_dim_plates_guide() -> None:
    with pyro.plate("rows", 3):
        _normal_guide_site("row_loc", (3,))


def several_sites_guide() -> None:
    _normal_guide_site("loc", ())
    with pyro.plate("data", 5):
        _normal_guide_site("shift", (5,))
        spread_loc = pyro.param("spread_loc", torch.zeros(5))
        pyro.sample("spread", dist.LogNormal(spread_loc, 0.3))


def local_guide() -> None:
    _normal_guide_site("loc", ())
    with pyro.plate("data", 5):
        _normal_guide_site("shift", (5,))


def masked_local_guide() -> None:
    with pyro.plate("data", 4):
        _normal_guide_site("shift", (4,))


def tensor_scaled_local_guide() -> None:
    with pyro.plate("data", 5), poutine.scale(scale=WEIGHTS):
        _normal_guide_site("shift", (5,))


def user_batched_guide() -> None:
    with pyro.plate("chains", 3, dim=-2):
        _normal_guide_site("loc", (3, 1))


def _program(model: Callable, guide: Callable, nesting: int = 1) -> Callable[[], Program]:
    return lambda: Program(model, guide, nesting)


def _autoguided(model: Callable, autoguide: type, nesting: int = 1) -> Callable[[], Program]:
    return lambda: Program(model, autoguide(model), nesting)


def _enumerated(model: Callable, autoguide: type) -> Callable[[], Program]:
    def build() -> Program:
        return Program(model, autoguide(poutine.block(model, hide=["component"])), 1)

    return build


def _fresh_modules(build: Callable[[], Program]) -> Callable[[], Program]:
    def fresh() -> Program:
        _MODULES.clear()
        return build()

    return fresh


def handwritten_cases() -> list[Case]:
    """The catalogue's own programs (the lab's models come from :func:`lab_model_cases`)."""
    cases = [
        Case("normal/handwritten", _program(normal_model, normal_guide)),
        Case("gamma/handwritten", _program(gamma_model, gamma_guide), features=("constrained",)),
        Case("event/handwritten", _program(event_model, event_guide), features=("to_event",)),
        Case(
            "event/auto_mvn",
            _autoguided(event_model, AutoMultivariateNormal),
            features=("to_event",),
        ),
        Case(
            "side_by_side_plates/handwritten",
            _program(side_by_side_plates_model, side_by_side_plates_guide),
        ),
        Case("side_by_side_plates/auto_normal", _autoguided(side_by_side_plates_model, AutoNormal)),
        Case("nested_plates/handwritten", _program(nested_plates_model, nested_plates_guide, 2)),
        Case("nested_plates/auto_normal", _autoguided(nested_plates_model, AutoNormal, 2)),
        Case(
            "auto_dim_plates/handwritten", _program(auto_dim_plates_model, auto_dim_plates_guide, 2)
        ),
        Case(
            "auto_dim_plates/auto_diagonal_normal",
            _autoguided(auto_dim_plates_model, AutoDiagonalNormal, 2),
        ),
        Case("several_sites/handwritten", _program(several_sites_model, several_sites_guide)),
        Case("several_sites/auto_normal", _autoguided(several_sites_model, AutoNormal)),
        Case(
            "subsampled_global/auto_normal",
            _autoguided(subsampled_global_model, AutoNormal),
            features=("subsample",),
        ),
        Case(
            "subsampled_global/handwritten",
            _program(subsampled_global_model, normal_guide),
            features=("subsample",),
        ),
        Case(
            "subsampled_local/handwritten",
            _program(subsampled_local_model, subsampled_local_guide),
            features=("subsample",),
        ),
        Case(
            "subsampled_local/auto_normal",
            _autoguided(subsampled_local_model, AutoNormal),
            features=("subsample",),
        ),
        Case(
            "scaled_likelihood/handwritten",
            _program(scaled_likelihood_model, normal_guide),
            features=("scale",),
        ),
        Case(
            "scaled_everywhere/handwritten",
            _program(scaled_everywhere_model, scaled_everywhere_guide),
            features=("scale",),
        ),
        Case(
            "model_side_scaled_latent/handwritten",
            _program(model_side_scaled_latent_model, normal_guide),
            features=("scale",),
        ),
        Case(
            "model_side_masked_latent/handwritten",
            _program(model_side_masked_latent_model, masked_local_guide),
            features=("mask",),
        ),
        Case(
            "tensor_scaled_data/handwritten",
            _program(tensor_scaled_data_model, normal_guide),
            features=("tensor_scale",),
        ),
        Case(
            "tensor_scaled_data/auto_diagonal_normal",
            _autoguided(tensor_scaled_data_model, AutoDiagonalNormal),
            features=("tensor_scale",),
        ),
        Case(
            "tensor_scaled_local/handwritten",
            _program(tensor_scaled_local_model, tensor_scaled_local_guide),
            features=("tensor_scale",),
        ),
        Case(
            "masked_observation/handwritten",
            _program(masked_observation_model, normal_guide),
            features=("mask",),
        ),
        Case(
            "obs_mask/auto_normal", _autoguided(obs_mask_model, AutoNormal), features=("obs_mask",)
        ),
        Case(
            "bernoulli_latent/handwritten",
            _program(bernoulli_latent_model, bernoulli_latent_guide),
            features=("score_function",),
        ),
        Case(
            "poisson_event/handwritten",
            _program(poisson_event_model, poisson_event_guide, 0),
            features=("score_function", "to_event"),
        ),
        Case(
            "score_function_normal/handwritten",
            _program(normal_model, score_function_normal_guide),
            features=("score_function",),
        ),
        Case(
            "enumerated_global/auto_normal",
            _enumerated(enumerated_global_model, AutoNormal),
            "trace_enum",
            ("enumerated",),
        ),
        Case(
            "enumerated_local/auto_diagonal_normal",
            _enumerated(enumerated_local_model, AutoDiagonalNormal),
            "trace_enum",
            ("enumerated",),
        ),
        Case("factor/handwritten", _program(factor_model, normal_guide), features=("factor",)),
        Case(
            "factor_only/empty",
            _program(factor_only_model, empty_guide, 0),
            features=("factor", "no_latents"),
        ),
        Case(
            "observed_only/empty",
            _program(observed_only_model, empty_guide),
            features=("no_latents",),
        ),
        Case(
            "module_model/auto_normal",
            _fresh_modules(_autoguided(module_model, AutoNormal)),
            features=("pyro.module",),
        ),
        Case(
            "pyro_module_model/auto_mvn", lambda: _pyro_module_program(), features=("PyroModule",)
        ),
        Case(
            "local/module_guide",
            _fresh_modules(_program(local_model, module_guide)),
            features=("pyro.module",),
        ),
        Case(
            "local/pyro_module_guide",
            lambda: Program(local_model, AmortisedLocalGuide(), 1),
            features=("PyroModule",),
        ),
        Case("local/auto_normal", _autoguided(local_model, AutoNormal)),
        Case(
            "unbatched_only/auto_normal",
            _autoguided(unbatched_only_model, AutoNormal),
            features=("not_vectorisable",),
        ),
        Case(
            "outer_plate_only/auto_normal",
            _autoguided(outer_plate_only_model, AutoNormal, 2),
            features=("particle_dim",),
        ),
        Case(
            "user_batched/handwritten",
            _program(user_batched_model, user_batched_guide, 2),
            features=("particle_dim",),
        ),
    ]
    for autoguide_name, autoguide in AUTOGUIDES.items():
        cases.append(Case(f"normal/{autoguide_name}", _autoguided(normal_model, autoguide)))
        for model, label in ((gamma_model, "gamma"), (constrained_model, "constrained")):
            builder = _autoguided(model, autoguide)
            cases.append(Case(f"{label}/{autoguide_name}", builder, features=("constrained",)))
    return cases


def _pyro_module_program() -> Program:
    model = BayesianRegression()
    return Program(model, AutoMultivariateNormal(model), 1)


def lab_model_cases() -> list[Case]:
    """Every registered lab model (with its example parameters where it needs some) with
    a mean-field normal guide (or the ``example_guide`` it states; a guide registered
    with ``score_function=True`` draws sites without rsample), on its training data; a
    model's ``conformance_repeats`` trait sets the expectation check's draws."""
    from pyro_elbo_lab.registry import guides, models

    def build(name: str) -> Program:
        model = models.build_example(name)
        guided = poutine.block(model, hide=list(model.enumerated_sites))
        guide_name = models.get(name).trait("example_guide", "normal")
        guide = guides.build(guide_name, guided if model.enumerated_sites else model)
        return Program(model, guide, model.max_plate_nesting, (model.train_data,))

    def features(name: str) -> tuple[str, ...]:
        guide = guides.get(models.get(name).trait("example_guide", "normal"))
        return ("lab_model", "score_function") if guide.trait("score_function") else ("lab_model",)

    return [
        Case(
            f"lab:{name}",
            lambda name=name: build(name),
            features=features(name),
            repeats=models.get(name).trait("conformance_repeats", None),
        )
        for name in models.names()
    ]


def all_cases() -> list[Case]:
    """The whole catalogue: the hand-written programs, then the lab's models."""
    return handwritten_cases() + lab_model_cases()
