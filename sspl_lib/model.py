"""The streams every method shares: one audio clip and views of its frame -> visual maps, audio features, the
attention and the localization heatmap. A method (sspl_lib.methods) adds its modules and gives the loss.

    audio (B,N,96,64) -> backbone -> e (B,128) -> normalize -> PCM driver
                                  -> MLP  -> a (B,K)      -> attention query          K = cfg.out_dim
    view k (B,3,H,W)  -> visual encoder -> v_k (B,C,h,w) -> PCM(v_k, e) -> m_k (B,K,h,w)
    s_k = cos(m_k, a) per location (B,h,w): the heatmap;  f_k = sum_hw m_k * minmax(s_k)  (B,K)
    SSPL (methods.sspl): p_k, z_k = head(f_k);  loss = D(p1, sg(z2))/2 + D(p2, sg(z1))/2,  D = negative cosine
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import einsum, rearrange

from .config import SSPLConfig
from .encoders import AudioEncoder, build_audio_backbone, build_visual, freeze
from .head import SimSiamHead
from .pca import FixedPCA
from .pcm import PCM


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Maps (B,h,w) normalized per map to [0, 1]: (x - lo) / (hi - lo + 1e-10), the attention's formula."""
    flat = rearrange(x, "b h w -> b (h w)")
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo + 1e-10)).view_as(x)


def object_prior(v: torch.Tensor) -> torch.Tensor:
    """EZ-VSL's object prior of visual maps v (B,C,h,w): the mean |v| over channels (their `NormReducer`), (B,h,w)."""
    return v.abs().mean(dim=1)


def attention(m: torch.Tensor, a: torch.Tensor):
    """Visual map m (B,K,h,w), audio feature a (B,K) -> pooled feature (B,K), cosine map (B,h,w),
    min-max normalized attention (B,h,w)."""
    sim = einsum(F.normalize(m, dim=1), F.normalize(a, dim=1), "b k h w, b k -> b h w")
    att = minmax(sim)
    return einsum(m, att, "b k h w, b h w -> b k"), sim, att


# a frozen encoder under feature_cache runs on passes of exactly this many items (the last one padded): an item's
# output then never depends on its batch (oneDNN picks its kernels by batch size), so the cache files and the
# stream agree bit for bit
CACHE_PASS = 8


