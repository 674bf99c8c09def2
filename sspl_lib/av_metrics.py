"""Does the audio decide? Metrics of the swap test and of the SLAVC extended protocol; heatmaps and boxes
only (no model, no files).

Swap test (IS3-style): a scene with 2-3 objects is scored once per object, with that object's sound.
`box_means` gives the map's mean inside each object's box; a row *follows* its sound when the mean inside
the sounding object's box exceeds (strictly) the mean inside every other object's box of the scene, and
`follow_rate` is the fraction of scenes whose rows all follow. A map that ignores the sound is the same for
every sound of a scene, so at most one of its rows can follow: its follow rate is 0.

Extended protocol (Mo & Morgado, "A Closer Look at Weakly-Supervised Audio-Visual Source Localization",
NeurIPS 2022): clips whose sounding object is visible, plus clips whose sound is off screen or silent. As in
their public code (github.com/stoneMo/SLAVC, `utils.py` `EvaluatorFull.calc_precision_recall`, `calc_ap`,
`finalize_stats`, and `test.py` `validate`):

* confidence of a clip = mean of the top quarter (`np.sort(s)[-n//4:]`, n = 224*224) of its map, upsampled
  bicubically (align_corners=True) to 224 x 224 and put on a fixed range `(s - lo) / (hi - lo)` (theirs:
  [-1/tau, 1/tau] of cos/tau maps; here `value_range`, default none = raw values);
* at a confidence threshold t, a clip is detected when conf >= t: a detected clip whose source is not
  visible is a false positive; a visible one is a true positive when its cIoU >= 0.5, else a false positive;
  a visible clip not detected is a false negative (precision = 1 when nothing is detected, recall = 1 when
  there are no true positives and no false negatives);
* AP: thresholds = the sorted confidences without the largest, from the top down, every max(1, N//200)-th;
  precision made monotone (max over the lower thresholds); AP = sum_i pmax[i] * (recall[i+1] - recall[i]);
* max-F1: the maximum over thresholds sorted(conf)[::max(1, N//10)] of 2PR / (P + R) (0 when P + R = 0);
  their script prints that list and the paper reports its maximum. Both over all clips (their subset 'all').

Deviations: the cIoU that decides a true positive is the caller's (the project's own per-row cIoU, see
`sspl_lib.experiments.evaluate.evaluate_extended`), not theirs of the fixed-range map thresholded at 0.5
(which needs a known value range; baselines have none). The fixed range only rescales the confidences, so
AP and max-F1 do not depend on it (up to float rounding of ties).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from . import metrics

GT_SIZE = 224


# ----------------------------------------------------------------------------- swap test
def box_pixels(boxes, size: int = GT_SIZE) -> np.ndarray:
    """Normalized boxes (..., 4) -> integer pixel bounds (..., 4) `int(size * clip(v, 0, 1))` (the VGG-SS rule
    of the ground truth), each at least one pixel wide and high; NaN boxes -> -1."""
    b = np.asarray(boxes, np.float64)
    ok = np.isfinite(b).all(-1, keepdims=True)
    px = np.floor(size * np.clip(np.nan_to_num(b), 0, 1)).astype(np.int64)
    px[..., 0:2] = np.minimum(px[..., 0:2], size - 1)
    px[..., 2:4] = np.maximum(px[..., 2:4], px[..., 0:2] + 1)
    return np.where(ok, px, -1)


def box_means(heatmaps, boxes, size: int = GT_SIZE, chunk: int = 64) -> np.ndarray:
    """Mean of each map inside each of its boxes: heatmaps (N,h,w), boxes (N,M,4) normalized x0,y0,x1,y1
    (NaN-padded) -> (N,M) float64 (NaN for padding). The map is upsampled bilinearly to size x size first
    (as for the cIoU); the box covers the pixels of `box_pixels`. `chunk` maps at a time (memory)."""
    hm = torch.as_tensor(np.asarray(heatmaps, np.float64)) if not isinstance(heatmaps, torch.Tensor) \
        else heatmaps.detach().cpu().to(torch.float64)
    b = np.asarray(boxes, np.float64)
    if hm.ndim != 3 or b.ndim != 3 or b.shape[-1] != 4 or len(b) != len(hm):
        raise ValueError(f"box_means expects heatmaps (N,h,w) and boxes (N,M,4), got {tuple(hm.shape)} and {b.shape}")
    px = box_pixels(b, size)  # (N,M,4)
    x0, y0, x1, y1 = (np.clip(px[..., i], 0, size) for i in range(4))
    total = np.zeros(b.shape[:2])
    for s in range(0, len(hm), chunk):
        up = metrics.upsample(hm[s:s + chunk], (size, size))  # (c,S,S) float64
        integral = np.zeros((len(up), size + 1, size + 1))
        integral[:, 1:, 1:] = up.cumsum(1).cumsum(2)  # (c,S+1,S+1) summed-area table
        n, sl = np.arange(len(up))[:, None], slice(s, s + len(up))
        total[sl] = (integral[n, y1[sl], x1[sl]] - integral[n, y0[sl], x1[sl]] - integral[n, y1[sl], x0[sl]]
                     + integral[n, y0[sl], x0[sl]])  # (c,M)
    area = (x1 - x0) * (y1 - y0)
    return np.where(px[..., 0] >= 0, total / np.maximum(area, 1), np.nan)


def follows(means, sounding) -> np.ndarray:
    """(N,) bool: row r's mean inside its sounding object's box (index `sounding[r]` into the M boxes)
    exceeds its mean inside every other (non-NaN) box. means: (N,M) from `box_means`."""
    m = np.asarray(means, np.float64)
    s = np.asarray(sounding, np.int64)
    own = m[np.arange(len(m)), s]  # (N,)
    other = np.where(np.arange(m.shape[1])[None] == s[:, None], np.nan, m)  # (N,M), own box left out
    beaten = np.nan_to_num(other, nan=-np.inf) < own[:, None]
    return beaten.all(1) & np.isfinite(own)


def follow_rate(means, sounding, scene) -> float:
    """Fraction of scenes (rows grouped by `scene`) in which every row follows its sound (`follows`)."""
    ok, sc = follows(means, sounding), np.asarray(scene)
    if len(sc) == 0:
        raise ValueError("follow_rate got no rows")
    ids, inverse = np.unique(sc, return_inverse=True)
    fails = np.bincount(inverse, weights=~ok, minlength=len(ids))  # failing rows per scene
    return float(np.mean(fails == 0))


def swap_summary(cious, means, sounding, scene) -> dict:
    """{"ciou", "auc", "n"} over the (scene, sound) rows, "follow_rate", "n_scenes"."""
    return metrics.summarize(cious) | {"follow_rate": follow_rate(means, sounding, scene),
                                       "n_scenes": int(len(np.unique(np.asarray(scene))))}


# ----------------------------------------------------------------------------- extended protocol
def slavc_confidence(heatmaps, value_range=None, size: int = GT_SIZE, chunk: int = 64) -> np.ndarray:
    """(N,) float64 per-clip confidences of maps (N,h,w): bicubic (align_corners=True) upsampling to
    size x size, the fixed range `value_range=(lo, hi)` mapped to [0, 1] (None: raw values), the mean of the
    top ceil(n/4) values (SLAVC `np.sort(scores.flatten())[-n//4:].mean()`). `chunk` maps at a time."""
    hm = heatmaps if isinstance(heatmaps, torch.Tensor) else torch.as_tensor(np.asarray(heatmaps))
    if hm.ndim != 3:
        raise ValueError(f"slavc_confidence expects heatmaps (N,h,w), got {tuple(hm.shape)}")
    lo, hi = (0.0, 1.0) if value_range is None else (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range={value_range!r}: expected (lo, hi) with hi > lo")
    n = size * size
    k = -((-n) // 4)  # len(range(n)[-n//4:]) = ceil(n/4)
    out = []
    for s in range(0, len(hm), chunk):
        x = rearrange(hm[s:s + chunk].detach().cpu().to(torch.float64), "c h w -> c 1 h w")
        up = rearrange(F.interpolate(x, size=(size, size), mode="bicubic", align_corners=True), "c 1 h w -> c (h w)")
        if value_range is not None:
            up = (up - lo) / (hi - lo)
        out.append(torch.topk(up, k, dim=1).values.mean(1).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _checked(visible, cious, conf):
    v, c, s = (np.asarray(a).reshape(-1) for a in (visible, cious, conf))
    if not len(v) == len(c) == len(s):
        raise ValueError(f"visible, cious and confidences must have one value per clip, got {len(v)}, {len(c)}, "
                         f"{len(s)}")
    if len(v) == 0:
        raise ValueError("no clips given")
    return v.astype(bool), c.astype(np.float64), s.astype(np.float64)


def precision_recall(visible, cious, conf, thresholds, ciou_thr: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """SLAVC's precision and recall at each confidence threshold: (T,) and (T,) float64 (module docstring)."""
    v, c, s = _checked(visible, cious, conf)
    t = np.asarray(thresholds, np.float64).reshape(-1)
    det = s[None] >= t[:, None]  # (T,N) detected
    hit = v & (c >= ciou_thr)  # (N,) visible and in the right place
    tp = (det & hit).sum(1)
    fp = (det & ~hit).sum(1)
    fn = (~det & v).sum(1)
    precision = np.where(tp + fp == 0, 1.0, tp / np.maximum(tp + fp, 1))
    recall = np.where(tp + fn == 0, 1.0, tp / np.maximum(tp + fn, 1))
    return precision, recall


