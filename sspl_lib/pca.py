"""A frozen PCA of a visual map: fit once on sampled locations of training maps, applied as a fixed 1x1 map
(its mean and basis are buffers: saved in checkpoints, never trained)."""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import einsum


def fit_pca(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples x (M,C) -> mean (C,) and the top-`dim` principal directions (C,dim), in float64 for a
    deterministic fit; each direction's sign makes its largest-magnitude entry positive."""
    m, c = x.shape
    if not 0 < dim <= c:
        raise ValueError(f"visual_pca_dim={dim}: expected 1..{c} (the encoder map's channels)")
    if m < 2:
        raise ValueError(f"a PCA needs at least 2 samples, got {m}")
    x = x.double()
    mean = x.mean(dim=0)
    cov = (x - mean).T @ (x - mean) / (m - 1)  # (C, C)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    basis = vecs.flip(-1)[:, :dim]
    sign = torch.sign(basis.gather(0, basis.abs().argmax(dim=0, keepdim=True)))
    return mean.float(), (basis * sign).float()


class FixedPCA(nn.Module):
    """(B,C,h,w) -> (B,dim,h,w) coefficients of (v - mean) on the basis."""

    def __init__(self, channels: int, dim: int):
        super().__init__()
        if not 0 < dim <= channels:
            raise ValueError(f"visual_pca_dim={dim}: expected 1..{channels} (the encoder map's channels)")
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("basis", torch.eye(channels, dim))  # unfit: the first `dim` channels

    def load_fit(self, mean: torch.Tensor, basis: torch.Tensor) -> "FixedPCA":
        self.load_state_dict({"mean": mean, "basis": basis})
        return self

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return einsum(v - self.mean[:, None, None], self.basis, "b c h w, c d -> b d h w")
