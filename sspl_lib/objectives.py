"""The training objectives beside SSPL's SimSiam, one config switch each (`cfg.objective`).

All run on the same frozen encoders, data, budget and model selection as SSPL; none uses the PCM
(`use_pcm: false`), so the localization map is the cosine map cos(v[:, y, x], a) of `SSPL.heatmap`, with
v the visual map after the model's 1x1 projection where the objective has one (`SSPL.project`).

- `contrastive` (ablation baseline): EZ-VSL-style max-pooled InfoNCE on the frozen visual map itself (no visual
  projection), the two directions averaged; only the audio MLP trains.
- `ezvsl` (Mo & Morgado, "Localizing Visual Sounds the Easy Way", ECCV 2022; read: stoneMo/EZ-VSL model.py
  `max_xmil_loss`, train.py, test.py): visual map -> 1x1 conv projection -> L2-normalized; audio -> L2-
  normalized; S_ij = max_hw <v_i[:, h, w], a_j> / tau, tau = 0.03; loss = CE(S, diag) + CE(S^T, diag) (the two
  directions summed, as published). Test map: the positive pair's <v_i, a_i> map (the object prior is off).
- object-guided EZ-VSL (this framework's audio-aware method; `ezvsl_prior_region` > 0, with `ogl_gamma`): the same
  loss, but image i's max runs only over `object_region(v_i)`, the locations where the frozen visual map's
  saliency (mean |v| over channels, EZ-VSL's object prior, min-max normalized) reaches the threshold (0.5), so the
  matching location is always an object and the only way to win the InfoNCE is to pick the *right* object. Test
  map: `model.object_guided` with gamma: minmax(AV map) ** gamma * minmax(prior) (the audio picks the object, the
  prior gives its extent). Why (quick profile, issue 12): plain EZ-VSL on frozen encoders either follows the sound
  or locks onto the background depending on the seed (swap follow rate 1.0 for seeds 0 and 1, 0.29 / 0.10 / 0.07
  for seeds 2 / 1234 / 3 on cached features), and even when it follows, its cosine map is wider than the object
  (the 0.5-threshold mask covers the box plus 1.8x its area: multi cIoU@0.5 <= 0.22). With the region, every seed
  tried follows (1.0); the gate gives the extent. Tried and rejected on the same probe: tau 0.1 (follow 0.6-0.7),
  SACL's false-negative removal (no gain), a linear audio head, an identity-initialized or no projection, hard
  negatives from the positive frame's background, SSPL's loss plus this contrastive term (lambda 1 and 0.1: follow
  0.87 but single 0.22-0.24: the contrastive term takes the map over).
- `sacl` (Song et al., "Enhancing Sound Source Localization via False Negative Elimination", TPAMI 2024;
  read: zjsong/SACL main.py `NetWrapper.forward`, `pixel_contrast`, `mask_pos_infonce`, arguments_train.py):
  per view k, the cosine map s_k = cos(v_k, a); its min-max normalized copy thresholded at the value of rank
  floor(HW * ratio_retain) (ascending) gives a binary positive-region mask M_k (no gradient); the visual
  anchor of view k against clip j is max_hw <M_k * norm(v_k), norm(a_j)>. False negatives are removed with
  the frozen audio embedding e (the backbone's, before the MLP): for each anchor only the floor(ratio_neg * B)
  clips least similar to its own clip (cos(e_i, e_j)) stay negatives, the others get the logit -10 (before
  the division by tau). loss = CE(S_1 / tau, diag) + CE(S_2 / tau, diag) (visual->audio only), tau = 0.005,
  ratio_neg = 0.75, ratio_retain = 0.5 (the official defaults). Test map: cos(v_1, a) (`orig_sim_map`).

Deviations from the published code (all forced by the framework's "identical conditions" or its encoders):
- Frozen encoders everywhere. EZ-VSL trains its audio ResNet18 from scratch and its visual ResNet18 with
  lr 1e-4; SACL fine-tunes both (AdamW 2e-4). Here the audio backbone is the frozen pretrained one and the
  audio MLP (`AudioEncoder.mlp`, lr_sound) stands in for EZ-VSL's linear `aud_proj` and SACL's `trans`
  layers; the visual encoder is frozen and a trainable 1x1 conv (`SSPL.visual_proj`, lr_pcm, EZ-VSL's
  `img_proj` with its kaiming fan-out init) stands in for the fine-tuning, for SACL too (it has no projection:
  its ResNet trains). Optimizer: the framework's AdamW groups (EZ-VSL: Adam, one lr, no decay).
- SACL: no Felzenszwalb pseudo segments (the official default `gridSize=-1`); every frame takes the code's
  single-segment branch (positive mask = the binary similarity map). The official `ratio_neg` selection keeps
  the anchor's own clip as the positive (eye) plus the ratio_neg * B least similar clips, as here. SACL's
  paper pairs it with SSPL as an alternative learning scheme; its public code trains the contrastive loss
  alone, and so does `sacl` here (SSPL is `simsiam`).
- Both: the batch's views come from the framework's augmentation (`data.stream.train_views`); EZ-VSL uses the
  first view only.

Observed (quick profile, issue 12): SACL inherits a dead state from the official masking: masked-out locations
count as similarity 0, so when every location of a frame's map is negative (seed 1 after its first epoch) all
logits are 0, the max picks a masked zero, no gradient flows and the loss stays at 2 ln(B_kept) for good.

Hook for `train.fit`: per step `out = objective_loss(model, cfg, frames1, frames2, spects)`, backprop `out["loss"]`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange

from .baselines import object_prior

TAU = 0.03  # the `contrastive` baseline's temperature
FALSE_NEGATIVE_LOGIT = -10.0  # SACL: the similarity given to removed negatives (before / tau)


# ----------------------------------------------------------------------------- shared pieces
def similarity_matrix(v: torch.Tensor, a: torch.Tensor, region: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Visual maps v (B,D,h,w), audio features a (B,D) -> S (B_img, B_aud) = max_hw cos(v_i, a_j) and
    the positive-pair cosine maps (B,h,w). `region` (B,h,w) bool: the max of image i runs over its True
    locations only (each image needs one)."""
    if v.shape[1] != a.shape[1]:
        raise ValueError(f"visual ({v.shape[1]}) and audio ({a.shape[1]}) feature sizes differ")
    maps = einsum(F.normalize(v, dim=1), F.normalize(a, dim=1), "i d h w, j d -> i j h w")
    if region is not None:  # cosines lie in [-1, 1]: 4 below, a location outside the region never wins the max
        maps = maps - 4.0 * (~region).to(maps.dtype)[:, None]
    sim = rearrange(maps, "i j h w -> i j (h w)").amax(-1)
    return sim, maps.diagonal(dim1=0, dim2=1).permute(2, 0, 1)


