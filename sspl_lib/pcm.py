"""Predictive coding module (PCM): audio-driven top-down prediction / bottom-up error recursion.

Three levels over the visual map: level 2 is the encoder's map (14x14 for VGG16 at 224 px), levels 1
and 0 are 2x and 4x max-pooled (7x7, 3x3). Top-down, each level predicts the one below it and level 0
predicts the audio embedding; bottom-up, prediction errors (audio first) update the representations
with learnable per-channel rates: a0 (error) and b0 (how much of the prediction to keep). The
initialization counts as one step, then `cycles` more recursions; the output is a 1x1 transposed conv
of the top level. Same computation and parameters as the official module at 14x14x512; other grid
sizes work by resizing where the fixed strides would not land on the next level's size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import reduce, repeat

LEVELS = 3


def grouped_bn(bn: nn.Module, x: torch.Tensor, groups: int) -> torch.Tensor:
    """Batch norm with each of `groups` stacked views' own batch statistics (training); eval: one call."""
    if groups == 1 or not (bn.training or bn.running_mean is None):
        return bn(x)
    return torch.cat([bn(c) for c in x.chunk(groups)])


class PCM(nn.Module):
    def __init__(self, *, dim: int = 512, audio_dim: int = 128, out_dim: int = 512, cycles: int = 4,
                 a0_init: float = 1.0, b0_init: float = 0.5):
        super().__init__()
        if cycles < 0:
            raise ValueError(f"cycles must be >= 0, got {cycles}")
        self.cycles = cycles
        # pred[0]: level 0 -> audio embedding; pred[l]: level l -> level l-1 (conv, then 2x max-pool)
        self.pred = nn.ModuleList(
            [nn.Conv2d(dim, audio_dim, 1)] + [nn.Conv2d(dim, dim, 3, 1, 1, bias=False) for _ in range(1, LEVELS)]
        )
        # error[0]: audio error -> level 0; error[1]: 3x3 -> 7x7 (stride 2); error[2]: upsample, conv;
        # error[3]: output projection of the top level
        self.error = nn.ModuleList([
            nn.ConvTranspose2d(audio_dim, dim, 1, bias=False),
            nn.ConvTranspose2d(dim, dim, 3, 2, 0, bias=False),
            nn.ConvTranspose2d(dim, dim, 3, 1, 1, bias=False),
            nn.ConvTranspose2d(dim, out_dim, 1),
        ])
        # rates: a0 scales the bottom-up errors, b0 mixes in the top-down prediction (official init 1.0 and 0.5)
        self.a0 = nn.ParameterList([nn.Parameter(torch.full((1, dim, 1, 1), a0_init)) for _ in range(LEVELS)])
        self.b0 = nn.ParameterList([nn.Parameter(torch.full((1, dim, 1, 1), b0_init)) for _ in range(LEVELS)])
        self.bn_pred_init = nn.ModuleList([nn.BatchNorm2d(dim) for _ in range(LEVELS - 1)])
        self.bn_error_init = nn.ModuleList([nn.BatchNorm2d(dim) for _ in range(LEVELS)])
        self.bn_pred_step = nn.ModuleList([nn.BatchNorm2d(dim) for _ in range((LEVELS - 1) * cycles)])
        self.bn_error_step = nn.ModuleList([nn.BatchNorm2d(dim) for _ in range(LEVELS * cycles)])

    def rate_parameters(self) -> list[nn.Parameter]:
        """The a0/b0 rates (the official optimizer gives them no weight decay)."""
        return list(self.a0) + list(self.b0)

    def _predict_down(self, level: int, r: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.pred[level](r), 2, 2)

    def _predict_audio(self, r0: torch.Tensor) -> torch.Tensor:
        return reduce(F.gelu(self.pred[0](r0)), "b c h w -> b c", "mean")

    def _error_up(self, level: int, err: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """Carry the error of level-1 up to `level` (spatial `size`)."""
        if level == 1:
            out = self.error[1](err)  # 3x3 -> 7x7
            if out.shape[-2:] != size:
                out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
            return out
        up = F.interpolate(err, size=size, mode="bilinear", align_corners=True)  # 7x7 -> 14x14
        return self.error[level](up)

    def _bottom_up(self, base: list[torch.Tensor], r_pred: list[torch.Tensor], audio: torch.Tensor,
                   bns: list[nn.Module], groups: int) -> list[torch.Tensor]:
        """Errors flow up: audio error into level 0, then each level's prediction error into the next."""
        err = audio - self._predict_audio(base[0])  # (B, audio_dim)
        err = repeat(err, "b c -> b c h w", h=base[0].shape[-2], w=base[0].shape[-1])
        r = [F.gelu(grouped_bn(bns[0], base[0] + F.relu(self.a0[0]) * self.error[0](err), groups))]
        for l in range(1, LEVELS):
            up = self._error_up(l, r[l - 1] - r_pred[l - 1], base[l].shape[-2:])
            r.append(F.gelu(grouped_bn(bns[l], base[l] + F.relu(self.a0[l]) * up, groups)))
        return r

    def forward(self, v: torch.Tensor, audio: torch.Tensor, *, return_cycles: bool = False, groups: int = 1):
        """v (B, dim, H, W), audio (B, audio_dim) L2-normalized -> (B, out_dim, H, W) (`return_cycles`: the maps
        after the initialization and each cycle); `groups` views stacked along B keep their own batch-norm statistics."""
        if v.shape[0] % groups:
            raise ValueError(f"batch {v.shape[0]} is not divisible into {groups} groups")
        # initialization, top-down: level 2 = v, then levels 1, 0
        r_pred = [v]
        for l in range(LEVELS - 1, 0, -1):
            r_pred.insert(0, F.gelu(grouped_bn(self.bn_pred_init[l - 1], self._predict_down(l, r_pred[0]), groups)))
        r = self._bottom_up(r_pred, r_pred, audio, list(self.bn_error_init), groups)
        outs = [self.error[3](r[-1])] if return_cycles else []

        for t in range(self.cycles):
            # top-down: mix each level with its prediction (rates b0), from the input map down
            b = F.relu(self.b0[-1])
            r[-1] = F.gelu((1 - b) * r[-1] + b * v)
            for l in range(LEVELS - 1, 0, -1):
                r_pred[l - 1] = self._predict_down(l, r[l])
                b = F.relu(self.b0[l - 1])
                bn = self.bn_pred_step[(LEVELS - 1) * t + l - 1]
                r[l - 1] = F.gelu(grouped_bn(bn, (1 - b) * r[l - 1] + b * r_pred[l - 1], groups))
            bns = list(self.bn_error_step[LEVELS * t : LEVELS * (t + 1)])
            r = self._bottom_up(r, r_pred, audio, bns, groups)
            if return_cycles:
                outs.append(self.error[3](r[-1]))

        return outs if return_cycles else self.error[3](r[-1])
