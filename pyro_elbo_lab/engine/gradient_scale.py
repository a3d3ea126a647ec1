r"""Latents that reach the model with their gradient scaled per particle (and datapoint).

A doubly-reparameterised estimator weighs the two ways a particle's log density
:math:`\log p_\theta(x, z_k(\phi))` depends on the parameters differently: the model's
parameters by :math:`m_k` (IWAE: :math:`\tilde w_k`), the path through the latent by
:math:`c_k` (:math:`\tilde w_k^2`). One model pass can carry both: feed the model
:math:`\zeta_k = z_k` whose backward multiplies the incoming gradient by
:math:`h_k = c_k / m_k`, and weigh :math:`\log p_\theta(x, \zeta_k)` by :math:`m_k`. Then
:math:`\nabla_\theta` gets :math:`m_k` and the latent path :math:`m_k h_k = c_k`, which a
second pass at stopped latents used to provide. The scale :math:`h` is only known once
the weights are, after the forward pass: the holder is filled before backward.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro import poutine


class LatentGradientScale:
    """The per-particle (``[K, 1]`` joint, ``[K, N]`` per datapoint) gradient scale of the
    latents the model sees, set in :attr:`value` after the forward pass."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def wrap(self, guide_trace: poutine.Trace, max_plate_nesting: int, data_plate: str | None):
        """A copy of ``guide_trace`` whose latent values carry the scaled gradient."""
        scaled = guide_trace.copy()
        for name, site in guide_trace.nodes.items():
            latent = site["type"] == "sample" and not site["is_observed"]
            if not latent or not site["value"].dtype.is_floating_point:  # indices, discrete
                continue
            layout = _layout(site, max_plate_nesting, data_plate)
            value = _ScaledGradient.apply(site["value"], self, layout)
            scaled.nodes[name] = {**site, "value": value}
        return scaled


def _layout(site: dict[str, Any], max_plate_nesting: int, data_plate: str | None) -> tuple:
    """Where the particle and the data plate sit among the value's dims."""
    value = site["value"]
    batch_dims = value.dim() - site["fn"].event_dim
    particle = batch_dims - (max_plate_nesting + 1)
    plate = next(
        (batch_dims + frame.dim for frame in site["cond_indep_stack"]
         if frame.name == data_plate and frame.vectorized),
        None,
    )  # fmt: skip
    return value.dim(), particle, plate


class _ScaledGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, holder: LatentGradientScale, layout: tuple):
        ctx.holder, ctx.layout = holder, layout
        return value.clone()

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor):
        scale = ctx.holder.value
        if scale is None:
            return gradient, None, None
        dims, particle, plate = ctx.layout
        shape = [1] * dims
        shape[particle] = scale.shape[0]
        if plate is not None and scale.shape[1] > 1:
            shape[plate] = scale.shape[1]
        elif scale.shape[1] > 1:  # a latent outside the data plate under per-datapoint groups
            raise RuntimeError("a global latent cannot take per-datapoint gradient scales")
        return gradient * scale.reshape(shape), None, None
