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
    tau: float = TAU

    def loss(self, model, frames1: torch.Tensor, frames2: torch.Tensor, spects: torch.Tensor) -> dict:
        """One view (frames1). Returns {"loss", "sim" (B,B), "heatmap" (B,h,w) the true pairs' cosine maps}."""
        _, a = model.encode_audio(spects)
        (v,) = model.encode_frames(frames1)
        sim, maps = similarity_matrix(self.visual_map(model, v), a)
        return {"loss": info_nce(sim, self.tau), "sim": sim.detach(), "heatmap": maps.detach()}
