"""EZ-VSL (Mo & Morgado, ECCV 2022): max-pooled MIL InfoNCE, its object-guided test-time map (OGL) as a setting;
and `ezvsl_gated`: the MIL over the object prior's region, a gated map. docs/methods.md."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from ..config import ConfigError
from ..model import minmax
from .base import Projected, similarity_matrix


def mil_loss(v: torch.Tensor, a: torch.Tensor, tau: float, region: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """v (B,K,h,w), a (B,K) -> CE(S, diag) + CE(S^T, diag), S_ij = max_hw cos(v_i, a_j) / tau (over `region`
    when given; the two directions summed, as published), and S."""
    sim, _ = similarity_matrix(v, a, region)
    logits = sim / tau
    target = torch.arange(sim.shape[0], device=sim.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target), sim


def object_region(obj: torch.Tensor, threshold: float) -> torch.Tensor:
    """Object priors of frozen maps (B,h,w) -> (B,h,w) bool: where the prior, min-max normalized per map,
    reaches `threshold` (compared unnormalized: the prior's maximum always does)."""
    obj = obj.detach()
    flat = rearrange(obj, "b h w -> b (h w)")
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - lo) >= threshold * (hi - lo)).view_as(obj)


@dataclass(frozen=True)
class EZVSL(Projected):
    views = 1
    tau: float = 0.03
    ogl_alpha: float = 0.0  # > 0: test-time map alpha * AV + (1 - alpha) * object prior (the published OGL: 0.4)

    @classmethod
    def from_config(cls, cfg) -> "EZVSL":
        return cls(tau=cfg.ezvsl_tau, ogl_alpha=cfg.ezvsl_ogl_alpha)

    def region(self, model, v: torch.Tensor) -> torch.Tensor | None:
        """Where image i's max may run (None: everywhere)."""
        return None

    def loss(self, model, v1: torch.Tensor, v2: None, emb: torch.Tensor) -> dict:
        """One view (v1)."""
        _, a = model.audio_features(emb)
        loss, sim = mil_loss(self.visual_map(model, v1), a, self.tau, self.region(model, v1))
        return {"loss": loss, "sim": sim.detach()}

    def heatmap(self, model, v: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        av = self.cosine_map(model, v, emb)
        if self.ogl_alpha:  # the official code combines after upsampling to 224 px; here on the grid (linear)
            return self.ogl_alpha * minmax(av) + (1 - self.ogl_alpha) * minmax(model.object_prior(v))
        return av


@dataclass(frozen=True)
class EZVSLGated(EZVSL):
    region_threshold: float = 0.0  # > 0: the MIL max only where the normalized object prior reaches it
    gamma: float = 0.0  # > 0: test-time map minmax(AV) ** gamma * minmax(prior): the audio picks, the prior spans

    def __post_init__(self):
        if self.ogl_alpha and self.gamma:
            raise ConfigError(f"ezvsl_ogl_alpha={self.ogl_alpha!r} and ezvsl_gated_gamma={self.gamma!r}: choose "
                              "one object prior (the sum of EZ-VSL's OGL or the gate), set the other to 0")

    @classmethod
    def from_config(cls, cfg) -> "EZVSLGated":
        return cls(tau=cfg.ezvsl_tau, ogl_alpha=cfg.ezvsl_ogl_alpha, region_threshold=cfg.ezvsl_gated_region,
                   gamma=cfg.ezvsl_gated_gamma)

    def region(self, model, v: torch.Tensor) -> torch.Tensor | None:
        return object_region(model.object_prior(v), self.region_threshold) if self.region_threshold > 0 else None

    def heatmap(self, model, v: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if not self.gamma:
            return super().heatmap(model, v, emb)
        return minmax(self.cosine_map(model, v, emb)) ** self.gamma * minmax(model.object_prior(v))
