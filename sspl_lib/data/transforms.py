"""The SSPL frame pipeline on uint8 tensors: train = resize 1.1x bicubic, random crop, flip, ImageNet
normalization (official `_init_vtransform`); eval = resize, centre crop. Training's views of a batch are drawn
from a generator keyed by (seed, epoch, step): of frames (`train_views`), or of cached maps (`map_views`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import repeat

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
    return frames if frames.shape[-3] == 3 and frames.shape[-1] != 3 else frames.movedim(-1, -3)


def resize_uint8(frames: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bicubic antialiased resize of uint8 (B, 3, H, W) or (3, H, W), float in [0, 255]."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    x = frames.contiguous().float()  # NCHW-contiguous input: the resize kernel is ~25 % faster than on an HWC view
    batched = x.dim() == 4
    x = x if batched else x[None]
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    x = x.clamp_(0, 255).round_()  # like PIL: the resized image is uint8 again
    return x if batched else x[0]


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Float in [0, 255] (.., 3, H, W) -> (x / 255 - mean) / std (a new tensor; in place after the first op)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x / 255.0).sub_(m).div_(s)


def denormalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * s + m).clamp(0, 1)


def resize_shorter(frames: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision `Resize(size)` semantics on uint8 (.., 3, H, W): shorter side -> size, bicubic; float [0, 255]."""
    h, w = frames.shape[-2:]
    return resize_uint8(frames, (size, int(size * w / h)) if h < w else (int(size * h / w), size))


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
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
    oy, ox, flip = crop_flip_params(n_views, big.shape[-1], cfg, generator)
    n = cfg.img_size
    crops = [big[:, y:y + n, x:x + n] for y, x in zip(oy.tolist(), ox.tolist())]  # slices: the same values
    views = torch.stack([c.flip(-1) if f else c for c, f in zip(crops, flip.tolist())])  # as the batched gather
    return list(normalize(views, cfg.mean, cfg.std).unbind(0))


def crop_flip_params(b: int, r: int, cfg: AugmentConfig, generator: torch.Generator | None = None):
    """Per item: crop offsets oy, ox in [0, r - img_size] and a flip flag (B,), drawn in this order."""
    g = dict(generator=generator)
    oy = torch.randint(0, r - cfg.img_size + 1, (b,), **g)
    ox = torch.randint(0, r - cfg.img_size + 1, (b,), **g)
    return oy, ox, torch.rand(b, **g) < cfg.hflip_p


def crop_flip(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor, n: int) -> torch.Tensor:
    """Per-item crops (B, C, n, n) of (B, C, R, R) at offsets, flipped where asked, by two gathers."""
    b, c, r, _ = x.shape
    ar = torch.arange(n, device=x.device)
    oy, ox, flip = oy.to(x.device), ox.to(x.device), flip.to(x.device)
    rows = repeat(oy[:, None] + ar, "b n -> b c n r", c=c, r=r)
    cols = torch.where(flip[:, None], ox[:, None] + n - 1 - ar, ox[:, None] + ar)  # (B, n)
    return x.gather(2, rows).gather(3, repeat(cols, "b n -> b c h n", c=c, h=n))


def seeded_generator(*key: int) -> torch.Generator:
    """The generator of one draw of views (and of a batch order), keyed by integers, e.g. (seed, epoch, step)."""
    return torch.Generator().manual_seed(hash(tuple(int(k) for k in key)) & 0x7FFF_FFFF_FFFF_FFFF)


def train_views(frames: torch.Tensor, aug: AugmentConfig, g: torch.Generator, *, views: int, batch: int,
                offset: int, device) -> list[torch.Tensor]:
    """The official train views of a rank's slice of a global batch (crops drawn for the whole batch)."""
    big = resize_uint8(to_chw(frames.to(device, non_blocking=True)), aug.resize_to)  # (b, 3, R, R)
    b = big.shape[0]
    out = []
    for _ in range(views):
        oy, ox, flip = (p[offset:offset + b] for p in crop_flip_params(batch, aug.resize_to, aug, g))
        out.append(normalize(crop_flip(big, oy, ox, flip, aug.img_size), aug.mean, aug.std))
    return out


def map_views(maps: torch.Tensor, grid: int, g: torch.Generator, *, views: int, batch: int,
              offset: int) -> list[torch.Tensor]:
    """`train_views` in feature space: random grid x grid crops, flipped or not, of a rank's slice of the cached
    train maps (b,C,R,R), drawn for the whole global batch from `g`, each view its own."""
    aug = AugmentConfig(img_size=grid)
    b, r = maps.shape[0], maps.shape[-1]
    if r < grid:
        raise ValueError(f"cached train maps of {r}x{r} are smaller than the grid {grid}x{grid}: raise cache_scale")
    out = []
    for _ in range(views):
        oy, ox, flip = (p[offset:offset + b] for p in crop_flip_params(batch, r, aug, g))
        out.append(crop_flip(maps, oy, ox, flip, grid))
    return out
