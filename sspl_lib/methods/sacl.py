"""SACL (Song et al., TPAMI 2024): per view, InfoNCE of the projected map masked to its positive region against
the clips, false negatives (close frozen audio embeddings) removed. docs/methods.md."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum, rearrange

from ..model import minmax
from .base import Projected

FALSE_NEGATIVE_LOGIT = -10.0  # the similarity given to removed negatives (before / tau)


def true_negative_mask(e: torch.Tensor, ratio_neg: float) -> torch.Tensor:
    """Frozen audio embeddings e (B,E) -> (B,B) bool: True where clip j is kept in anchor i's row (its own clip
    and the floor(ratio_neg * B) clips least similar to clip i); False = a removed false negative."""
    en = F.normalize(e, dim=1)
    order = torch.argsort(en @ en.t(), dim=1)  # ascending similarity
    keep = torch.eye(len(e), dtype=torch.bool, device=e.device)
    k = int(ratio_neg * len(e))
    return keep.scatter(1, order[:, :k], True)


def positive_region(sim_map: torch.Tensor, ratio_retain: float) -> torch.Tensor:
    """The binary similarity map: (B,h,w) -> (B,h,w) float 0/1, 1 where the min-max normalized map exceeds its
    value of ascending rank floor(h*w*ratio_retain). No gradient."""
    norm = rearrange(minmax(sim_map.detach()), "b h w -> b (h w)")
    k = min(int(norm.shape[1] * ratio_retain), norm.shape[1] - 1)
    thr = norm.sort(dim=1).values[:, k:k + 1]
    return (norm > thr).to(sim_map.dtype).view_as(sim_map)


def sacl_logits(v: torch.Tensor, mask: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Masked visual anchors vs every clip: v (B,K,h,w), mask (B,h,w), a (B,K) -> (B_img, B_aud)
    max_hw <mask_i * norm(v_i), norm(a_j)> (masked-out locations count as 0)."""
    vm = F.normalize(v, dim=1) * mask[:, None]
    return rearrange(einsum(vm, F.normalize(a, dim=1), "i k h w, j k -> i j h w"), "i j h w -> i j (h w)").amax(-1)


def sacl_contrast(views: list[torch.Tensor], a: torch.Tensor, e: torch.Tensor, *, tau: float, ratio_neg: float,
                  ratio_retain: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over views (each (B,K,h,w)) of CE(S_k / tau, diag), S_k = sacl_logits with the view's positive region
    and the false negatives set to FALSE_NEGATIVE_LOGIT. Returns the loss and the keep mask (B,B)."""
    keep = true_negative_mask(e, ratio_neg)
    target = torch.arange(len(a), device=a.device)
    loss = 0.0
    for v in views:  # two views at most: one term each
        s_map = einsum(F.normalize(v, dim=1), F.normalize(a, dim=1), "b k h w, b k -> b h w")
        logits = sacl_logits(v, positive_region(s_map, ratio_retain), a).masked_fill(~keep, FALSE_NEGATIVE_LOGIT)
        loss = loss + F.cross_entropy(logits / tau, target)
    return loss, keep


@dataclass(frozen=True)
class SACL(Projected):
    tau: float = 0.005  # `tempD`
    ratio_neg: float = 0.75  # fraction of the batch kept as negatives: the least similar clips
    ratio_retain: float = 0.5  # fraction of locations below the positive region's threshold

    @classmethod
    def from_config(cls, cfg) -> "SACL":
        return cls(tau=cfg.sacl_tau, ratio_neg=cfg.sacl_ratio_neg, ratio_retain=cfg.sacl_ratio_retain)

    def loss(self, model, v1: torch.Tensor, v2: torch.Tensor, emb: torch.Tensor) -> dict:
        e, a = model.audio_features(emb)
        views = [self.visual_map(model, v) for v in (v1, v2)]
        loss, keep = sacl_contrast(views, a, e, tau=self.tau, ratio_neg=self.ratio_neg, ratio_retain=self.ratio_retain)
        return {"loss": loss, "keep": keep}