def _square(sim: torch.Tensor) -> None:
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"expected a square similarity matrix (B_img, B_aud), got {tuple(sim.shape)}")


def info_nce(sim: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """Symmetric InfoNCE on a similarity matrix (B_img, B_aud) with positives on the diagonal:
    (CE(image->audio) + CE(audio->image)) / 2."""
    _square(sim)
    logits = sim / tau
    target = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def _encode(model, frames: torch.Tensor, spects: torch.Tensor, objective: str):
    if getattr(model, "pcm", None) is not None:
        raise ValueError(f"objective {objective!r} compares the visual map with every clip of the batch: build the "
                         "model with use_pcm=False (the PCM would need a pass per image-audio pair)")
    e, a = model.encode_audio(spects)
    (v,) = model.encode_frames(frames)
    return e, model.project(v), a


# ----------------------------------------------------------------------------- contrastive (ablation baseline)
def contrastive_loss(model, frames1: torch.Tensor, frames2: torch.Tensor | None, spects: torch.Tensor,
                     tau: float = TAU) -> dict:
    """EZ-VSL-style loss of an `SSPL` model without PCM and without visual projection. frames2 is ignored.
    Returns {"loss", "sim" (B,B), "heatmap" (B,h,w) cosine maps of the true pairs}."""
    _, v, a = _encode(model, frames1, spects, "contrastive")
    sim, maps = similarity_matrix(v, a)
    return {"loss": info_nce(sim, tau), "sim": sim.detach(), "heatmap": maps.detach()}


# ----------------------------------------------------------------------------- EZ-VSL
def ezvsl_mil_loss(v: torch.Tensor, a: torch.Tensor, tau: float, region: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """EZ-VSL's max-pooled multiple-instance InfoNCE: v (B,D,h,w), a (B,D) (both normalized here) ->
    loss CE(S, diag) + CE(S^T, diag) with S_ij = max_hw <v_i, a_j> / tau (over `region` when given), and S."""
    sim, _ = similarity_matrix(v, a, region)
    logits = sim / tau
    target = torch.arange(sim.shape[0], device=sim.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target), sim


def object_region(v: torch.Tensor, threshold: float) -> torch.Tensor:
    """Frozen visual maps v (B,C,h,w) -> (B,h,w) bool: where the object prior (mean |v| over channels, EZ-VSL's
    saliency), min-max normalized per map, reaches `threshold` (the prior's maximum always does)."""
    obj = object_prior(v.detach())  # (B,h,w)
    flat = rearrange(obj, "b h w -> b (h w)")
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - lo) >= threshold * (hi - lo)).view_as(obj)


def ezvsl_loss(model, frames1: torch.Tensor, frames2: torch.Tensor | None, spects: torch.Tensor,
               tau: float = 0.03, prior_region: float = 0.0) -> dict:
    """EZ-VSL on an `SSPL` model built for it (no PCM, visual projection): one view (frames1). prior_region > 0:
    the object-guided MIL (the max over the locations of `object_region(v, prior_region)` only)."""
    if getattr(model, "pcm", None) is not None:
        raise ValueError("objective 'ezvsl' compares the visual map with every clip of the batch: build the model "
                         "with use_pcm=False (the PCM would need a pass per image-audio pair)")
    _, a = model.encode_audio(spects)
    (v,) = model.encode_frames(frames1)
    region = object_region(v, prior_region) if prior_region > 0 else None
    loss, sim = ezvsl_mil_loss(model.project(v), a, tau, region)
    return {"loss": loss, "sim": sim.detach()}


