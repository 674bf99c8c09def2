"""Drawn scenes: textured coloured shapes over cluttered backgrounds, a pure function of the `rng` given."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond", "star", "bar",
          "hexagon", "crescent", "lshape", "semidisc")
# Saturated, well separated hues; backgrounds and distractors use saturation <= 0.3.
COLOURS = {
    "red": (0.92, 0.12, 0.10), "blue": (0.10, 0.30, 0.95), "yellow": (0.97, 0.86, 0.08),
    "green": (0.08, 0.72, 0.18), "magenta": (0.86, 0.12, 0.82), "cyan": (0.08, 0.86, 0.92),
    "orange": (1.00, 0.50, 0.04), "purple": (0.50, 0.18, 0.92), "white": (0.97, 0.97, 0.97),
    "pink": (1.00, 0.56, 0.72), "lime": (0.62, 0.96, 0.10), "navy": (0.05, 0.12, 0.50),
}
TEXTURES = ("solid", "stripes", "dots")
# Visible extent of each shape in its unit frame (half-width, half-height) when rendered at scale 1.
_EXTENT = {s: (1.0, 1.0) for s in SHAPES} | {"bar": (1.0, 0.4), "semidisc": (1.0, 0.5), "crescent": (0.8, 1.0)}
_ASPECT = {"bar": 2.5, "semidisc": 1.6}  # width / height of the box, before the random aspect jitter


@dataclass(frozen=True, kw_only=True)
class VisualClass:
    shape: str
    colour: str
    texture: str

    @property
    def rgb(self) -> np.ndarray:
        return np.asarray(COLOURS[self.colour], np.float32)


def visual_classes(n_classes: int) -> list[VisualClass]:
    """Class k: shape k, colour k (mod 12), texture k mod 3; distinct for k < 12 (combinations beyond)."""
    names = list(COLOURS)
    return [VisualClass(shape=SHAPES[k % 12], colour=names[(k + k // 12 * 5) % 12], texture=TEXTURES[k % 3])
            for k in range(n_classes)]


def shape_field(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance in unit-frame coordinates (inside < 0) of `shape` at (u, v)."""
    au, av = np.abs(u), np.abs(v)
    r = np.hypot(u, v)
    if shape == "disc":
        return r - 1
    if shape == "square":
        return np.maximum(au, av) - 0.95
    if shape == "triangle":  # apex up at (0,-1), base at v = 1
        return np.maximum(v - 1, (2 * au - v - 1) / np.sqrt(5))
    if shape == "cross":
        return np.minimum(np.maximum(au - 0.34, av - 1), np.maximum(au - 1, av - 0.34))
    if shape == "ring":
        return np.abs(r - 0.7) - 0.3
    if shape == "diamond":
        return (au + av - 1) / np.sqrt(2)
    if shape == "star":
        th = np.arctan2(u, -v)  # 0 at the top
        rad = 0.45 + 0.55 * (0.5 + 0.5 * np.cos(5 * th)) ** 1.5
        return (r - rad) * 0.7
    if shape == "bar":
        return np.maximum(au - 1, av - 0.4)
    if shape == "hexagon":
        ang = np.arange(6) * np.pi / 3
        return np.max(u[..., None] * np.cos(ang) + v[..., None] * np.sin(ang), axis=-1) - 0.9
    if shape == "crescent":
        return np.maximum(r - 1, 0.8 - np.hypot(u - 0.55, v))
    if shape == "lshape":
        return np.minimum(np.maximum(np.abs(u + 0.62) - 0.38, av - 1), np.maximum(au - 1, np.abs(v - 0.62) - 0.38))
    if shape == "semidisc":
        return np.maximum(np.hypot(u, v - 0.5) - 1, v - 0.5)  # flat side down
    raise ValueError(f"unknown shape {shape!r}")


