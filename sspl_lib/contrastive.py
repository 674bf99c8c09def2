"""Contrastive baseline (EZ-VSL style, Mo & Morgado 2022) on the SSPL encoders: `cfg.objective="contrastive"`.

Similarity of frame i and clip j = max over locations of cos(v_i[:, y, x], a_j) (multiple-instance
max-pooling); InfoNCE over the batch in both directions (audio->image and image->audio) with
temperature tau = 0.03, the positives on the diagonal. No PCM: the visual map is compared with the
audio feature directly, so the localization map is the plain cosine map (`SSPL.heatmap` of a model
built with `use_pcm=False`). The SimSiam head exists in the model but receives no gradient.

Hook for `train.fit`: per step, `out = objective_loss(model, cfg, frames1, frames2, spects)` and
backprop `out["loss"]` (it dispatches to `model(...)` for the SimSiam objective).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange

TAU = 0.03
OBJECTIVES = ("simsiam", "contrastive")


def similarity_matrix(v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Visual maps v (B,D,h,w), audio features a (B,D) -> S (B_img, B_aud) = max_hw cos(v_i, a_j) and
    the positive-pair cosine maps (B,h,w)."""
    if v.shape[1] != a.shape[1]:
        raise ValueError(f"visual ({v.shape[1]}) and audio ({a.shape[1]}) feature sizes differ")
    maps = einsum(F.normalize(v, dim=1), F.normalize(a, dim=1), "i d h w, j d -> i j h w")
    sim = rearrange(maps, "i j h w -> i j (h w)").amax(-1)
    return sim, maps.diagonal(dim1=0, dim2=1).permute(2, 0, 1)


def info_nce(sim: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """Symmetric InfoNCE on a similarity matrix (B_img, B_aud) with positives on the diagonal:
    (CE(image->audio) + CE(audio->image)) / 2."""
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"expected a square similarity matrix, got {tuple(sim.shape)}")
    logits = sim / tau
    target = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def contrastive_loss(model, frames1: torch.Tensor, frames2: torch.Tensor | None, spects: torch.Tensor,
                     tau: float = TAU) -> dict:
    """EZ-VSL loss of an `SSPL` model without PCM. frames2 (a second view) is ignored: one image stream.
    Returns {"loss", "sim" (B,B), "heatmap" (B,h,w) cosine maps of the true pairs}."""
    if getattr(model, "pcm", None) is not None:
        raise ValueError("the contrastive objective compares the visual map with the audio directly: "
                         "build the model with use_pcm=False (the PCM would need a pass per image-audio pair)")
    _, a = model.encode_audio(spects)
    (v,) = model.encode_frames(frames1)
    sim, maps = similarity_matrix(v, a)
    return {"loss": info_nce(sim, tau), "sim": sim.detach(), "heatmap": maps.detach()}


def objective_loss(model, cfg, frames1: torch.Tensor, frames2: torch.Tensor, spects: torch.Tensor) -> dict:
    """The training loss of `cfg.objective`: SSPL's SimSiam (`model(...)`) or the contrastive baseline."""
    objective = getattr(cfg, "objective", "simsiam")
    if objective == "simsiam":
        return model(frames1, frames2, spects)
    if objective == "contrastive":
        return contrastive_loss(model, frames1, frames2, spects)
    raise ValueError(f"unknown objective {objective!r} (choose from {OBJECTIVES})")
