r"""Amortised inference: a neural encoder maps each datapoint to its local posterior."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoGuide, AutoGuideList
from pyro.nn.module import to_pyro_module_
from torch.distributions import biject_to, constraints
from torch.nn.functional import softplus

from pyro_elbo_lab.engine import distribution_name
from pyro_elbo_lab.errors import ConfigError, require, require_positive_float, require_positive_int
from pyro_elbo_lab.guides.pyro_builtin import (
    InitLoc,
    guide_target,
    latent_sites,
    normal_plus_local_part,
)
from pyro_elbo_lab.registry import guides

PlateFactory = Callable[[torch.Tensor], pyro.plate]
Baseline = Literal["none", "average", "network"]
BASELINES = ("none", "average", "network")


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


class AmortizedEncoderGuide(AutoGuide):
    r"""The shared part of amortised guides: one MLP encoder maps each datapoint
    :math:`x_n` to the parameters of :math:`q(z_n \mid x_n)` for every latent of the data
    plate (Kingma & Welling 2014), so the number of variational parameters no longer
    grows with N, and a new point's posterior costs one forward pass.

    The guide covers the sites of ``model`` inside ``data_plate`` whose batch shape is
    that plate alone (dim −1); block the rest (or use :func:`amortized`, which adds a
    mean-field part for global latents). It reads the data as the model's first
    argument (``data``, rows = points). Its data plate comes from Pyro's
    ``create_plates`` (pass the model's own plate factory to share its minibatch size:
    the guide draws the minibatch indices and the model replays them); inside an
    ``AutoGuideList`` the list's plates are used, as for every Pyro autoguide.

    A family states how many encoder outputs each latent coordinate takes
    (:attr:`outputs_per_coordinate`), the coordinates of a site
    (:meth:`_coordinate_shape`), how the encoder's last layer starts
    (:meth:`_initialise_head`), and the distribution of a site given its outputs
    (:meth:`_site_distribution`).
    """

    outputs_per_coordinate: ClassVar[int]
    #: every site's distribution is a function of φ and x alone (no site drawn from
    #: another's draw), so φ-stopped densities need no second encoder pass
    #: (:mod:`~pyro_elbo_lab.engine.stopped`)
    independent_sites: bool = True

    def __init__(
        self,
        model: Callable[..., Any],
        data_plate: str = "data",
        hidden: Sequence[int] = (32, 32),
        create_plates: PlateFactory | None = None,
    ) -> None:
        self.data_plate = data_plate
        self.hidden = tuple(hidden)
        super().__init__(model, create_plates=create_plates)

    def _data(self, args: tuple, kwargs: dict) -> torch.Tensor:
        data = args[0] if args else kwargs.get("data")
        if not isinstance(data, torch.Tensor):
            raise ConfigError(
                "the amortized guide reads the data as the model's first argument (a tensor "
                "with one row per point), got " + type(data).__name__
            )
        return data

    def _coordinate_shape(self, name: str, site: dict) -> torch.Size:
        raise NotImplementedError

    def _initialise_head(self, head: torch.nn.Linear, width: int) -> None:
        raise NotImplementedError

    def _site_distribution(
        self, name: str, site: dict, outputs: tuple[torch.Tensor, ...]
    ) -> dist.Distribution:
        raise NotImplementedError

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
            self.local_shapes[name] = self._coordinate_shape(name, site)
        if not self.local_shapes:
            raise ConfigError(f"the model has no latents inside the plate '{self.data_plate}'")
        width = sum(math.prod(self.local_shapes[name]) for name in self._encoded_sites())
        encoder = mlp(
            [math.prod(data.shape[1:]), *self.hidden, self.outputs_per_coordinate * width]
        ).to(device=data.device, dtype=data.dtype)
        with torch.no_grad():
            self._initialise_head(encoder[-1], width)
        to_pyro_module_(encoder)
        self.encoder = encoder

    def _encoded_sites(self) -> list[str]:
        """The sites whose parameters the encoder of x gives (all, by default)."""
        return list(self.local_shapes)

    def local_outputs(self, rows: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
        """Per site of :meth:`_encoded_sites`, the encoder's outputs for ``rows`` (one
        tensor ``[B, *site shape]`` per output of a coordinate)."""
        return self._split(self.encoder(rows.reshape(rows.shape[0], -1)), self._encoded_sites())

    def _split(self, flat: torch.Tensor, names: list[str]) -> dict[str, tuple[torch.Tensor, ...]]:
        """Outputs ``[*batch, P * width]`` cut into each site's P tensors ``[*batch, *shape]``."""
        outputs = flat.chunk(self.outputs_per_coordinate, dim=-1)
        result, start = {}, 0
        for name in names:
            shape = self.local_shapes[name]
            stop = start + math.prod(shape)
            result[name] = tuple(
                output[..., start:stop].reshape(flat.shape[:-1] + shape) for output in outputs
            )
            start = stop
        return result

    def _sample_sites(self, data: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.local_outputs(data[index])
        return {
            name: pyro.sample(name, self._site_distribution(name, site, outputs[name]))
            for name, site in self.prototype_trace.iter_stochastic_nodes()
        }

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        data = self._data(args, kwargs)
        with self._create_plates(*args, **kwargs)[self.data_plate] as index:
            return self._sample_sites(data, index)


class AutoAmortizedNormal(AmortizedEncoderGuide):
    r"""Local latents :math:`z_n` of a data plate get :math:`q(z_n \mid x_n) =
    \mathcal N(\mu_\phi(x_n), \operatorname{diag}\sigma^2_\phi(x_n))` in unconstrained
    space, :math:`(\mu_\phi, \log\sigma_\phi)` from one MLP encoder of :math:`x_n`
    (see :class:`AmortizedEncoderGuide`).

    :param hidden: widths of the encoder's hidden layers.
    :param init_scale: the encoder starts at scale ``init_scale`` (and loc 0) for every point.
    :param chain: for local latents drawn one from another (:math:`z'_n \to z_n \to x_n`,
        in the model's order), the bottom-up factorisation of Burda et al.'s two-layer
        architecture: the site nearest the data from x,
        :math:`q(z_n \mid x_n)`, and every earlier site from the one drawn after it,
        :math:`q(z'_n \mid z_n)`, each a diagonal Gaussian from its own MLP (``hidden``
        widths); false: every site from x, mean-field given x.

    References: D. P. Kingma, M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014;
    Y. Burda, R. Grosse, R. Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
    """

    outputs_per_coordinate = 2
    #: draws per point for the mean of a chained site (its mean has no closed form)
    chain_mean_draws: ClassVar[int] = 1000

    def __init__(
        self,
        model: Callable[..., Any],
        data_plate: str = "data",
        hidden: Sequence[int] = (32, 32),
        init_scale: float = 0.1,
        create_plates: PlateFactory | None = None,
        chain: bool = False,
    ) -> None:
        self._init_scale = init_scale
        self.chain = chain
        self.independent_sites = not chain  # a chained site is drawn from the next one's draw
        super().__init__(model, data_plate, hidden, create_plates)

    def _encoded_sites(self) -> list[str]:
        names = list(self.local_shapes)
        return names[-1:] if self.chain else names

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        if not self.chain:
            return
        names, device = list(self.local_shapes), self._data(args, kwargs).device
        links = torch.nn.ModuleList()
        for above, below in itertools.pairwise(names):
            width = math.prod(self.local_shapes[above])
            link = mlp([math.prod(self.local_shapes[below]), *self.hidden, 2 * width]).to(device)
            with torch.no_grad():
                self._initialise_head(link[-1], width)
            links.append(link)
        to_pyro_module_(links)
        self.chain_encoders = links

    def _chain_outputs(
        self, index: int, below: str, value: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, ...]]:
        """The outputs for site ``index`` of the chain given the value of the site after it."""
        support = self.prototype_trace.nodes[below]["fn"].support
        unconstrained = biject_to(support).inv(value)
        batch = unconstrained.shape[: unconstrained.dim() - len(self.local_shapes[below])]
        flat = unconstrained.reshape(*batch, -1)
        return self._split(self.chain_encoders[index](flat), [list(self.local_shapes)[index]])

    def _sample_sites(self, data: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.chain:
            return super()._sample_sites(data, index)
        names = list(self.local_shapes)
        nodes = self.prototype_trace.nodes
        outputs = self.local_outputs(data[index])
        values = {
            names[-1]: pyro.sample(
                names[-1], self._site_distribution(names[-1], nodes[names[-1]], outputs[names[-1]])
            )
        }
        for position in reversed(range(len(names) - 1)):
            name, below = names[position], names[position + 1]
            outputs = self._chain_outputs(position, below, values[below])
            values[name] = pyro.sample(
                name, self._site_distribution(name, nodes[name], outputs[name])
            )
        return values

    def _coordinate_shape(self, name: str, site: dict) -> torch.Size:
        return biject_to(site["fn"].support).inv(site["value"]).shape[1:]

    def _initialise_head(self, head: torch.nn.Linear, width: int) -> None:
        # every point starts at N(0, init_scale^2)
        head.weight.zero_()
        head.bias[:width].zero_()
        head.bias[width:].fill_(math.log(math.expm1(self._init_scale)))

    def _site_distribution(
        self, name: str, site: dict, outputs: tuple[torch.Tensor, ...]
    ) -> dist.Distribution:
        loc, raw_scale = outputs
        return dist.TransformedDistribution(
            dist.Normal(loc, softplus(raw_scale)).to_event(len(self.local_shapes[name])),
            biject_to(site["fn"].support).with_cache(),
        )

    def local_parameters(self, rows: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per site, the unconstrained (loc, scale) the encoder gives ``rows``: ``[B, ...]``."""
        return {
            name: (loc, softplus(raw_scale))
            for name, (loc, raw_scale) in self.local_outputs(rows).items()
        }

    @torch.no_grad()
    def local_means(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per site, :math:`E_q[z_n \\mid x_n]` for ``rows`` where the site's support is the
        real line (the encoder's loc); elsewhere the loc mapped to the support, which is
        the median, not the mean. Under ``chain`` the earlier sites' means are averages
        of their locs over :attr:`chain_mean_draws` ancestral draws of the sites below."""
        if not self.chain:
            return self._constrained(rows, lambda loc, scale: loc)
        names, nodes = list(self.local_shapes), self.prototype_trace.nodes
        outputs = self.local_outputs(rows)[names[-1]]
        means = {names[-1]: biject_to(nodes[names[-1]]["fn"].support)(outputs[0])}
        draws = self._site_distribution(names[-1], nodes[names[-1]], outputs).sample(
            (self.chain_mean_draws,)
        )
        for position in reversed(range(len(names) - 1)):
            name, below = names[position], names[position + 1]
            outputs = self._chain_outputs(position, below, draws)[name]
            support = biject_to(nodes[name]["fn"].support)
            means[name] = support(outputs[0]).mean(0)
            draws = self._site_distribution(name, nodes[name], outputs).sample()
        return means

    def _constrained(self, data: torch.Tensor, unconstrained: Callable) -> dict[str, torch.Tensor]:
        if self.chain:
            raise ConfigError(
                "guide.chain=true: a chained site's median and quantiles given x have no "
                "closed form; draw from the guide (e.g. Predictive) instead"
            )
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


class AutoAmortizedBernoulli(AmortizedEncoderGuide):
    r"""Binary local latents :math:`z_n \in \{0, 1\}^H` of a data plate get independent
    Bernoullis :math:`q(z_n \mid x_n) = \prod_h \mathrm{Bernoulli}(\sigma(\eta_\phi(x_n))_h)`,
    the logits from one MLP encoder of :math:`x_n` (see :class:`AmortizedEncoderGuide`):
    the recognition model of sigmoid belief networks in NVIL and VIMCO (Mnih & Gregor
    2014; Mnih & Rezende 2016). The draws are not reparameterisable, so the objective
    needs a score-function gradient (``trace``, ``trace_graph``, ``vimco``, ``rws``,
    ``renyi``).

    :param baseline: the control variate that Pyro's ``TraceGraph_ELBO`` subtracts from
        the learning signal: ``none``; ``average`` (a decaying average of it); or
        ``network``, an input-dependent baseline :math:`b_\psi(x_n)` (an MLP of the same
        hidden widths) fitted by least squares to the learning signal, as NVIL's (without
        NVIL's variance normalisation). Other objectives ignore it.

    References: A. Mnih, K. Gregor, "Neural Variational Inference and Learning in Belief
    Networks", ICML 2014; A. Mnih, D. J. Rezende, "Variational Inference for Monte Carlo
    Objectives", ICML 2016.
    """

    outputs_per_coordinate = 1

    def __init__(
        self,
        model: Callable[..., Any],
        data_plate: str = "data",
        hidden: Sequence[int] = (32, 32),
        baseline: Baseline = "none",
        create_plates: PlateFactory | None = None,
    ) -> None:
        require(
            baseline in BASELINES,
            f"guide.baseline must be one of {', '.join(BASELINES)}, got {baseline!r}",
        )
        self.baseline = baseline
        super().__init__(model, data_plate, hidden, create_plates)

    def _coordinate_shape(self, name: str, site: dict) -> torch.Size:
        if site["fn"].support is not constraints.boolean and not (
            isinstance(site["fn"].support, constraints.independent)
            and site["fn"].support.base_constraint is constraints.boolean
        ):
            raise ConfigError(
                f"guide=amortized_bernoulli takes binary latents; site '{name}' "
                f"({distribution_name(site['fn'])}) is not: use guide=amortized"
            )
        return site["fn"].event_shape

    def _initialise_head(self, head: torch.nn.Linear, width: int) -> None:
        # every point starts at q = Bernoulli(1/2) in every coordinate
        head.weight.zero_()
        head.bias.zero_()

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        if self.baseline == "network":
            data = self._data(args, kwargs)
            network = mlp([math.prod(data.shape[1:]), *self.hidden, 1]).to(
                device=data.device, dtype=data.dtype
            )
            to_pyro_module_(network)
            self.baseline_network = network

    def _site_distribution(
        self, name: str, site: dict, outputs: tuple[torch.Tensor, ...]
    ) -> dist.Distribution:
        (logits,) = outputs
        return dist.Bernoulli(logits=logits).to_event(len(self.local_shapes[name]))

    def _sample_sites(self, data: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = data[index]
        outputs = self.local_outputs(rows)
        infer = {
            "none": {},
            "average": {"baseline": {"use_decaying_avg_baseline": True}},
            "network": {
                "baseline": {
                    "nn_baseline": lambda x: self.baseline_network(x).squeeze(-1),
                    "nn_baseline_input": rows.reshape(rows.shape[0], -1),
                }
            },
        }[self.baseline]
        return {
            name: pyro.sample(
                name, self._site_distribution(name, site, outputs[name]), infer=dict(infer)
            )
            for name, site in self.prototype_trace.iter_stochastic_nodes()
        }

    @torch.no_grad()
    def local_means(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per site, :math:`E_q[z_n \\mid x_n] = \\sigma(\\eta_\\phi(x_n))` for ``rows``."""
        return {name: torch.sigmoid(logits) for name, (logits,) in self.local_outputs(rows).items()}

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Per point, the most probable value of each coordinate."""
        return {
            name: (mean > 0.5).to(mean)
            for name, mean in self.local_means(self._data(args, kwargs)).items()
        }


def _local_latents(model: Callable[..., Any], guide_name: str, example: str) -> list[str]:
    """The latents of ``model`` inside its data plate; none is an error naming ``example``."""
    data_plate = getattr(model, "data_plate", "data")
    local, global_ = [], []
    for name, site in latent_sites(model).items():
        in_plate = any(frame.name == data_plate for frame in site["cond_indep_stack"])
        (local if in_plate else global_).append(name)
    if not local:
        raise ConfigError(
            f"guide={guide_name} needs latents inside the data plate '{data_plate}' (one per "
            f"point), e.g. model={example}; this model has only global latents "
            f"{global_}: use guide=normal"
        )
    return local


def _encoder_plus_normal(
    model: Callable[..., Any],
    guide_name: str,
    example: str,
    hidden: Sequence[int],
    init_scale: float,
    init_loc: InitLoc,
    local_part: Callable[[Callable[..., Any], str], AmortizedEncoderGuide],
) -> AutoGuideList:
    """``local_part`` (an encoder guide) for the data plate's latents, AutoNormal for the
    rest, checked options first."""
    require(len(hidden) > 0, "guide.hidden needs at least one layer width, e.g. [32, 32]")
    for width in hidden:
        require_positive_int("guide.hidden[]", width)
    require_positive_float("guide.init_scale", init_scale)
    data_plate = getattr(model, "data_plate", "data")
    return normal_plus_local_part(
        model,
        guide_target(model),
        _local_latents(model, guide_name, example),
        lambda part: local_part(part, data_plate),
        init_loc,
        init_scale,
    )


def amortized(
    model: Callable[..., Any],
    hidden: Sequence[int] = (32, 32),
    init_scale: float = 0.1,
    init_loc: InitLoc = "median",
    chain: bool = False,
) -> AutoGuideList:
    """An encoder for the data plate's latents plus AutoNormal for the global ones.

    ``chain``: the local latents bottom-up, Burda et al.'s two-layer encoder."""
    return _encoder_plus_normal(
        model, "amortized", "factor_analysis", hidden, init_scale, init_loc,
        lambda part, data_plate: AutoAmortizedNormal(
            part, data_plate=data_plate, hidden=hidden, init_scale=init_scale, chain=chain
        ),
    )  # fmt: skip


guides.register("amortized", local_latents=True)(amortized)


@guides.register(
    "amortized_bernoulli",
    local_latents=True,
    score_function=True,
    binary_latents=True,
    example_overrides=[
        "model=sbn",
        "model.num_train=40",
        "model.num_heldout=10",
        "model.num_latents=3",
    ],
)
def amortized_bernoulli(
    model: Callable[..., Any],
    hidden: Sequence[int] = (200,),
    baseline: Baseline = "none",
    init_scale: float = 0.1,
    init_loc: InitLoc = "median",
) -> AutoGuideList:
    """Independent Bernoullis from an encoder for the data plate's binary latents (e.g.
    ``model=sbn``), AutoNormal for global ones; ``baseline`` for ``trace_graph``."""
    return _encoder_plus_normal(
        model, "amortized_bernoulli", "sbn", hidden, init_scale, init_loc,
        lambda part, data_plate: AutoAmortizedBernoulli(
            part, data_plate=data_plate, hidden=hidden, baseline=baseline
        ),
    )  # fmt: skip
