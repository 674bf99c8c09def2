"""Pixels and bytes for the explorer: heatmap overlays with gt boxes and the thresholded mask, the
mask-vs-gt panel, the log-mel spectrogram, PNG and WAV encoding. Pure numpy / PIL / matplotlib Agg.

Overlays and masks are drawn at the gt resolution (224 px); the mask is `sspl_lib.metrics.localization_mask`,
the one that `sspl_lib.metrics.ciou` scores.
The heatmap colouring itself is `sspl_lib.viz.overlay`; this module adds what viz has no use for
(mask contours, the TP/FP/FN panel, captions, the spectrogram image, WAV bytes).
"""

from __future__ import annotations

import io
import wave
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..metrics import localization_mask, minmax
from ..viz import draw_boxes, overlay

PANEL = 224  # display size = the metrics' gt size
GT_COLOUR = (40, 220, 60)
OTHER_COLOUR = (200, 200, 200)
MASK_COLOUR = (255, 255, 255)
TP, FP, FN = (46, 204, 64), (230, 60, 50), (60, 120, 255)


# ----------------------------------------------------------------------------- maps
def _edges(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (4-neighbourhood)."""
    p = np.pad(mask, 1, constant_values=False)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


# ----------------------------------------------------------------------------- panels
def frame_at(frame: np.ndarray, size: int = PANEL) -> np.ndarray:
    """uint8 (S,S,3) -> uint8 (size,size,3), bicubic."""
    from PIL import Image

    if frame.shape[0] == size and frame.shape[1] == size:
        return np.asarray(frame, np.uint8)
    return np.asarray(Image.fromarray(np.asarray(frame, np.uint8)).resize((size, size), Image.BICUBIC))


def overlay_panel(frame224: np.ndarray, heatmap: np.ndarray, mask: np.ndarray, *, box=None, other_boxes=None,
                  cmap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """Frame + colour-mapped heatmap, other objects' boxes (grey), the gt box (green), mask outline (white)."""
    img = overlay(frame224, heatmap, alpha=alpha, cmap=cmap)
    if other_boxes is not None and len(other_boxes):
        img = draw_boxes(img, other_boxes, color=OTHER_COLOUR, width=1)
    if box is not None:
        img = draw_boxes(img, np.asarray(box).reshape(-1, 4), color=GT_COLOUR, width=2)
    img[_edges(mask)] = MASK_COLOUR
    return img


def mask_panel(frame224: np.ndarray, mask: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The scored mask against the gt map on the dimmed frame: hits green, false alarms red, misses blue."""
    img = frame224.astype(np.float32) * 0.35
    pos = gt > 0
    for sel, colour in ((mask & pos, TP), (mask & ~pos, FP), (~mask & pos, FN)):
        img[sel] = 0.25 * img[sel] + 0.75 * np.asarray(colour, np.float32)
    return img.round().clip(0, 255).astype(np.uint8)


@lru_cache(maxsize=8)
def font(size: int = 13):
    from PIL import ImageFont
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default()


def compose(columns: list[dict], *, gap: int = 10, header: int = 40, footer: int = 22) -> np.ndarray:
    """Columns side by side: [{"title", "subtitle", "panels": [uint8 (224,224,3), ...]}] on white,
    with a legend line at the bottom. Returns uint8 (H,W,3)."""
    from PIL import Image, ImageDraw

    rows = max(len(c["panels"]) for c in columns)
    width = len(columns) * (PANEL + gap) + gap
    height = header + rows * (PANEL + gap) + footer
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, col in enumerate(columns):
        x = gap + k * (PANEL + gap)
        draw.text((x, 3), col["title"][:34], fill=(20, 20, 20), font=font(14))
        draw.text((x, 21), col.get("subtitle", "")[:40], fill=(70, 70, 70), font=font(12))
        for r, panel in enumerate(col["panels"]):
            canvas.paste(Image.fromarray(panel), (x, header + r * (PANEL + gap)))
    y = height - footer + 3
    x = gap
    for colour, text in ((GT_COLOUR, "gt box"), (MASK_COLOUR, "mask outline"), (TP, "hit"), (FP, "false alarm"),
                         (FN, "miss")):
        draw.rectangle((x, y + 2, x + 11, y + 13), fill=colour, outline=(90, 90, 90))
        draw.text((x + 15, y), text, fill=(40, 40, 40), font=font(12))
        x += 22 + int(draw.textlength(text, font=font(12)))
    return np.asarray(canvas)


def swap_columns(frame224: np.ndarray, maps, boxes, other_boxes, names, follows, *, protocol: str = "fixed",
                 threshold: float = 0.5, cmap: str = "jet", alpha: float = 0.5) -> list[dict]:
    """One column per sound of a swap scene, for `compose`: the map heard with object k's sound over the frame,
    object k's box (green) among the others (grey), titled by its class and whether the map follows it."""
    cols = []
    for hm, box, name, ok in zip(maps, boxes, names, follows):
        mask = localization_mask(hm, (PANEL, PANEL), protocol, threshold)
        cols.append({"title": f"sound of {name}", "subtitle": "follows the sound" if ok else "does not follow",
                     "panels": [overlay_panel(frame224, hm, mask, box=box, other_boxes=other_boxes, cmap=cmap,
                                              alpha=alpha)]})
    return cols


# ----------------------------------------------------------------------------- bytes
def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def spectrogram_png(spects: np.ndarray, title: str = "", *, cmap: str = "magma", scale: int = 3) -> bytes:
    """The VGGish log-mel examples (N,96,64) end to end, time along x, mel band up, as a PNG with axes
    (drawn with PIL: ~10x faster than a matplotlib figure, which matters for a live view)."""
    import matplotlib
    from PIL import Image, ImageDraw

    spec = np.concatenate(list(np.asarray(spects, np.float32).reshape(-1, 96, 64)), axis=0)  # (T, 64)
    rgb = (matplotlib.colormaps[cmap](minmax(spec.T[::-1]))[..., :3] * 255).astype(np.uint8)
    w, h = spec.shape[0], 64 * scale  # one column per 10 ms frame
    plot = Image.fromarray(rgb).resize((w, h), Image.NEAREST)
    left, top, bottom = 46, 22, 34
    canvas = Image.new("RGB", (left + w + 12, top + h + bottom), (255, 255, 255))
    canvas.paste(plot, (left, top))
    d, f, ink = ImageDraw.Draw(canvas), font(11), (40, 40, 40)
    d.text((left, 3), title[:48], fill=(20, 20, 20), font=font(12))
    for k in range(1, len(spec) // 96):  # example boundaries (0.96 s)
        for y in range(top, top + h, 6):
            d.line((left + 96 * k, y, left + 96 * k, y + 2), fill=(255, 255, 255))
    for sec in range(int(w / 100) + 1):  # time ticks
        x = left + sec * 100
        d.line((x, top + h, x, top + h + 4), fill=ink)
        d.text((x - 3, top + h + 5), f"{sec}", fill=ink, font=f)
    d.text((left + w // 2 - 20, top + h + 18), "time (s)", fill=ink, font=f)
    for band in (0, 32, 64):  # mel ticks
        y = top + h - band * scale
        d.line((left - 4, y, left, y), fill=ink)
        d.text((left - 22, y - 7), f"{band}", fill=ink, font=f)
    label = Image.new("RGB", (70, 14), (255, 255, 255))
    ImageDraw.Draw(label).text((4, 0), "mel band", fill=ink, font=f)
    canvas.paste(label.rotate(90, expand=True), (4, top + h // 2 - 35))
    d.rectangle((left - 1, top - 1, left + w, top + h), outline=(90, 90, 90))
    return png_bytes(np.asarray(canvas))


def wav_bytes(audio: np.ndarray, sample_rate: int = 16_000) -> bytes:
    """Mono float audio in [-1, 1] -> 16-bit PCM WAV bytes."""
    pcm = (np.clip(np.asarray(audio, np.float64), -1, 1) * 32767).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()
