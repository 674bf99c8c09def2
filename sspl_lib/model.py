"""SSPL: one audio clip and two views of its frame -> SimSiam loss and the localization heatmap.

    audio (B,N,96,64) -> backbone -> e (B,128) -> normalize -> PCM driver
                                  -> MLP  -> a (B,D)      -> attention query
    view k (B,3,H,W)  -> visual encoder -> v_k (B,C,h,w) -> PCM(v_k, e) -> m_k (B,D,h,w)
    s_k = cos(m_k, a) per location (B,h,w): the heatmap;  f_k = sum_hw m_k * minmax(s_k)  (B,D)
    p_k, z_k = head(f_k);  loss = D(p1, sg(z2))/2 + D(p2, sg(z1))/2
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import einsum, rearrange

from .baselines import object_prior
from .config import PROJECTED_OBJECTIVES, SSPLConfig
from .encoders import AudioEncoder, build_audio_backbone, build_visual, freeze
from .head import SimSiamHead, simsiam_loss
from .pcm import PCM


def attention(m: torch.Tensor, a: torch.Tensor):
    """Visual map m (B,D,h,w), audio feature a (B,D) -> pooled feature (B,D), cosine map (B,h,w),
    min-max normalized attention (B,h,w)."""
    sim = einsum(F.normalize(m, dim=1), F.normalize(a, dim=1), "b d h w, b d -> b h w")
    flat = rearrange(sim, "b h w -> b (h w)")
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    att = ((flat - lo) / (hi - lo + 1e-10)).view_as(sim)  # (B, h, w)
    return einsum(m, att, "b d h w, b h w -> b d"), sim, att


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalization of maps (B,h,w) to [0, 1] (a constant map becomes 0)."""
    flat = rearrange(x, "b h w -> b (h w)")
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-10)).view_as(x)


def object_guided(av: torch.Tensor, v: torch.Tensor, *, alpha: float = 0.0, gamma: float = 0.0) -> torch.Tensor:
    """The audio-visual map av (B,h,w) combined with the object prior obj = mean |v| over channels of the frozen
    visual map v (B,C,h,w) (EZ-VSL's saliency), both min-max normalized, at test time:
    alpha > 0: alpha * av + (1 - alpha) * obj, EZ-VSL's object-guided localization (OGL; the official code
    combines after upsampling to 224 px, here at the map grid: upsampling is linear);
    gamma > 0: av ** gamma * obj, the object-gated map (a product of experts: the audio chooses the object, the
    prior gives its extent; gamma weighs the audio's say)."""
    obj = minmax(object_prior(v))  # (B,h,w)
    if alpha:
        return alpha * minmax(av) + (1 - alpha) * obj
    return minmax(av) ** gamma * obj


# ----------------------------------------------------------------------------- input checks
MEL_SHAPE = (96, 64)  # frames x mel bands of one VGGish example (sspl_lib.audio.vggish_examples)


def check_frames(x, name: str, img_size: int) -> None:
    """Frames must be float (B,3,img_size,img_size); raises TypeError/ValueError saying what was expected."""
    want = f"(B,3,{img_size},{img_size})"
    if not torch.is_tensor(x):
        raise TypeError(f"{name}: expected a float tensor {want}, got {type(x).__name__}")
    shape = tuple(x.shape)
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype} (raw pixels?); expected float frames {want} normalized with "
                        f"the ImageNet mean/std: sspl_lib.data.transforms.eval_frame(frames, {img_size}) turns uint8 "
                        "(B,H,W,3) frames into them")
    if x.dim() == 3 and 3 in (shape[0], shape[-1]):
        raise ValueError(f"{name} has no batch dimension: got {shape}; expected {want} (use {name}[None])")
    if x.dim() == 4 and shape[1] != 3 and shape[-1] == 3:
        raise ValueError(f"{name} look channels-last (B,H,W,3): got {shape}; expected {want} "
                         f"(use {name}.permute(0, 3, 1, 2))")
    if x.dim() != 4 or shape[1] != 3:
        raise ValueError(f"{name}: expected RGB frames {want}, got shape {shape}")
    if shape[2:] != (img_size, img_size):
        raise ValueError(f"{name}: frames of {shape[2]}x{shape[3]} px, got {shape}; expected {want} "
                         "(cfg.img_size)")


