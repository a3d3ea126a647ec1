"""The contract every model in the lab fulfils."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from typing import ClassVar

import pyro
import torch
from pyro import poutine
from pyro.distributions import Distribution, ImproperUniform
from pyro.poutine.uncondition_messenger import UnconditionMessenger
from pyro.poutine.util import site_is_subsample

from pyro_elbo_lab.devices import resolve_device
from pyro_elbo_lab.errors import (
    ConfigError,
    require,
    require_finite_tensor,
    require_positive_int,
)


class _SampleObservations(UnconditionMessenger):
    """``poutine.uncondition`` for data only: ``pyro.deterministic`` sites (observed Deltas
    under the hood) keep their computed values."""

    def _process_message(self, msg: dict) -> None:
        if not msg["infer"].get("_deterministic"):
            super()._process_message(msg)


class LatentVariableModel(abc.ABC):
    """A Pyro model with its seeded data and whatever ground truth is known.

    Calling the object runs the Pyro model, so it goes wherever Pyro expects a model::

        model = NormalNormal(num_train=50, seed=0)
        guide = AutoNormal(model)
        svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
        svi.step(model.train_data)

    Observations live in a plate named :attr:`data_plate` at ``dim=-1``; data are drawn on
    the CPU from a generator seeded with ``seed`` (so every device sees the same numbers)
    and moved to ``device``. Subclasses implement :meth:`simulate` and :meth:`model`, and
    override the ground-truth methods where the truth is known (``None`` otherwise).
    """

    data_plate: ClassVar[str] = "data"
    max_plate_nesting: ClassVar[int] = 1
    #: Whether latents live inside the data plate (one per point): held-out points then
    #: need their own inference, so guide-based held-out likelihood does not apply.
    has_local_latents: ClassVar[bool] = False
    #: Whether the model holds parameters θ learned with the guide (a VAE's decoder):
    #: evaluation then measures the model too (test log-likelihood per point).
    learns_parameters: ClassVar[bool] = False
    #: Whether :meth:`exact_posterior` is one joint Gaussian over real-valued latents (its
    #: sites independent a posteriori, each Gaussian).
    gaussian_posterior: ClassVar[bool] = False
    #: Sites that the model marginalises by enumeration (guides must not sample them).
    enumerated_sites: tuple[str, ...] = ()
    #: Minibatch size of the data plate in training (None: the full data), for models
    #: whose :meth:`model` opens its plate with :meth:`data_plate_over`.
    subsample_size: int | None = None
    #: How a minibatch's indices are drawn: uniformly with replacement (O(batch)) or a
    #: uniform subset without replacement (Pyro's ``randperm``, O(N)); see :meth:`data_plate_over`.
    subsample_with_replacement: bool = True
    #: the last minibatch :meth:`step_data` drew afresh (None: steps see :attr:`train_data`)
    _step_minibatch: torch.Tensor | None = None

    def __init__(
        self, *, num_train: int, num_heldout: int, seed: int, device: str | torch.device = "cpu"
    ) -> None:
        require_positive_int("model.num_train", num_train)
        require_positive_int("model.num_heldout", num_heldout, minimum=0)
        self.device = resolve_device(device)
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        self.source_rows = torch.arange(num_train + num_heldout)
        data = self.simulate(num_train + num_heldout, generator)
        self.train_data = self._accept_data("training data", data[:num_train])
        self.heldout_data = self._accept_data("held-out data", data[num_train:])
        #: each training and held-out row's 0-based position in the data it was drawn from
        #: (the user's file), whatever the shuffle: the data plate's coordinate in outputs
        self.train_rows = self.source_rows[:num_train]
        self.heldout_rows = self.source_rows[num_train:]

    def pick_rows(self, num_rows: int, num_data: int, generator: torch.Generator) -> torch.Tensor:
        """For :meth:`simulate` from a file of ``num_rows`` rows: ``num_data`` of them in
        a random order drawn with ``generator`` (training rows first, then held-out ones),
        remembered as :attr:`source_rows` so that every output can name the file's rows."""
        self.source_rows = torch.randperm(num_rows, generator=generator)[:num_data]
        return self.source_rows

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one observation."""
        return tuple(self.train_data.shape[1:])

    @abc.abstractmethod
    def simulate(self, num_data: int, generator: torch.Generator) -> torch.Tensor:
        """Draw ``num_data`` observations (leading dim) on the CPU with ``generator``."""

    @abc.abstractmethod
    def model(self, data: torch.Tensor) -> None:
        """The Pyro program over ``data`` (observations in the ``data`` plate)."""

    def set_subsampling(self, subsample_size: int | None, with_replacement: bool = True) -> None:
        """Check and set :attr:`subsample_size` and :attr:`subsample_with_replacement`."""
        if subsample_size is not None:
            require_positive_int("model.subsample_size", subsample_size)
        require(
            isinstance(with_replacement, bool),
            f"model.subsample_with_replacement must be true or false, got {with_replacement!r}",
        )
        self.subsample_size = subsample_size
        self.subsample_with_replacement = with_replacement

    def data_plate_over(self, data: torch.Tensor) -> pyro.plate:
        r"""The data plate over ``data``'s rows, subsampled to :attr:`subsample_size`.

        Use as ``with self.data_plate_over(data) as index: ... obs=data[index]``: Pyro
        scales the minibatch's log densities by N / B, so the minibatch ELBO is an
        unbiased estimate of the full-data ELBO (Hoffman et al. 2013). With
        :attr:`subsample_with_replacement` (default) the B indices are i.i.d. uniform,
        :math:`\mathbb E[\tfrac NB \sum_{j} \ell(x_{i_j})] = \sum_n \ell(x_n)`, drawn
        in O(B) (``randint``; a step at N = 10⁶ no longer pays a ``randperm(N)``); else
        a uniform subset without replacement (Pyro's ``randperm(N)[:B]``, O(N), slightly
        lower variance by the finite-population factor (N − B)/(N − 1)). A guide that
        opens the same plate (e.g. ``guide=amortized``) draws the indices and the model
        replays them.
        """
        if data is self._step_minibatch:  # drawn by step_data: its rows are the minibatch
            rows = torch.arange(data.shape[0], device=data.device)
            return pyro.plate(self.data_plate, self.train_data.shape[0], subsample=rows, dim=-1)
        num = data.shape[0]
        rows = self.minibatch_rows(num, data.device)
        if rows is None:
            return pyro.plate(self.data_plate, num, dim=-1)
        return pyro.plate(self.data_plate, num, subsample=rows, dim=-1)

    def minibatch_rows(self, num: int, device: torch.device) -> torch.Tensor | None:
        """One minibatch's row indices among ``num`` rows (None: all of them), drawn with
        replacement (``randint``, O(batch)) or as a subset (``randperm``, Pyro's draw)."""
        size = self.subsample_size if self.subsample_size and self.subsample_size < num else None
        if size is None:
            return None
        if self.subsample_with_replacement:
            return torch.randint(num, (size,), device=device)
        return torch.randperm(num, device=device)[:size]

    def step_data(self) -> torch.Tensor:
        """The data one training step sees: :attr:`train_data` (its plate subsamples), or,
        for a model that redraws its observations per step (dynamic binarisation), a fresh
        minibatch, which :meth:`data_plate_over` scales to the training set's size."""
        return self.train_data

    @contextlib.contextmanager
    def without_subsampling(self) -> Iterator[None]:
        """Use the full data plate inside (evaluation measures the whole data set)."""
        size, self.subsample_size = self.subsample_size, None
        try:
            yield
        finally:
            self.subsample_size = size

    def marginal_model(self, data: torch.Tensor) -> None:
        """The same joint density over the continuous latents with discrete ones summed out.

        Evaluation uses this form, so models that enumerate during training (for
        ``TraceEnum_ELBO``) are still measured with importance weights.
        """
        self.model(data)

    def evaluation_model(self, data: torch.Tensor) -> None:
        """The program evaluation weighs a fitted guide against: :meth:`marginal_model`,
        or the sampling model where the guide itself draws the discrete latents."""
        self.marginal_model(data)

    def __call__(self, data: torch.Tensor | None = None) -> None:
        self.model(self.train_data if data is None else self.check_data(data))

    def check_data(self, data: torch.Tensor) -> torch.Tensor:
        """Data of the wrong shape, dtype or device fail here, with the expected layout."""
        if not isinstance(data, torch.Tensor):
            raise ConfigError(
                f"{type(self).__name__} data must be a torch.Tensor, got {type(data)}"
            )
        expected = self.event_shape
        if tuple(data.shape[1:]) != expected or data.dim() != len(expected) + 1:
            raise ConfigError(
                f"{type(self).__name__} expects data of shape (num_points, "
                f"{', '.join(map(str, expected))}), got {tuple(data.shape)}"
            )
        if data.device != self.train_data.device:
            raise ConfigError(
                f"data is on {data.device} but the model lives on {self.device}; "
                f"move it with data.to('{self.device}')"
            )
        return data

    def exact_log_evidence(self, data: torch.Tensor | None = None) -> float | None:
        """log p(data) (default: the training data) where it is known in closed form."""
        return None

    def exact_posterior(self) -> dict[str, Distribution] | None:
        """p(z | training data) per latent site, where it is known in closed form."""
        return None

    def exact_gaussian_posterior(self) -> dict[str, Distribution] | None:
        """:meth:`exact_posterior` where :attr:`gaussian_posterior` says it is one joint
        Gaussian, so KL(q ‖ p) has a closed form for Gaussian guides
        (:func:`~pyro_elbo_lab.evaluation.exact_kl.closed_form_kl`); else None."""
        return self.exact_posterior() if self.gaussian_posterior else None

    def exact_predictive_log_likelihood(self, data: torch.Tensor) -> torch.Tensor | None:
        """log p(x_new | training data) for each row of ``data``, where known."""
        return None

    def reference_posterior_draws(self) -> dict[str, torch.Tensor] | None:
        """Draws from p(z | training data) (e.g. long MCMC runs), per site, where available."""
        return None

    def latents_from_reference(self, draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`reference_posterior_draws` as values of the model's latent sites, where
        the reference names other quantities (a non-centred model's reference gives the
        centred values): identity by default."""
        return draws

    def prior_predictive(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """θ ~ p(θ) and data x ~ p(x | θ) from the Pyro model itself: its observed sites
        are sampled instead (as ``poutine.uncondition`` does, deterministic sites aside;
        Pyro's global RNG) and put where the
        training data hold them (:meth:`with_observations`). Returns the latent sites'
        values and the simulated data, shaped like :attr:`train_data`.

        Raises :class:`ConfigError` for an improper prior (it has no draws) or a data
        layout :meth:`with_observations` cannot fill.
        """
        with poutine.block(), torch.no_grad():
            conditioned = poutine.trace(self.model).get_trace(self.train_data)
            simulated = poutine.trace(_SampleObservations()(self.model)).get_trace(self.train_data)
        observed, latents = {}, {}
        for name, site in conditioned.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if isinstance(site["fn"], ImproperUniform):
                raise ConfigError(
                    f"{type(self).__name__}: site '{name}' has an improper (flat) prior, "
                    "which has no draws; prior simulation (VSBC) needs a proper prior"
                )
            value = simulated.nodes[name]["value"]
            if site["is_observed"]:
                observed[name] = value
            elif not site["infer"].get("_deterministic"):
                latents[name] = value
        return latents, self.with_observations(observed)

    def with_observations(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training data with the observed sites' values replaced by ``observations``.

        Default: one observed site whose value has the data's shape is the data. Models
        whose data also hold covariates override this.
        """
        if len(observations) == 1:
            (value,) = observations.values()
            if value.shape == self.train_data.shape:
                return value
        raise ConfigError(
            f"{type(self).__name__} cannot place simulated observations "
            f"{ {name: tuple(v.shape) for name, v in observations.items()} } into its data "
            f"of shape {tuple(self.train_data.shape)}; it needs with_observations for "
            "prior simulation (VSBC)"
        )

    def _accept_data(self, what: str, data: torch.Tensor) -> torch.Tensor:
        require_finite_tensor(f"{type(self).__name__} {what}", data)
        return data.to(self.device)
