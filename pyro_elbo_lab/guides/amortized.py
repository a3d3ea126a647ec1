r"""Amortised inference: a neural encoder maps each datapoint to its local posterior."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoGuide, AutoGuideList
from pyro.nn.module import to_pyro_module_
from torch.distributions import biject_to

from pyro_elbo_lab.errors import ConfigError, require, require_positive_float, require_positive_int
from pyro_elbo_lab.guides.pyro_builtin import (
    InitLoc,
    guide_target,
    latent_sites,
    normal_plus_local_part,
)
from pyro_elbo_lab.registry import guides

PlateFactory = Callable[[torch.Tensor], pyro.plate]


def mlp(
    sizes: Sequence[int], activation: type[torch.nn.Module] = torch.nn.ReLU
) -> torch.nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last)."""
    layers: list[torch.nn.Module] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(sizes)):
        if index:
            layers.append(activation())
        layers.append(torch.nn.Linear(width_in, width_out))
    return torch.nn.Sequential(*layers)


class AutoAmortizedNormal(AutoGuide):
    r"""Local latents :math:`z_n` of a data plate get :math:`q(z_n \mid x_n) =
    \mathcal N(\mu_\phi(x_n), \operatorname{diag}\sigma^2_\phi(x_n))` in unconstrained
    space, :math:`(\mu_\phi, \log\sigma_\phi)` from one MLP encoder of :math:`x_n`
    (Kingma & Welling 2014): the number of variational parameters no longer grows with
    N, and a new point's posterior costs one forward pass.

    The guide covers the sites of ``model`` inside ``data_plate`` whose batch shape is
    that plate alone (dim −1); block the rest (or use :func:`amortized`, which adds a
    mean-field part for global latents). It reads the data as the model's first
    argument (``data``, rows = points). Its data plate comes from Pyro's
    ``create_plates`` (pass the model's own plate factory to share its minibatch size:
    the guide draws the minibatch indices and the model replays them); inside an
    ``AutoGuideList`` the list's plates are used, as for every Pyro autoguide.

    :param hidden: widths of the encoder's hidden layers.
    :param init_scale: the encoder starts at scale ``init_scale`` (and loc 0) for every point.

    References: D. P. Kingma, M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        data_plate: str = "data",
        hidden: Sequence[int] = (32, 32),
        init_scale: float = 0.1,
        create_plates: PlateFactory | None = None,
    ) -> None:
        self.data_plate = data_plate
        self.hidden = tuple(hidden)
        self._init_scale = init_scale
        super().__init__(model, create_plates=create_plates)

    def _data(self, args: tuple, kwargs: dict) -> torch.Tensor:
        data = args[0] if args else kwargs.get("data")
        if not isinstance(data, torch.Tensor):
            raise ConfigError(
                "the amortized guide reads the data as the model's first argument (a tensor "
                "with one row per point), got " + type(data).__name__
            )
        return data

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        data = self._data(args, kwargs)
        self.local_shapes: dict[str, torch.Size] = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            frames = [f for f in site["cond_indep_stack"] if f.vectorized]
            names = [f.name for f in frames]
            if names != [self.data_plate] or site["fn"].batch_shape != (frames[0].size,):
                raise ConfigError(
                    f"the amortized guide's local part takes latents whose only plate is "
                    f"'{self.data_plate}' at dim -1, but site '{name}' has plates {names} and "
                    f"batch shape {tuple(site['fn'].batch_shape)}"
                )
            unconstrained = biject_to(site["fn"].support).inv(site["value"])
            self.local_shapes[name] = unconstrained.shape[1:]
        if not self.local_shapes:
            raise ConfigError(f"the model has no latents inside the plate '{self.data_plate}'")
        width = sum(math.prod(shape) for shape in self.local_shapes.values())
        encoder = mlp([math.prod(data.shape[1:]), *self.hidden, 2 * width]).to(
            device=data.device, dtype=data.dtype
        )
        with torch.no_grad():  # start every point at N(0, init_scale^2)
            encoder[-1].weight.zero_()
            encoder[-1].bias[:width].zero_()
            encoder[-1].bias[width:].fill_(math.log(math.expm1(self._init_scale)))
        to_pyro_module_(encoder)
        self.encoder = encoder

    def local_parameters(self, rows: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per site, the unconstrained (loc, scale) the encoder gives ``rows``: ``[B, ...]``."""
        out = self.encoder(rows.reshape(rows.shape[0], -1))
        locs, raw_scales = out.chunk(2, dim=-1)
        scales = torch.nn.functional.softplus(raw_scales)
        result, start = {}, 0
        for name, shape in self.local_shapes.items():
            stop = start + math.prod(shape)
            batch = rows.shape[:1]
            result[name] = (
                locs[..., start:stop].reshape(batch + shape),
                scales[..., start:stop].reshape(batch + shape),
            )
            start = stop
        return result

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        data = self._data(args, kwargs)
        values = {}
        with self._create_plates(*args, **kwargs)[self.data_plate] as index:
            parameters = self.local_parameters(data[index])
            for name, site in self.prototype_trace.iter_stochastic_nodes():
                loc, scale = parameters[name]
                transform = biject_to(site["fn"].support)
                posterior = dist.TransformedDistribution(
                    dist.Normal(loc, scale).to_event(len(self.local_shapes[name])),
                    transform.with_cache(),
                )
                values[name] = pyro.sample(name, posterior)
        return values

    def _constrained(self, data: torch.Tensor, unconstrained: Callable) -> dict[str, torch.Tensor]:
        parameters = self.local_parameters(data)
        return {
            name: biject_to(site["fn"].support)(unconstrained(*parameters[name]))
            for name, site in self.prototype_trace.iter_stochastic_nodes()
        }

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Per point, the encoder's location mapped to the constrained space."""
        return self._constrained(self._data(args, kwargs), lambda loc, scale: loc)

    @torch.no_grad()
    def quantiles(self, quantiles: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Per point and quantile (leading dim): exact, each coordinate being Normal."""
        levels = torch.as_tensor(quantiles)
        data = self._data(args, kwargs)

        def icdf(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            levels_ = levels.to(loc).reshape((-1,) + (1,) * loc.dim())
            return dist.Normal(loc, scale).icdf(levels_)

        return self._constrained(data, icdf)


def amortized(
    model: Callable[..., Any],
    hidden: Sequence[int] = (32, 32),
    init_scale: float = 0.1,
    init_loc: InitLoc = "median",
) -> AutoGuideList:
    """An encoder for the data plate's latents plus AutoNormal for the global ones."""
    require(len(hidden) > 0, "guide.hidden needs at least one layer width, e.g. [32, 32]")
    for width in hidden:
        require_positive_int("guide.hidden[]", width)
    require_positive_float("guide.init_scale", init_scale)
    target = guide_target(model)
    data_plate = getattr(model, "data_plate", "data")
    local, global_ = [], []
    for name, site in latent_sites(model).items():
        in_plate = any(frame.name == data_plate for frame in site["cond_indep_stack"])
        (local if in_plate else global_).append(name)
    if not local:
        raise ConfigError(
            f"guide=amortized needs latents inside the data plate '{data_plate}' (one per "
            "point), e.g. model=factor_analysis; this model has only global latents "
            f"{global_}: use guide=normal"
        )
    return normal_plus_local_part(
        model,
        target,
        local,
        lambda part: AutoAmortizedNormal(
            part, data_plate=data_plate, hidden=hidden, init_scale=init_scale
        ),
        init_loc,
        init_scale,
    )


guides.register("amortized", local_latents=True)(amortized)