def check_spects(x, name: str = "spects") -> None:
    """Spectrograms must be float (B,N,96,64) with N >= 1; raises TypeError/ValueError saying what was expected."""
    want = "(B,N,96,64) log-mel examples (N >= 1; sspl_lib.audio.vggish_examples gives (N,96,64) per clip)"
    if not torch.is_tensor(x):
        raise TypeError(f"{name}: expected a float tensor {want}, got {type(x).__name__}")
    shape = tuple(x.shape)
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}; expected float {want}")
    if x.dim() == 3 and shape[1:] == MEL_SHAPE:
        raise ValueError(f"{name} has no batch dimension: got {shape}; expected {want} (use {name}[None])")
    if x.dim() == 4 and shape[2:] == MEL_SHAPE[::-1]:
        raise ValueError(f"{name} look transposed (B,N,64,96): got {shape}; expected {want}")
    if x.dim() != 4 or shape[2:] != MEL_SHAPE:
        raise ValueError(f"{name}: got shape {shape}; expected {want}")
    if shape[1] < 1:
        raise ValueError(f"{name} holds N=0 audio examples: got {shape}; expected {want}")


def check_inputs(img_size: int, spects, **frames) -> None:
    """Layout, dtype, size and batch agreement of model inputs (shapes only, plus one isfinite pass each)."""
    for name, x in frames.items():
        check_frames(x, name, img_size)
    check_spects(spects)
    sizes = {name: x.shape[0] for name, x in {**frames, "spects": spects}.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes differ: {', '.join(f'{k} has B={v}' for k, v in sizes.items())}; "
                         "expected one audio clip per frame")
    if torch.compiler.is_compiling():  # data-dependent checks would break the compiled graph
        return
    for name, x in {**frames, "spects": spects}.items():
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} holds NaN or inf values; expected finite inputs")


