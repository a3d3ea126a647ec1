r"""First-order linear recurrences in log-depth, vectorised over every batch dim.

:math:`x_t = c\,x_{t-1} + b_t` for :math:`t = 0 \dots T-1` from :math:`x_{-1}`. Each step
is an affine map, and affine maps compose associatively,
:math:`(c_2, b_2) \circ (c_1, b_1) = (c_2 c_1,\; c_2 b_1 + b_2)`, so an inclusive prefix
scan (Hillis & Steele 1986) gives every :math:`x_t` in :math:`\lceil\log_2 T\rceil`
vectorised steps instead of T Python iterations: the ARMA error and GARCH variance
recursions of Stan programs become a handful of tensor operations per particle batch.
"""

from __future__ import annotations

import torch


def linear_recurrence(
    coefficient: torch.Tensor, increments: torch.Tensor, initial: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """:math:`x_t = c\\,x_{t-1} + b_t` along the last dim of ``increments``.

    :param coefficient: c, broadcastable to ``increments`` (e.g. ``[K, 1]`` per particle).
    :param increments: :math:`b_t` ``[..., T]``.
    :param initial: :math:`x_{-1}`, broadcastable to ``increments[..., :1]``.
    """
    initial = torch.as_tensor(initial, dtype=increments.dtype, device=increments.device)
    shape = torch.broadcast_shapes(coefficient.shape, increments.shape, initial.shape)
    scale = coefficient.expand(shape)
    offset = increments.expand(shape)
    offset = torch.cat([offset[..., :1] + scale[..., :1] * initial, offset[..., 1:]], -1)
    span = 1
    while span < shape[-1]:  # after this step, entry t composes the maps t-2span+1..t
        shifted = offset[..., span:] + scale[..., span:] * offset[..., :-span]
        scale = torch.cat([scale[..., :span], scale[..., span:] * scale[..., :-span]], -1)
        offset = torch.cat([offset[..., :span], shifted], -1)
        span *= 2
    return offset
