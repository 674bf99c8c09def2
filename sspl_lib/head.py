"""SimSiam head (Chen & He, 2021) and the symmetric negative-cosine loss used by SSPL."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _fc_bn_relu(din: int, dout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(din, dout, bias=False), nn.BatchNorm1d(dout), nn.ReLU(inplace=True))


class Projector(nn.Module):
    """3 fc layers, BN on each (the last without affine), no ReLU on the output: z."""

    def __init__(self, *, in_dim: int, dim: int = 2048):
        super().__init__()
        self.layer1 = _fc_bn_relu(in_dim, dim)
        self.layer2 = _fc_bn_relu(dim, dim)
        self.layer3 = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(x)))


class Predictor(nn.Module):
    """Bottleneck MLP dim -> hidden -> dim: p."""

    def __init__(self, *, dim: int = 2048, hidden: int = 512):
        super().__init__()
        self.layer1 = _fc_bn_relu(dim, hidden)
        self.layer2 = nn.Linear(hidden, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.layer1(z))


class SimSiamHead(nn.Module):
    def __init__(self, *, in_dim: int = 512, dim: int = 2048, hidden: int = 512):
        super().__init__()
        self.projector = Projector(in_dim=in_dim, dim=dim)
        self.predictor = Predictor(dim=dim, hidden=hidden)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor):
        """Pooled features of the two views (B, in_dim) -> p1, p2, z1, z2 (z not yet detached)."""
        z1, z2 = self.projector(f1), self.projector(f2)
        return self.predictor(z1), self.predictor(z2), z1, z2


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return -F.cosine_similarity(p, z, dim=1).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Symmetric loss, stop-gradient on the targets: D(p1, sg(z2))/2 + D(p2, sg(z1))/2."""
    return 0.5 * (negative_cosine(p1, z2.detach()) + negative_cosine(p2, z1.detach()))
