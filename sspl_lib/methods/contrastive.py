"""The ablation's contrastive baseline: EZ-VSL-style max-pooled InfoNCE on the frozen visual map itself (no
projection, no PCM), the two directions averaged; only the audio MLP trains."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Method, similarity_matrix

TAU = 0.03  # its temperature


def info_nce(sim: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """Symmetric InfoNCE of a similarity matrix with the positives on its diagonal."""
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"expected a square similarity matrix (B_img, B_aud), got {tuple(sim.shape)}")
    logits = sim / tau
    target = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


@dataclass(frozen=True)
class Contrastive(Method):
    views = 1
    tau: float = TAU

    def loss(self, model, v1: torch.Tensor, v2: None, emb: torch.Tensor) -> dict:
        """One view (v1). Returns {"loss", "sim" (B,B), "heatmap" (B,h,w) the true pairs' cosine maps}."""
        _, a = model.audio_features(emb)
        sim, maps = similarity_matrix(self.visual_map(model, v1), a)
        return {"loss": info_nce(sim, self.tau), "sim": sim.detach(), "heatmap": maps.detach()}