def texture_factor(texture: str, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Brightness multiplier in [0.5, 1] painting the class texture in the object's frame."""
    if texture == "stripes":
        return np.where(np.sin((u + v) * 3.2 * np.pi + phase) > 0, 1.0, 0.5)
    if texture == "dots":
        d = np.hypot((u * 2.5 + phase) % 1 - 0.5, (v * 2.5) % 1 - 0.5)
        return np.where(d < 0.24, 0.45, 1.0)
    return np.ones_like(u)


def smooth_noise(rng: np.random.Generator, size: int, grid: int, channels: int) -> np.ndarray:
    lat = rng.random((grid, grid, channels))
    pos = np.linspace(0, grid - 1, size)
    i0 = np.minimum(pos.astype(int), grid - 2)
    w = pos - i0
    m = np.zeros((size, grid))  # (size, grid) interpolation matrix
    m[np.arange(size), i0] = 1 - w
    m[np.arange(size), i0 + 1] = w
    return np.moveaxis(m @ np.moveaxis(lat, -1, 0) @ m.T, 0, -1)  # (c,s,g)@(g,t) -> (s,t,c)


def _dull_colour(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(0.2, 0.75)
    hue = rng.random(3)
    return (grey + rng.uniform(0.05, 0.22) * (hue - hue.mean())).clip(0, 1)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cluttered background (size, size, 3) float in [0, 1]: dull base, smooth noise, a gradient."""
    base = _dull_colour(rng)
    img = base + 0.22 * (smooth_noise(rng, size, int(rng.integers(3, 7)), 3) - 0.5)
    img = img + 0.10 * (smooth_noise(rng, size, int(rng.integers(10, 20)), 1) - 0.5)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = img + rng.uniform(0.05, 0.25) * ((xx * np.cos(ang) + yy * np.sin(ang)) - 0.5)[..., None]
    return img


def paint(img: np.ndarray, field: np.ndarray, colour: np.ndarray, win, scale_px: float,
          shade: np.ndarray | float = 1.0) -> np.ndarray:
    """Alpha-blend `colour * shade` into `img[win]` where `field` < 0 (soft 1-px edge); returns the alpha."""
    alpha = np.clip(0.5 - field * scale_px, 0, 1)[..., None]
    shade = shade[..., None] if isinstance(shade, np.ndarray) else shade
    img[win] = img[win] * (1 - alpha) + alpha * (colour * shade)
    return alpha[..., 0]


def _frame(size: int, cx, cy, hw, hh, rot):
    reach = 1.05 * np.hypot(hw, hh)
    y0, y1 = int(max(0, cy - reach)), int(min(size, cy + reach + 1))
    x0, x1 = int(max(0, cx - reach)), int(min(size, cx + reach + 1))
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    dx, dy = xx - cx, yy - cy
    c, s = np.cos(rot), np.sin(rot)
    u = (dx * c + dy * s) / hw
    v = (-dx * s + dy * c) / hh
    return (slice(y0, y1), slice(x0, x1)), u, v


def draw_object(img: np.ndarray, rng: np.random.Generator, cls: VisualClass, place) -> np.ndarray:
    """Draw `cls` at `place` = (cx, cy, half_w, half_h, rot) in pixels; returns its pixel box [x0,y0,x1,y1)."""
    size = img.shape[0]
    cx, cy, hw, hh, rot = place
    ex, ey = _EXTENT[cls.shape]
    win, u, v = _frame(size, cx, cy, hw / ex, hh / ey, rot)
    field = shape_field(cls.shape, u, v)
    colour = cls.rgb * rng.uniform(0.85, 1.08) + rng.normal(0, 0.03, 3)
    shade = texture_factor(cls.texture, u, v, rng.uniform(0, 2 * np.pi))
    shade = shade * (1 - 0.25 * np.clip(u + v, -1, 1) * rng.uniform(0, 1))  # mild shading across the object
    alpha = paint(img, field, np.clip(colour, 0, 1), win, min(hw / ex, hh / ey), shade)
    ys, xs = np.nonzero(alpha > 0.5)
    if len(ys) == 0:
        return np.array([cx, cy, cx + 1, cy + 1], np.float64)
    return np.array([xs.min() + win[1].start, ys.min() + win[0].start,
                     xs.max() + 1 + win[1].start, ys.max() + 1 + win[0].start], np.float64)


def draw_blob(img: np.ndarray, rng: np.random.Generator, cx, cy, radius) -> None:
    """An irregular dull-coloured blob (distractor / occluder): a wobbly outline, no class colour or shape."""
    size = img.shape[0]
    win, u, v = _frame(size, cx, cy, radius, radius * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
    th = np.arctan2(v, u)
    k = np.arange(2, 6)
    wob = (rng.uniform(0.05, 0.2, 4) * np.cos(k * th[..., None] + rng.uniform(0, 2 * np.pi, 4))).sum(-1)
    field = np.hypot(u, v) - (0.8 + wob)
    tex = 1 + 0.15 * (np.sin(u * rng.uniform(2, 9)) * np.cos(v * rng.uniform(2, 9)))
    paint(img, field, _dull_colour(rng), win, radius, tex)


def place_objects(rng: np.random.Generator, size: int, aspects, area_range) -> list[tuple]:
    """Placements (cx, cy, half_w, half_h, rot), one per base aspect, inside the frame, overlapping little."""
    out, n = [], len(aspects)
    for _ in range(200):
        if len(out) == n:
            break
        area = np.exp(rng.uniform(*np.log(area_range))) * size * size
        aspect = aspects[len(out)] * np.exp(rng.uniform(-0.3, 0.3))
        hw, hh = 0.5 * np.sqrt(area * aspect), 0.5 * np.sqrt(area / aspect)
        rot = rng.uniform(-0.45, 0.45)
        m = 1.1 * max(hw, hh) * (abs(np.cos(rot)) + abs(np.sin(rot))) / 1.4
        if 2 * m >= size:
            continue
        cx, cy = rng.uniform(m, size - m), rng.uniform(m, size - m)
        box = np.array([cx - m, cy - m, cx + m, cy + m])
        if all(_overlap(box, o[5]) < 0.05 for o in out):
            out.append((cx, cy, hw, hh, rot, box))
    if len(out) < n:  # crowded: shrink and retry
        return place_objects(rng, size, aspects, (area_range[0] * 0.7, area_range[1] * 0.7))
    return [o[:5] for o in out]


def _overlap(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def occlude_edge(img: np.ndarray, rng: np.random.Generator, box, frac: float) -> None:
    """A blob over one (random) edge of `box` (x0, y0, x1, y1 in pixels), `frac` of its shorter side wide."""
    x0, y0, x1, y1 = box
    side = rng.integers(4)
    px = [x0, x1, rng.uniform(x0, x1), rng.uniform(x0, x1)][side]
    py = [rng.uniform(y0, y1), rng.uniform(y0, y1), y0, y1][side]
    draw_blob(img, rng, px, py, frac * min(x1 - x0, y1 - y0))


def render_scene(rng: np.random.Generator, size: int, classes: list[VisualClass], labels, *,
                 area_range=(0.07, 0.35), n_distractors=(1, 4), occlusion_p=0.3) -> tuple[np.ndarray, np.ndarray]:
    """The frame uint8 (size, size, 3) and normalized boxes (n, 4) of objects of `labels` (first sounds)."""
    img = background(rng, size)
    for _ in range(int(rng.integers(*n_distractors))):
        draw_blob(img, rng, rng.uniform(0, size), rng.uniform(0, size), size * rng.uniform(0.05, 0.13))
    places = place_objects(rng, size, [_ASPECT.get(classes[k].shape, 1.0) for k in labels], area_range)
    order = rng.permutation(len(labels))
    boxes = np.zeros((len(labels), 4))
    for i in order:
        boxes[i] = draw_object(img, rng, classes[labels[i]], places[i])
    if rng.random() < occlusion_p:  # a blob covering an edge of the sounding object
        occlude_edge(img, rng, boxes[0], 0.22)
    yy, xx = np.mgrid[0:size, 0:size] / size
    light = rng.uniform(0.75, 1.2) * (1 + rng.uniform(-0.2, 0.2) * (xx - 0.5) + rng.uniform(-0.2, 0.2) * (yy - 0.5))
    img = img * light[..., None] + rng.normal(0, 0.015, img.shape)
    frame = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return frame, (boxes / size).astype(np.float32)
