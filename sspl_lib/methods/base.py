"""The interface of a method: its modules on the shared streams (`sspl_lib.model.SSPL`), its loss and its
test-time map. A method is a frozen dataclass of its settings, read from the config by `from_config`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import einsum, rearrange

from ..model import attention


@dataclass(frozen=True)
class Method:
    uses_pcm: ClassVar[bool] = False  # the PCM may refine its visual map (else the config must set use_pcm: false)
    distributed: ClassVar[bool] = False  # its loss trains under DDP (per-process batches)
    views: ClassVar[int] = 2  # the views its loss reads (1: the first; the second is None)

    @classmethod
    def from_config(cls, cfg) -> "Method":
        return cls()

    def add_modules(self, model) -> None:
        """Add its trainable modules to `model` (called by `SSPL.__init__` after the encoders)."""

    def param_groups(self, model, cfg) -> list[dict]:
        return []

    def visual_map(self, model, v: torch.Tensor) -> torch.Tensor:
        """The visual map (B,C,h,w) it compares with the audio: the stream's."""
        return model.feature_map(v)

    def loss(self, model, v1: torch.Tensor, v2: torch.Tensor | None, emb: torch.Tensor) -> dict:
        """The stream's maps of two views (B,C,h,w) and the backbone's embeddings of their clips (B,N,E)
        (`SSPL.forward` encodes them) -> {"loss": scalar, ...}."""
        raise NotImplementedError

    def heatmap(self, model, v: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Test-time map (B,h,w) from the encoders' outputs, v (B,C,h,w) and emb = audio.embed(spects) (B,N,128)."""
        return self.cosine_map(model, v, emb)

    def cosine_map(self, model, v: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The cosine map (B,h,w) of the (refined) visual map and the audio feature."""
        e, a = model.audio_features(emb)
        return attention(model.refine(self.visual_map(model, v), e), a)[1]


@dataclass(frozen=True)
class Projected(Method):
    """With a trainable 1x1 projection `visual_proj` of the frozen map to out_dim (EZ-VSL's `img_proj`, its init)."""

    def add_modules(self, model) -> None:
        model.visual_proj = nn.Conv2d(model.map_channels, model.cfg.out_dim, kernel_size=1)
        nn.init.kaiming_normal_(model.visual_proj.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(model.visual_proj.bias)
        model.map_channels = model.cfg.out_dim

    def param_groups(self, model, cfg) -> list[dict]:
        return [{"params": list(model.visual_proj.parameters()), "lr": cfg.lr_visual}]

    def visual_map(self, model, v: torch.Tensor) -> torch.Tensor:
        return model.visual_proj(model.feature_map(v))


def similarity_matrix(v: torch.Tensor, a: torch.Tensor, region: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """v (B,K,h,w), a (B,K) -> S (B_img, B_aud) = max_hw cos(v_i, a_j) (over `region` when given) and
    the positive pairs' cosine maps (B,h,w)."""
    if v.shape[1] != a.shape[1]:
        raise ValueError(f"visual ({v.shape[1]}) and audio ({a.shape[1]}) feature sizes differ")
    maps = einsum(F.normalize(v, dim=1), F.normalize(a, dim=1), "i k h w, j k -> i j h w")
    if region is not None:  # cosines lie in [-1, 1]: 4 below, a location outside the region never wins the max
        maps = maps - 4.0 * (~region).to(maps.dtype)[:, None]
    sim = rearrange(maps, "i j h w -> i j (h w)").amax(-1)
    return sim, maps.diagonal(dim1=0, dim2=1).permute(2, 0, 1)  # (h, w, B) -> (B, h, w)
