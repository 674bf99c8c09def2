"""The SSPL frame pipeline on uint8 tensors (plain torch), per item and batched.

Train (official `BaseDataset._init_vtransform`): resize to int(1.1 * img_size) bicubic, random crop
img_size, random horizontal flip, ImageNet normalization. Eval: resize img_size bicubic, centre crop.
Frames are square, so the resize is to (s, s).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Parameters of the training augmentation (defaults = the official pipeline)."""

    img_size: int = 224
    resize_ratio: float = 1.1
    hflip_p: float = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def resize_to(self) -> int:
        return int(self.img_size * self.resize_ratio)


def to_chw(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> (..., 3, H, W); a (.., 3, H, W) input is returned as is."""
    return frames if frames.shape[-3] == 3 and frames.shape[-1] != 3 else frames.movedim(-1, -3)


def resize_uint8(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic (antialiased) resize of uint8 (B, 3, H, W) or (3, H, W) to (.., size, size), float in [0, 255]."""
    x = frames.float()
    batched = x.dim() == 4
    x = x if batched else x[None]
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    x = x.clamp_(0, 255).round_()  # like PIL: the resized image is uint8 again
    return x if batched else x[0]


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Float in [0, 255] (.., 3, H, W) -> (x / 255 - mean) / std."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x / 255.0 - m) / s


def denormalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Inverse of `normalize`, to float in [0, 1] (for display)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * s + m).clamp(0, 1)


def resize_shorter(frames: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision `Resize(size)` semantics on uint8 (.., 3, H, W): shorter side -> size, bicubic; float [0, 255]."""
    h, w = frames.shape[-2:]
    if h == w:
        return resize_uint8(frames, size)
    nh, nw = (size, int(size * w / h)) if h < w else (int(size * h / w), size)
    x = frames.float()
    x = F.interpolate(x if x.dim() == 4 else x[None], size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    x = x.clamp_(0, 255).round_()
    return x if frames.dim() == 4 else x[0]


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision `CenterCrop(size)` on (.., H, W) with H, W >= size."""
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def eval_frame(frame: torch.Tensor, img_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 (H, W, 3) or (B, H, W, 3) -> normalized float (.., 3, img_size, img_size): resize + centre crop."""
    x = center_crop(resize_shorter(to_chw(frame), img_size), img_size)
    return normalize(x, mean, std)


def random_views(frame: torch.Tensor, cfg: AugmentConfig, n_views: int = 2,
                 generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """uint8 (H, W, 3) -> `n_views` augmented, normalized float (3, img, img). The resize is shared."""
    big = resize_uint8(to_chw(frame), cfg.resize_to)  # (3, R, R)
    views = batch_random_crop_flip(big[None].expand(n_views, -1, -1, -1), cfg, generator)
    return list(normalize(views, cfg.mean, cfg.std).unbind(0))


def batch_random_crop_flip(x: torch.Tensor, cfg: AugmentConfig,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, R, R) -> (B, C, img, img): an independent random crop and flip per item, by one gather."""
    b, c, r, _ = x.shape
    n = cfg.img_size
    g = dict(generator=generator)
    oy = torch.randint(0, r - n + 1, (b,), **g)
    ox = torch.randint(0, r - n + 1, (b,), **g)
    flip = torch.rand(b, **g) < cfg.hflip_p
    ar = torch.arange(n)
    rows = oy[:, None] + ar  # (B, n)
    cols = torch.where(flip[:, None], ox[:, None] + n - 1 - ar, ox[:, None] + ar)  # (B, n)
    rows, cols = rows.to(x.device), cols.to(x.device)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = x.movedim(1, -1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, n, n, C)
    return rearrange(out, "b h w c -> b c h w")


def batch_train_views(frames: torch.Tensor, cfg: AugmentConfig, n_views: int = 2,
                      generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """A whole uint8 batch (B, H, W, 3) or (B, 3, H, W), on any device -> `n_views` tensors (B, 3, img, img)."""
    big = resize_uint8(to_chw(frames), cfg.resize_to)  # (B, 3, R, R)
    return [normalize(batch_random_crop_flip(big, cfg, generator), cfg.mean, cfg.std) for _ in range(n_views)]
