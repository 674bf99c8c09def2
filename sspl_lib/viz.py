"""Figures shared by the evaluation / ablation notebooks and the explorer: heatmap overlays, gt boxes,
success-rate curves, best/worst-case grids, ablation bar charts. Pure numpy + matplotlib (Agg-safe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import auc, minmax, success_curve, upsample
from .paths import FIGURES_DIR, resolve


# ----------------------------------------------------------------------------- images
def colorize(values01: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Float map in [0,1] (H,W) -> uint8 RGB (H,W,3) through a matplotlib colormap."""
    import matplotlib

    rgba = matplotlib.colormaps[cmap](np.clip(values01, 0, 1))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay(frame_uint8, heatmap, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a colour-mapped heatmap (h,w) onto a uint8 RGB frame (H,W,3): returns uint8 (H,W,3).

    The heatmap is upsampled to the frame and min-max normalized as the cIoU does; `alpha` is its weight."""
    frame = np.asarray(frame_uint8)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame must be (H,W,3) RGB, got shape {frame.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0,1], got {alpha}")
    if np.ndim(heatmap) != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {tuple(np.shape(heatmap))}")
    colour = colorize(minmax(upsample(heatmap, frame.shape[:2])), cmap).astype(np.float32)
    out = (1 - alpha) * frame.astype(np.float32) + alpha * colour
    return out.round().clip(0, 255).astype(np.uint8)


def draw_boxes(image_uint8, boxes, color=(0, 255, 0), width: int = 2) -> np.ndarray:
    """Copy of a uint8 (H,W,3) image with rectangle outlines of normalized boxes (M,4) x0,y0,x1,y1.
    NaN rows (padding) are skipped."""
    img = np.array(image_uint8, dtype=np.uint8, copy=True)
    h, w = img.shape[:2]
    for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        if not np.all(np.isfinite(b)):
            continue
        x0, x1 = (np.clip(np.round(b[[0, 2]] * w), 0, w - 1)).astype(int)
        y0, y1 = (np.clip(np.round(b[[1, 3]] * h), 0, h - 1)).astype(int)
        t = max(1, int(width))
        img[y0:min(y0 + t, h), x0:x1 + 1] = color
        img[max(y1 - t + 1, 0):y1 + 1, x0:x1 + 1] = color
        img[y0:y1 + 1, x0:min(x0 + t, w)] = color
        img[y0:y1 + 1, max(x1 - t + 1, 0):x1 + 1] = color
    return img


# ----------------------------------------------------------------------------- plots
def _figure(ax=None, figsize=(5, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def plot_success_curves(curves: dict, ax=None, title: str = ""):
    """Success rate vs cIoU threshold. `curves`: {label: per-sample cIoU array} (AUC in the legend)."""

    fig, ax = _figure(ax)
    for label, cious in curves.items():
        x, y = success_curve(cious)
        ax.plot(x, y, marker=".", label=f"{label} (AUC {auc(cious):.3f})")
    ax.set(xlabel="cIoU threshold", ylabel="success rate", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def case_grid(frames, heatmaps, boxes=None, titles=None, *, ncols: int = 6, alpha: float = 0.5,
              cmap: str = "jet", suptitle: str = ""):
    """A grid of heatmap overlays (frames uint8 (N,H,W,3), heatmaps (N,h,w)), gt boxes (N,M,4) or (N,4) drawn."""
    import matplotlib.pyplot as plt

    n = len(frames)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.4 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = overlay(frames[i], heatmaps[i], alpha=alpha, cmap=cmap)
        if boxes is not None:
            img = draw_boxes(img, boxes[i])
        ax.imshow(img)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_ablation(rows: list[dict], *, metric: str = "ciou", group: str = "split", ax=None, title: str = ""):
    """Grouped bars with std error bars. rows: [{"variant", group, f"{metric}_mean", f"{metric}_std"}, ...]."""
    fig, ax = _figure(ax, figsize=(6, 3.5))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    groups = list(dict.fromkeys(r[group] for r in rows))
    width = 0.8 / max(1, len(groups))
    for g, gname in enumerate(groups):
        vals = {r["variant"]: r for r in rows if r[group] == gname}
        x = np.arange(len(variants)) + (g - (len(groups) - 1) / 2) * width
        means = [vals[v][f"{metric}_mean"] if v in vals else np.nan for v in variants]
        stds = [vals[v][f"{metric}_std"] if v in vals else 0.0 for v in variants]
        ax.bar(x, means, width, yerr=stds, capsize=3, label=str(gname))
    ax.set_xticks(np.arange(len(variants)), variants, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=metric, title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_curve_vs(xs, means, stds, *, xlabel: str, ylabel: str = "cIoU", label: str = "", ax=None, title: str = ""):
    """A line with a ±std band (e.g. cIoU vs PCM cycles)."""
    fig, ax = _figure(ax)
    xs, means, stds = (np.asarray(v, dtype=float) for v in (xs, means, stds))
    ax.plot(xs, means, marker="o", label=label or None)
    ax.fill_between(xs, means - stds, means + stds, alpha=0.25)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if label:
        ax.legend(fontsize=8)
    return fig


def savefig(fig, name: str, directory: str | Path | None = None, dpi: int = 110) -> Path:
    """Save under figures/ (or `directory`) as `<name>.png`; returns the path."""
    d = resolve(directory) if directory is not None else FIGURES_DIR
    d.mkdir(parents=True, exist_ok=True)
    path = d / (name if name.endswith(".png") else f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
