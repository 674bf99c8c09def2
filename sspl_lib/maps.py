"""Per-map operations shared by the model, the methods and the baselines."""

from __future__ import annotations

import torch
from einops import rearrange


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Maps (B,h,w) normalized per map to [0, 1]: (x - lo) / (hi - lo + 1e-10), the attention's formula."""
    flat = rearrange(x, "b h w -> b (h w)")
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo + 1e-10)).view_as(x)


def object_prior(v: torch.Tensor) -> torch.Tensor:
    """EZ-VSL's object prior of visual maps v (B,C,h,w): the mean |v| over channels (their `NormReducer`), (B,h,w)."""
    return v.abs().mean(dim=1)
