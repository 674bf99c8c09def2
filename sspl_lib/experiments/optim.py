"""The optimiser of a run: the official AdamW parameter groups and the learning-rate schedule."""

from __future__ import annotations

import numpy as np
import torch

from ..config import SSPLConfig
from ..model import SSPL


def make_optimizer(model: SSPL, cfg: SSPLConfig) -> torch.optim.AdamW:
    """The official AdamW groups, then the method's own and a trainable visual encoder's."""
    groups = [{"params": list(model.audio.mlp.parameters()), "lr": cfg.lr_sound}]
    if model.pcm is not None:
        rates = {id(p) for p in model.pcm.rate_parameters()}
        groups.append({"params": [p for p in model.pcm.parameters() if id(p) not in rates], "lr": cfg.lr_visual})
        groups.append({"params": model.pcm.rate_parameters(), "lr": cfg.lr_visual, "weight_decay": 0.0})
    groups.append({"params": list(model.head.parameters()), "lr": cfg.lr_head})
    groups += model.method.param_groups(model, cfg)
    if model.visual_trainable:
        groups.append({"params": list(model.visual.parameters()), "lr": cfg.lr_visual})
    return torch.optim.AdamW(groups, betas=(cfg.beta1, 0.999), weight_decay=cfg.weight_decay)


def make_scheduler(opt, cfg: SSPLConfig, steps_per_epoch: int):
    """Linear warmup over `warmup_epochs`, then constant (official) or cosine to 0."""
    warm, total = int(cfg.warmup_epochs * steps_per_epoch), max(1, cfg.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.lr_schedule == "cosine":  # a Python float: a numpy scalar in the state breaks weights_only loading
            return float(0.5 * (1 + np.cos(np.pi * min(1.0, (step - warm) / max(1, total - warm)))))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
