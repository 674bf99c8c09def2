"""Model-free heatmap generators, scored by ``sspl_lib.metrics`` as sanity baselines."""

from __future__ import annotations

import torch
from einops import repeat


def center_prior(n: int, size: int = 14, sigma: float | None = None) -> torch.Tensor:
    """(n,size,size) float32 centred isotropic Gaussian, identical for every sample.

    sigma is in grid cells, default ``size / 4`` (a quarter of the side: the map falls to
    exp(-2) ~ 0.14 of its peak at the border midpoints). Cell centres are at i - (size-1)/2.
    """
    if n < 0 or size < 1:
        raise ValueError(f"center_prior needs n >= 0 and size >= 1, got n={n}, size={size}")
    sigma = size / 4 if sigma is None else float(sigma)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    c = torch.arange(size, dtype=torch.float64) - (size - 1) / 2  # (size,)
    g = torch.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * sigma**2))  # (size,size)
    return repeat(g.float(), "h w -> n h w", n=n).contiguous()


def uniform_random(n: int, size: int = 14, seed: int = 0) -> torch.Tensor:
    """(n,size,size) float32 i.i.d. U[0,1) maps from a seeded generator (reproducible)."""
    if n < 0 or size < 1:
        raise ValueError(f"uniform_random needs n >= 0 and size >= 1, got n={n}, size={size}")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(n, size, size, generator=gen)