class SSPL(nn.Module):
    def __init__(self, cfg: SSPLConfig):
        super().__init__()
        self.cfg = cfg
        visual_trainable = cfg.fine_tune or cfg.from_scratch
        self.visual = build_visual(cfg.visual_encoder, dim=cfg.visual_dim, width=cfg.encoder_width,
                                   weights=cfg.vgg16_weights, pretrained=cfg.pretrained and not cfg.from_scratch,
                                   features=cfg.visual_features)
        if not visual_trainable:
            freeze(self.visual)
        self.visual_trainable = visual_trainable
        backbone = build_audio_backbone(cfg.audio_encoder, width=cfg.encoder_width,
                                        weights=cfg.vggish_weights, pretrained=cfg.pretrained)
        self.audio = AudioEncoder(backbone, out_dim=cfg.out_dim, hidden=cfg.audio_hidden)
        vis_dim = getattr(self.visual, "dim", cfg.visual_dim)
        # a trainable 1x1 projection of the frozen visual map, for the objectives that have one (EZ-VSL's
        # `img_proj`, kaiming fan-out init as there); None for SSPL (its computation is unchanged)
        self.visual_proj = None
        if cfg.objective in PROJECTED_OBJECTIVES:
            self.visual_proj = nn.Conv2d(vis_dim, cfg.out_dim, kernel_size=1)
            nn.init.kaiming_normal_(self.visual_proj.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.visual_proj.bias)
            vis_dim = cfg.out_dim
        if cfg.use_pcm:
            self.pcm = PCM(dim=vis_dim, audio_dim=backbone.dim, out_dim=cfg.out_dim, cycles=cfg.pcm_cycles,
                           a0_init=cfg.pcm_a0_init)
        else:
            if vis_dim != cfg.out_dim:
                raise ValueError(f"without PCM the visual map ({vis_dim}) must have out_dim ({cfg.out_dim}) channels")
            self.pcm = None
        self.head = SimSiamHead(in_dim=cfg.out_dim, dim=cfg.proj_dim, hidden=cfg.pred_hidden)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.visual_trainable:
            self.visual.eval()  # frozen encoder: fixed batch-norm statistics (small encoder)
        return self

    # --- streams ---------------------------------------------------------------------------
    def encode_audio(self, spects: torch.Tensor):
        """(B,N,96,64) -> L2-normalized embedding e (B,128) for the PCM, feature a (B,D) for attention."""
        e, a = self.audio(spects)
        return F.normalize(e, dim=1), a

    def encode_frames(self, *frames: torch.Tensor) -> list[torch.Tensor]:
        """Visual maps of one or more views. A frozen encoder runs once, without autograd, on all views."""
        if self.visual_trainable:
            return [self.visual(x) for x in frames]
        with torch.no_grad():
            v = self.visual(torch.cat(frames))  # (V*B, C, h, w)
        return list(v.chunk(len(frames)))

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """The visual map after the objective's 1x1 projection (B,out_dim,h,w); v itself without one."""
        return v if self.visual_proj is None else self.visual_proj(v)

    def refine(self, v: torch.Tensor, e: torch.Tensor, *, return_cycles: bool = False, groups: int = 1):
        """PCM; `groups` views stacked along the batch are refined together, each with its own batch-norm
        statistics (as separate calls would)."""
        if self.pcm is None:
            return [v] if return_cycles else v
        return self.pcm(v, e, return_cycles=return_cycles, groups=groups)

    # --- model -----------------------------------------------------------------------------
    def forward(self, frames1: torch.Tensor, frames2: torch.Tensor, spects: torch.Tensor) -> dict:
        """Two views (B,3,S,S) float, S = cfg.img_size, and their clip's spects (B,N,96,64) -> loss and maps."""
        check_inputs(self.cfg.img_size, spects, frames1=frames1, frames2=frames2)
        e, a = self.encode_audio(spects)
        v1, v2 = self.encode_frames(frames1, frames2)
        # both views through the PCM and the attention at once (per-sample ops, one call per layer); the
        # PCM's batch norms still see one view each, as with one call per view (the official computation)
        m = self.refine(torch.cat([v1, v2]), torch.cat([e, e]), groups=2)
        f, sim, att = attention(m, torch.cat([a, a]))
        (f1, f2), sim1, att1 = f.chunk(2), sim.chunk(2)[0], att.chunk(2)[0]
        p1, p2, z1, z2 = self.head(f1, f2)
        loss = simsiam_loss(p1, p2, z1.detach(), z2.detach())
        return {"loss": loss, "p1": p1, "p2": p2, "z1": z1.detach(), "z2": z2.detach(),
                "heatmap": sim1, "attention": att1}

    def heatmap(self, frames: torch.Tensor, spects: torch.Tensor) -> torch.Tensor:
        """Localization heatmaps (B,h,w): raw cosine similarity (the official `orig_sim_map`) of frames
        (B,3,S,S) float, S = cfg.img_size, and spects (B,N,96,64); with `cfg.ogl_alpha` or `cfg.ogl_gamma` > 0,
        the map combined with the object prior (`object_guided`) instead."""
        check_inputs(self.cfg.img_size, spects, frames=frames)
        (v,) = self.encode_frames(frames)
        return self.heatmap_from(v, self.audio.embed(spects))

    def heatmap_cycles(self, frames: torch.Tensor, spects: torch.Tensor) -> torch.Tensor:
        """Heatmaps after the PCM initialization and after each cycle: (B, cycles+1, h, w) (inputs as `heatmap`)."""
        check_inputs(self.cfg.img_size, spects, frames=frames)
        e, a = self.encode_audio(spects)
        (v,) = self.encode_frames(frames)
        maps = [attention(m, a)[1] for m in self.refine(self.project(v), e, return_cycles=True)]
        return torch.stack(maps, dim=1)

    def heatmap_from(self, v: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """`heatmap` from the encoders' outputs: the visual map v = encode_frames(frames)[0] (B,C,h,w) and the
        backbone's per-example embeddings emb = audio.embed(spects) (B,N,128), e.g. computed once for several
        models with the same frozen encoders (experiments.features.SharedFeatures); `heatmap` computes them here."""
        e, a = F.normalize(emb.mean(dim=1), dim=1), self.audio.mlp(emb).mean(dim=1)  # = encode_audio(spects)
        sim = attention(self.refine(self.project(v), e), a)[1]
        if self.cfg.ogl_alpha or self.cfg.ogl_gamma:
            return object_guided(sim, v, alpha=self.cfg.ogl_alpha, gamma=self.cfg.ogl_gamma)
        return sim


def build_model(cfg: SSPLConfig) -> SSPL:
    """The SSPL model of a config; small encoders load `cfg.encoders_checkpoint` when given."""
    model = SSPL(cfg)
    if cfg.encoders_checkpoint and cfg.visual_encoder == "small":
        from .paths import resolve

        path = resolve(cfg.encoders_checkpoint)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not cfg.from_scratch:  # from scratch = a random (trainable) visual encoder; the audio stays pretrained
            model.visual.load_state_dict(state["visual"])
        model.audio.backbone.load_state_dict(state["audio"])
    return model
