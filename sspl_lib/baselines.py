"""Model-free and visual-only heatmaps scored as baselines: the centre prior, random maps, the whole image,
and the L2 norm over channels of the frozen visual map."""

from __future__ import annotations

import torch
from einops import repeat


def center_prior(n: int, size: int = 14, sigma: float | None = None) -> torch.Tensor:
    """(n,size,size) centred isotropic Gaussian, sigma = `size / 4` cells by default."""
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


def whole_image(n: int, size: int = 14) -> torch.Tensor:
    """(n,size,size) ones: a constant map (an empty mask under the fixed protocol, all under median)."""
    if n < 0 or size < 1:
        raise ValueError(f"whole_image needs n >= 0 and size >= 1, got n={n}, size={size}")
    return torch.ones(n, size, size)


@torch.no_grad()
def feature_l2norm(encoder, frames: torch.Tensor) -> torch.Tensor:
    """The L2 norm over channels of a frozen visual map (B,h,w), an audio-free saliency (EZ-VSL's
    object prior is the mean |v|: `model.object_prior`). `encoder`: a visual encoder or a model with `.visual`."""
    visual = getattr(encoder, "visual", encoder)
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"feature_l2norm expects frames (B,3,S,S), got {tuple(frames.shape)}")
    was = visual.training
    visual.eval()
    try:
        v = visual(frames)  # (B,C,h,w)
    finally:
        visual.train(was)
    return torch.linalg.vector_norm(v.float(), dim=1)  # (B,h,w)