def extended_ap(visible, cious, conf, ciou_thr: float = 0.5) -> float:
    """SLAVC's AP (`EvaluatorFull.calc_ap`) over all clips: module docstring."""
    v, c, s = _checked(visible, cious, conf)
    thresholds = np.sort(s)[:-1][::-max(1, len(s) // 200)]
    p, r = precision_recall(v, c, s, thresholds, ciou_thr)
    pmax = np.maximum.accumulate(p[::-1])[::-1]  # max(precision[i:])
    return float(np.sum(pmax[:-1] * np.diff(r)))


def extended_max_f1(visible, cious, conf, ciou_thr: float = 0.5) -> float:
    """SLAVC's max-F1 over all clips: the best F1 over thresholds sorted(conf)[::max(1, N//10)]."""
    v, c, s = _checked(visible, cious, conf)
    p, r = precision_recall(v, c, s, np.sort(s)[::max(1, len(s) // 10)], ciou_thr)
    f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
    return float(f1.max())


def extended_summary(visible, cious, conf, ciou_thr: float = 0.5) -> dict:
    """{"ap", "max_f1", "n_clips", "n_visible"} of the extended protocol (all clips)."""
    v, c, s = _checked(visible, cious, conf)
    return {"ap": extended_ap(v, c, s, ciou_thr), "max_f1": extended_max_f1(v, c, s, ciou_thr),
            "n_clips": int(len(v)), "n_visible": int(v.sum())}


# ----------------------------------------------------------------------------- a split's rows at once
def swap_scores(heatmaps, all_boxes, sounding, scene, size: int = GT_SIZE) -> dict:
    """Swap metrics of the maps (N,h,w) of a swap split's rows: {"box_means" (N,M), "follows" (N,) bool,
    "complete" (N,) bool, "follow_rate", "n_scenes"}. Only complete scenes (a row for each of the scene's
    objects, i.e. for each non-NaN box) count in the follow rate (a `limit` may cut the last scene)."""
    b, s, sc = np.asarray(all_boxes, np.float64), np.asarray(sounding, np.int64), np.asarray(scene)
    means = box_means(heatmaps, b, size)
    _, inverse, counts = np.unique(sc, return_inverse=True, return_counts=True)
    complete = counts[inverse] == np.isfinite(b).all(-1).sum(-1)  # (N,)
    rate = follow_rate(means[complete], s[complete], sc[complete]) if complete.any() else float("nan")
    return {"box_means": means, "follows": follows(means, s), "complete": complete, "follow_rate": rate,
            "n_scenes": int(len(np.unique(sc[complete])))}


def extended_scores(heatmaps, visible, cious: dict, value_range=None) -> dict:
    """Extended-protocol metrics of the maps (N,h,w) of all clips: {"confidence" (N,), "extended":
    {protocol: `extended_summary`}} for each protocol's per-clip cIoU in `cious` (values of clips without a
    visible source are ignored)."""
    conf = slavc_confidence(heatmaps, value_range)
    return {"confidence": conf, "extended": {p: extended_summary(visible, c, conf) for p, c in cious.items()}}