def fixed_passes(encoder, x: torch.Tensor, size: int = CACHE_PASS) -> torch.Tensor:
    """encoder(x) in passes of `size` items, the last padded with copies of x[0]."""
    n = len(x)
    x = torch.cat([x, x[:1].expand(-n % size, *x.shape[1:])])
    return torch.cat([encoder(c) for c in x.split(size)])[:n]


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
    """The shared streams; `method` (`methods.base.Method`) adds its modules, gives the loss and the test-time map."""

    def __init__(self, cfg: SSPLConfig, method):
        super().__init__()
        self.cfg, self.method = cfg, method
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
        channels = getattr(self.visual, "dim", cfg.visual_dim)
        # a frozen PCA of the encoder's map (fit before training: experiments.pretrain); its map leads with the prior
        self.visual_pca = FixedPCA(channels, cfg.visual_pca_dim) if cfg.visual_pca_dim else None
        self.map_channels = cfg.visual_pca_dim or channels  # of the map entering the PCM / attention
        # the method's own modules, here: the checkpoints' initialization order (a method may set map_channels)
        method.add_modules(self)
        if cfg.use_pcm:
            self.pcm = PCM(dim=self.map_channels, audio_dim=backbone.dim, out_dim=cfg.out_dim, cycles=cfg.pcm_cycles,
                           a0_init=cfg.pcm_a0_init)
        else:
            if self.map_channels != cfg.out_dim:
                raise ValueError(f"without PCM the visual map ({self.map_channels}) must have out_dim ({cfg.out_dim}) "
                                 "channels")
            self.pcm = None
        self.head = SimSiamHead(in_dim=cfg.out_dim, dim=cfg.proj_dim, hidden=cfg.pred_hidden)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.visual_trainable:
            self.visual.eval()  # frozen encoder: fixed batch-norm statistics (small encoder)
        return self

    # --- streams ---------------------------------------------------------------------------
    def encode_audio(self, spects: torch.Tensor):
        """(B,N,96,64) -> L2-normalized embedding e (B,128) for the PCM, feature a (B,K) for attention."""
        return self.audio_features(self.embed_audio(spects))

    def embed_audio(self, spects: torch.Tensor) -> torch.Tensor:
        """(B,N,96,64) -> the backbone's per-example embeddings (B,N,E) (`feature_cache`: in CACHE_PASS clips)."""
        return fixed_passes(self.audio.embed, spects) if self.cfg.feature_cache else self.audio.embed(spects)

    def audio_features(self, emb: torch.Tensor):
        """`encode_audio` from the backbone's per-example embeddings emb = audio.embed(spects) (B,N,128)."""
        return F.normalize(emb.mean(dim=1), dim=1), self.audio.mlp(emb).mean(dim=1)

    def encode_frames(self, *frames: torch.Tensor) -> list[torch.Tensor]:
        """The visual stream's maps of one or more views. A frozen encoder runs once, without autograd, on all views."""
        if self.visual_trainable:
            return [self.visual(x) for x in frames]
        with torch.no_grad():
            x = torch.cat(frames)
            v = self.stream_map(fixed_passes(self.visual, x) if self.cfg.feature_cache else self.visual(x))
        return list(v.chunk(len(frames)))

    def stream_map(self, v: torch.Tensor) -> torch.Tensor:
        """A frozen encoder's map (B,C,h,w) -> the stream's: with `visual_pca_dim` D, (B,1+D,h,w) = the object
        prior of the encoder's map, then its PCA coefficients; with `feature_cache`, at the cache's float16 values."""
        if self.visual_pca is not None:
            v = torch.cat([object_prior(v)[:, None], self.visual_pca(v)], dim=1)
        return v.to(torch.float16).float() if self.cfg.feature_cache else v

    def feature_map(self, v: torch.Tensor) -> torch.Tensor:
        """The stream's map -> the map compared with the audio (B,map_channels,h,w)."""
        return v if self.visual_pca is None else v[:, 1:]

    def object_prior(self, v: torch.Tensor) -> torch.Tensor:
        """The stream's map -> EZ-VSL's object prior of the encoder's map (B,h,w) (`object_prior`)."""
        return object_prior(v) if self.visual_pca is None else v[:, 0]

    def refine(self, v: torch.Tensor, e: torch.Tensor, *, return_cycles: bool = False, groups: int = 1):
        """PCM; `groups` views stacked along the batch, each with its own batch-norm statistics (as separate calls)."""
        if self.pcm is None:
            return [v] if return_cycles else v
        return self.pcm(v, e, return_cycles=return_cycles, groups=groups)

    # --- the method's loss and map ---------------------------------------------------------
    def forward(self, x1: torch.Tensor, x2: torch.Tensor, audio: torch.Tensor, *, encoded: bool = False) -> dict:
        """Two views and their clips -> the method's {"loss", ...}: frames (B,3,S,S) float, S = cfg.img_size, and
        spects (B,N,96,64); or (`encoded`) the stream's maps (B,C,h,w) and the backbone's embeddings (B,N,E)."""
        if not encoded:
            check_inputs(self.cfg.img_size, audio, frames1=x1, frames2=x2)
            x1, x2 = self.encode_frames(x1, x2) if self.method.views == 2 else (*self.encode_frames(x1), None)
            audio = self.embed_audio(audio)
        return self.method.loss(self, x1, x2, audio)

    def heatmap(self, frames: torch.Tensor, spects: torch.Tensor, method=None) -> torch.Tensor:
        """Heatmaps (B,h,w) of frames and spects, with `method`'s test-time map (default the model's own)."""
        check_inputs(self.cfg.img_size, spects, frames=frames)
        (v,) = self.encode_frames(frames)
        return (method or self.method).heatmap(self, v, self.embed_audio(spects))

    def heatmap_cycles(self, frames: torch.Tensor, spects: torch.Tensor) -> torch.Tensor:
        """Cosine maps after the PCM initialization and after each cycle: (B, cycles+1, h, w) (inputs as `heatmap`)."""
        check_inputs(self.cfg.img_size, spects, frames=frames)
        e, a = self.encode_audio(spects)
        (v,) = self.encode_frames(frames)
        maps = [attention(m, a)[1] for m in self.refine(self.method.visual_map(self, v), e, return_cycles=True)]
        return torch.stack(maps, dim=1)


def load_encoders(model: SSPL, path) -> None:
    """What `experiments.pretrain` fit before training into `model`: the small encoders (pretrained on the labeled
    synthetic set), the visual PCA."""
    from .paths import resolve

    path = resolve(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if model.cfg.visual_encoder == "small":
        if not model.cfg.from_scratch:  # from scratch = a random (trainable) visual encoder; the audio stays pretrained
            model.visual.load_state_dict(state["visual"])
        model.audio.backbone.load_state_dict(state["audio"])
    if model.visual_pca is not None:
        if "visual_pca" not in state:
            raise ValueError(f"{path}: holds no visual PCA, while visual_pca_dim={model.cfg.visual_pca_dim}; prepare "
                             "the encoders again (experiments.pretrain.pretrain) or set visual_pca_dim: 0")
        model.visual_pca.load_state_dict(state["visual_pca"])
