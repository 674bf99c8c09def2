"""SSPL (Song et al., CVPR 2022): the two views' attention-pooled features predict each other through the
SimSiam head, with a stop-gradient on the targets; no negatives. Without the PCM (`use_pcm: false`) it is the
paper's "SSPL w/o PCM". Test-time map: the cosine map of the refined visual map (the official `orig_sim_map`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..head import simsiam_loss
from ..model import attention
from .base import Method


@dataclass(frozen=True)
class SSPLMethod(Method):
    uses_pcm = True
    distributed = True

    def loss(self, model, v1: torch.Tensor, v2: torch.Tensor, emb: torch.Tensor) -> dict:
        e, a = model.audio_features(emb)
        # both views through the PCM and the attention at once (per-sample ops, one call per layer); the
        # PCM's batch norms still see one view each, as with one call per view (the official computation)
        m = model.refine(self.visual_map(model, torch.cat([v1, v2])), torch.cat([e, e]), groups=2)
        f, sim, att = attention(m, torch.cat([a, a]))
        (f1, f2), sim1, att1 = f.chunk(2), sim.chunk(2)[0], att.chunk(2)[0]
        p1, p2, z1, z2 = model.head(f1, f2)
        loss = simsiam_loss(p1, p2, z1.detach(), z2.detach())
        return {"loss": loss, "p1": p1, "p2": p2, "z1": z1.detach(), "z2": z2.detach(),
                "heatmap": sim1, "attention": att1}
