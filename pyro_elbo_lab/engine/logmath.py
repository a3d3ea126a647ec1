r"""Log-space reductions over particles that every objective and estimator shares."""

from __future__ import annotations

import math

import torch


def log_mean_exp(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    r""":math:`\log \frac1K \sum_k e^{v_k}`, stable."""
    return values.logsumexp(dim) - math.log(values.shape[dim])


def leave_one_out_mean(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    r""":math:`\frac{1}{K-1}\sum_{j \ne k} v_j` for every k along ``dim`` (K >= 2)."""
    return (values.sum(dim, keepdim=True) - values) / (values.shape[dim] - 1)


def log_sum_exp_without_each(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    r""":math:`\log \sum_{j \ne k} e^{v_j}` for every k along ``dim``, in O(K).

    From the full sum, :math:`\log S + \log(1 - e^{v_k - \log S})`, which is exact
    except for a term that dominates S; that one (the maximum) is summed directly.
    """
    total = values.logsumexp(dim, keepdim=True)
    without = total + torch.log(-torch.expm1((values - total).clamp(max=0.0)))
    top = values.argmax(dim, keepdim=True)
    rest = values.scatter(dim, top, -math.inf).logsumexp(dim, keepdim=True)
    return without.scatter(dim, top, rest)