# ----------------------------------------------------------------------------- SACL
def true_negative_mask(e: torch.Tensor, ratio_neg: float) -> torch.Tensor:
    """Frozen audio embeddings e (B,E) -> (B,B) bool: True where clip j is kept in anchor i's row (its own clip
    and the floor(ratio_neg * B) clips least similar to clip i); False = a removed false negative."""
    en = F.normalize(e, dim=1)
    order = torch.argsort(en @ en.t(), dim=1)  # ascending similarity
    keep = torch.eye(len(e), dtype=torch.bool, device=e.device)
    k = int(ratio_neg * len(e))
    return keep.scatter(1, order[:, :k], True)


def positive_region(sim_map: torch.Tensor, ratio_retain: float) -> torch.Tensor:
    """SACL's binary similarity map: (B,h,w) -> (B,h,w) float 0/1, 1 where the min-max normalized map exceeds
    its value of ascending rank floor(h*w*ratio_retain). No gradient."""
    flat = rearrange(sim_map.detach(), "b h w -> b (h w)")
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    norm = (flat - lo) / (hi - lo + 1e-10)
    k = min(int(flat.shape[1] * ratio_retain), flat.shape[1] - 1)
    thr = norm.sort(dim=1).values[:, k:k + 1]
    return (norm > thr).to(sim_map.dtype).view_as(sim_map)


def sacl_logits(v: torch.Tensor, mask: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Masked visual anchors vs every clip: v (B,D,h,w), mask (B,h,w), a (B,D) -> (B_img, B_aud)
    max_hw <mask_i * norm(v_i), norm(a_j)> (masked-out locations count as 0)."""
    vm = F.normalize(v, dim=1) * mask[:, None]
    return rearrange(einsum(vm, F.normalize(a, dim=1), "i d h w, j d -> i j h w"), "i j h w -> i j (h w)").amax(-1)


def sacl_contrast(views: list[torch.Tensor], a: torch.Tensor, e: torch.Tensor, *, tau: float, ratio_neg: float,
                  ratio_retain: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SACL's loss over the views (each (B,D,h,w)): sum over views of CE(S_k / tau, diag), S_k = sacl_logits
    with the view's positive region and the false negatives set to FALSE_NEGATIVE_LOGIT. Returns the loss and
    the keep mask (B,B)."""
    keep = true_negative_mask(e, ratio_neg)
    target = torch.arange(len(a), device=a.device)
    loss = 0.0
    for v in views:  # two views at most: one term each
        s_map = einsum(F.normalize(v, dim=1), F.normalize(a, dim=1), "b d h w, b d -> b h w")
        logits = sacl_logits(v, positive_region(s_map, ratio_retain), a).masked_fill(~keep, FALSE_NEGATIVE_LOGIT)
        loss = loss + F.cross_entropy(logits / tau, target)
    return loss, keep


def sacl_loss(model, frames1: torch.Tensor, frames2: torch.Tensor, spects: torch.Tensor, *, tau: float = 0.005,
              ratio_neg: float = 0.75, ratio_retain: float = 0.5) -> dict:
    """SACL on an `SSPL` model built for it (no PCM, visual projection): two views of each frame."""
    if getattr(model, "pcm", None) is not None:
        raise ValueError("objective 'sacl' compares the visual map with every clip of the batch: build the model "
                         "with use_pcm=False")
    e, a = model.encode_audio(spects)
    views = [model.project(v) for v in model.encode_frames(frames1, frames2)]
    loss, keep = sacl_contrast(views, a, e, tau=tau, ratio_neg=ratio_neg, ratio_retain=ratio_retain)
    return {"loss": loss, "keep": keep}


# ----------------------------------------------------------------------------- dispatch
def objective_loss(model, cfg, frames1: torch.Tensor, frames2: torch.Tensor, spects: torch.Tensor) -> dict:
    """The training loss of `cfg.objective` (names in `config.OBJECTIVES`)."""
    objective = cfg.objective
    if objective == "simsiam":
        return model(frames1, frames2, spects)
    if objective == "contrastive":
        return contrastive_loss(model, frames1, frames2, spects)
    if objective == "ezvsl":
        return ezvsl_loss(model, frames1, frames2, spects, tau=cfg.ezvsl_tau, prior_region=cfg.ezvsl_prior_region)
    if objective == "sacl":
        return sacl_loss(model, frames1, frames2, spects, tau=cfg.sacl_tau, ratio_neg=cfg.sacl_ratio_neg,
                         ratio_retain=cfg.sacl_ratio_retain)
    raise ValueError(f"unknown objective {objective!r} (choose from simsiam, contrastive, ezvsl, sacl)")
