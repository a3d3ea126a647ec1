r"""Site log densities summed down to one value per particle, or per particle and datapoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask

from pyro_elbo_lab.errors import ConfigError


class SiteReducer:
    """Sums site log densities down to ``[K]`` (particles) or ``[K, N]`` (datapoints).

    Site tensors carry the model's plate dims with the particle plate left of them.
    """

    def __init__(self, num_particles: int, max_plate_nesting: int, data_plate: str | None):
        self.num_particles = num_particles
        self.batch_dims = max_plate_nesting + 1
        self.data_plate = data_plate

    def _sites(self, trace: poutine.Trace) -> Iterator[tuple[str, dict]]:
        for name, site in trace.nodes.items():
            if site["type"] == "sample":
                yield name, site

    def _data_frame(self, site: dict) -> Any:
        if self.data_plate is None:
            return None
        for frame in site["cond_indep_stack"]:
            if frame.name == self.data_plate:
                return frame
        return None

    def _full_batch(self, log_prob: torch.Tensor) -> torch.Tensor:
        if log_prob.dim() > self.batch_dims:
            raise ConfigError("enumerated sites are not supported by this objective")
        return log_prob.reshape((1,) * (self.batch_dims - log_prob.dim()) + log_prob.shape)

    def per_particle(self, log_prob: torch.Tensor) -> torch.Tensor:
        """Sum a site's log density (or KL) over every dim but the particles': ``[K]``."""
        log_prob = self._full_batch(log_prob)
        return log_prob.reshape(log_prob.shape[0], -1).sum(-1).expand(self.num_particles)

    def total(self, trace: poutine.Trace, empty: torch.Tensor | None = None) -> torch.Tensor:
        """Every site's scaled log density summed per particle, ``[K]``; zeros like
        ``empty`` (or on the default device) for a trace without sample sites, e.g. the
        guide of a model with no latents, where the ELBO is log p(x)."""
        terms = [self.per_particle(site["log_prob"]) for _, site in self._sites(trace)]
        if not terms:
            return torch.zeros(self.num_particles) if empty is None else torch.zeros_like(empty)
        return torch.stack(terms).sum(0)

    def local(self, trace: poutine.Trace, observed_only: bool = False) -> torch.Tensor | None:
        local = None
        for _, site in self._sites(trace):
            frame = self._data_frame(site)
            if frame is None or (observed_only and not site["is_observed"]):
                continue
            masked = scale_and_mask(site["unscaled_log_prob"], mask=site["mask"])
            log_prob = self._full_batch(masked)
            data_axis = self.batch_dims + frame.dim
            log_prob = log_prob.movedim(data_axis, 1)
            per_point = log_prob.reshape(log_prob.shape[0], log_prob.shape[1], -1).sum(-1)
            local = per_point if local is None else local + per_point
        if local is None:
            return None
        return local.expand(self.num_particles, local.shape[1])

    def local_scale(self, trace: poutine.Trace) -> torch.Tensor | None:
        """The scale of each datapoint's sites in the data plate: a scalar or ``[N]``
        tensor; None when it differs within a datapoint or between the plate's sites."""
        scales = []
        for _, site in self._sites(trace):
            frame = self._data_frame(site)
            if frame is None:
                continue
            scale = torch.as_tensor(site["scale"])
            if scale.dim() == 0:
                scales.append(scale)
                continue
            scale = self._full_batch(scale.expand(site["unscaled_log_prob"].shape))
            scale = scale.movedim(self.batch_dims + frame.dim, 0).reshape(frame.size, -1)
            if not bool((scale == scale[:, :1]).all()):
                return None
            scales.append(scale[:, 0])
        if not scales:
            return torch.tensor(1.0)
        first = scales[0]
        if any(not torch.equal(*torch.broadcast_tensors(first, other)) for other in scales[1:]):
            return None
        return first

    def global_latents(self, guide_trace: poutine.Trace) -> tuple[str, ...]:
        return tuple(
            name
            for name, site in self._sites(guide_trace)
            if not site["is_observed"]
            and not site["infer"].get("is_auxiliary")
            and self._data_frame(site) is None
        )
