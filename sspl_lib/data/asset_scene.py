"""Composited scenes: cut-outs pasted over a random crop of a background photo (a pure function of `rng`)."""

from __future__ import annotations

import numpy as np

from .assets import LoadedAssets
from .synth_scene import draw_blob, occlude_edge

# Per object box area (fraction of the frame), by number of objects: about 5-40% overall.
AREA_RANGE = {1: (0.08, 0.40), 2: (0.06, 0.24), 3: (0.05, 0.15)}
MAX_OVERLAP = 0.12  # of the smaller box: objects may hide a little of each other


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    if img.shape[1] == w and img.shape[0] == h:
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def background_crop(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray:
    """A random square crop (35-100% of the shorter side) of `photo`, resized to (size, size, 3) float in [0, 1]."""
    h, w = photo.shape[:2]
    side = max(2, int(round(min(h, w) * rng.uniform(0.35, 1.0))))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = _resize(photo[y0:y0 + side, x0:x0 + side], size, size).astype(np.float32) / 255
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def colour_jitter(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """Mild brightness (+-15%), contrast (+-15%), saturation (+-20%) and per-channel (+-4%) changes of float RGB."""
    grey = rgb.mean(-1, keepdims=True)
    out = grey + (rgb - grey) * rng.uniform(0.8, 1.2)  # saturation
    out = out.mean() + (out - out.mean()) * rng.uniform(0.85, 1.15)  # contrast
    return np.clip(out * rng.uniform(0.85, 1.15) * rng.uniform(0.96, 1.04, 3), 0, 1)


def scaled_cutout(rng: np.random.Generator, rgba: np.ndarray, area: float, size: int) -> np.ndarray:
    """A cut-out scaled to cover `area` of the frame, flipped, colour-jittered: RGBA (h, w, 4) in [0, 1]."""
    h0, w0 = rgba.shape[:2]
    s = np.sqrt(area * size * size / (h0 * w0))
    s = min(s, 0.9 * size / max(h0, w0))
    w, h = max(3, int(round(w0 * s))), max(3, int(round(h0 * s)))
    img = _resize(rgba, w, h).astype(np.float32) / 255
    if rng.random() < 0.5:
        img = img[:, ::-1]
    ys, xs = np.nonzero(img[..., 3] > 0.5)
    if len(ys):
        img = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    rgb = colour_jitter(rng, img[..., :3])
    return np.concatenate([rgb, img[..., 3:]], -1)


def _overlap(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def place_boxes(rng: np.random.Generator, size: int, dims: list[tuple[int, int]]) -> list[np.ndarray] | None:
    """Pixel boxes for objects of (h, w) `dims`, overlapping at most MAX_OVERLAP (None: no fit)."""
    out: list[np.ndarray] = []
    for _ in range(200):
        if len(out) == len(dims):
            return out
        h, w = dims[len(out)]
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        box = np.array([x0, y0, x0 + w, y0 + h])
        if all(_overlap(box, o) <= MAX_OVERLAP for o in out):
            out.append(box)
    return out if len(out) == len(dims) else None


def compose_scene(rng: np.random.Generator, size: int, assets: LoadedAssets, labels, *,
                  area_range=AREA_RANGE[1], occlusion_p: float = 0.35) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One cut-out per class of `labels` over a background: frame, normalized boxes (n, 4), masks."""
    img = background_crop(rng, assets.backgrounds[int(rng.integers(len(assets.backgrounds)))], size)
    img = colour_jitter(rng, img)
    objs = []
    for k in labels:
        pool = assets.cutouts[k]
        area = np.exp(rng.uniform(*np.log(area_range)))
        objs.append(scaled_cutout(rng, pool[int(rng.integers(len(pool)))], area, size))
    boxes = place_boxes(rng, size, [o.shape[:2] for o in objs])
    for _ in range(20):  # crowded: shrink every object and retry
        if boxes is not None:
            break
        objs = [o if min(o.shape[:2]) < 6 else _shrunk(o) for o in objs]
        boxes = place_boxes(rng, size, [o.shape[:2] for o in objs])
    if boxes is None:
        raise RuntimeError(f"cannot place {len(objs)} objects in a {size}-px frame (frame too small?)")
    masks = np.zeros((len(labels), size, size), np.float32)
    for i in rng.permutation(len(labels)):
        x0, y0, x1, y1 = boxes[i]
        alpha = objs[i][..., 3:]
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - alpha) + objs[i][..., :3] * alpha
        masks[i, y0:y1, x0:x1] = alpha[..., 0]
    if rng.random() < occlusion_p:  # a blob over one edge of the sounding object
        occlude_edge(img, rng, boxes[0], 0.25)
    img = img * rng.uniform(0.9, 1.1) + rng.normal(0, 0.01, img.shape)
    frame = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return frame, (np.stack(boxes) / size).astype(np.float32), masks


def _shrunk(obj: np.ndarray) -> np.ndarray:
    h, w = obj.shape[:2]
    small = _resize((obj * 255 + 0.5).astype(np.uint8), max(3, int(w * 0.8)), max(3, int(h * 0.8)))
    small = small.astype(np.float32) / 255
    ys, xs = np.nonzero(small[..., 3] > 0.5)
    return small[ys.min():ys.max() + 1, xs.min():xs.max() + 1] if len(ys) else small
