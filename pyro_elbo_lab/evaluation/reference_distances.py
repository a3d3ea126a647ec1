r"""How far guide draws are from reference posterior draws, per parameter and jointly.

Every coordinate i of every site is put on the reference's scale,
:math:`x \mapsto (x - m_i)/s_i` with the reference mean :math:`m_i` and sd :math:`s_i`,
so numbers compare across parameters and posteriors. Per coordinate: the standardised
mean error :math:`(\hat m_i - m_i)/s_i`, the sd ratio :math:`\hat s_i / s_i` and the
1-Wasserstein distance :math:`W_1 = \int_0^1 |F^{-1}_q(t) - F^{-1}_{ref}(t)|\,dt`,
from both quantile functions on a grid of ``quantiles`` points. Jointly, over the
standardised vector of all coordinates:

- sliced :math:`W_1`: the mean 1-D :math:`W_1` of the projections on ``directions``
  random unit vectors (drawn from a fixed seed, so every run uses the same ones);
- Gaussian :math:`W_2` between the moment-matched Gaussians,
  :math:`W_2^2 = \|m_q - m_r\|^2 + \mathrm{tr}\big(C_q + C_r - 2(C_r^{1/2} C_q
  C_r^{1/2})^{1/2}\big)`, which sees correlations that marginals miss.

References: N. Bonneel, J. Rabin, G. Peyré, H. Pfister, "Sliced and Radon Wasserstein
Barycenters of Measures", 2015; D. C. Dowson, B. V. Landau, "The Fréchet distance between
multivariate normal distributions", 1982; posteriordb's own comparisons use W1 per
parameter (Magnusson et al. 2022).
"""

from __future__ import annotations

from typing import Any

import torch

#: seed of the sliced-W1 directions (the same for every run and checkpoint)
DIRECTION_SEED = 20231206


def _flat(draws: torch.Tensor) -> torch.Tensor:
    return draws.reshape(draws.shape[0], -1).double().cpu()


def _quantile_w1(first: torch.Tensor, second: torch.Tensor, quantiles: int) -> torch.Tensor:
    """1-D W1 per column between two samples (columns aligned), on a quantile grid."""
    grid = (torch.arange(quantiles, dtype=torch.float64) + 0.5) / quantiles
    return (torch.quantile(first, grid, dim=0) - torch.quantile(second, grid, dim=0)).abs().mean(0)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def coordinate_names(name: str, width: int) -> list[str]:
    """Stan-style names of a site's flattened coordinates: ``sigma`` or ``beta[1]``…"""
    return [name] if width == 1 else [f"{name}[{i + 1}]" for i in range(width)]


def reference_distances(
    draws: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    *,
    quantiles: int = 1000,
    directions: int = 100,
) -> dict[str, Any]:
    """Distances of guide ``draws`` from ``reference`` draws, sites ``[S, ...]`` each.

    Returns ``parameters`` (per coordinate: ``mean_error``, ``sd_ratio``, ``w1``, all on
    the reference's sd scale) and the summaries ``max_abs_mean_error``,
    ``sd_ratio_min``, ``sd_ratio_max``, ``w1_max``, ``w1_mean``, ``sliced_w1`` and
    ``gaussian_w2``.
    """
    names, guide_columns, reference_columns = [], [], []
    for name, values in reference.items():
        ref = _flat(values)
        names += coordinate_names(name, ref.shape[1])
        reference_columns.append(ref)
        guide_columns.append(_flat(draws[name]))
    ref, guide = torch.cat(reference_columns, 1), torch.cat(guide_columns, 1)
    mean, sd = ref.mean(0), ref.std(0)
    ref, guide = (ref - mean) / sd, (guide - mean) / sd
    mean_error, sd_ratio = guide.mean(0), guide.std(0)
    w1 = _quantile_w1(guide, ref, quantiles)
    generator = torch.Generator().manual_seed(DIRECTION_SEED)
    axes = torch.randn(ref.shape[1], directions, generator=generator, dtype=torch.float64)
    axes = axes / axes.norm(dim=0, keepdim=True)
    sliced = _quantile_w1(guide @ axes, ref @ axes, quantiles).mean()
    dim = ref.shape[1]
    ref_cov, guide_cov = torch.cov(ref.T).reshape(dim, dim), torch.cov(guide.T).reshape(dim, dim)
    if bool(guide_cov.isfinite().all()):
        root = _sqrt_psd(ref_cov)
        cross = _sqrt_psd(root @ guide_cov @ root)
        squared = mean_error.pow(2).sum() + torch.trace(ref_cov + guide_cov - 2 * cross)
    else:  # draws beyond float64's range: a guide infinitely far from the reference
        squared = torch.tensor(torch.inf, dtype=torch.float64)
    return {
        "parameters": {
            name: {"mean_error": float(m), "sd_ratio": float(s), "w1": float(w)}
            for name, m, s, w in zip(names, mean_error, sd_ratio, w1, strict=True)
        },
        "max_abs_mean_error": float(mean_error.abs().max()),
        "sd_ratio_min": float(sd_ratio.min()),
        "sd_ratio_max": float(sd_ratio.max()),
        "w1_max": float(w1.max()),
        "w1_mean": float(w1.mean()),
        "sliced_w1": float(sliced),
        "gaussian_w2": float(squared.clamp_min(0).sqrt()),
    }
