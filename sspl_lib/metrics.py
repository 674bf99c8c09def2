"""cIoU and AUC from heatmaps and ground-truth maps only (no model): SSPL's official `eval_cal_ciou`, NaN-free.

Upsample the heatmap bilinearly to the gt size (OpenCV INTER_LINEAR), min-max normalize it (a constant map -> 0),
mask = map >= threshold ("fixed", SSPL: 0.5) or >= its value at int(H*W/2) of the sort ("median", LVS / EZ-VSL);
cIoU = sum(mask * gt) / (sum(gt) + sum(mask * (gt == 0))), 0 for an empty union. `ciou` is the reference;
`ciou_batch` does the same IEEE operations in one numba kernel and equals it bit for bit.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

PROTOCOLS = ("fixed", "median")
AUC_THRESHOLDS = [0.05 * i for i in range(21)]  # the official code's float values


# ----------------------------------------------------------------------------- input checks
def _check_options(protocol: str, threshold) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = float("nan")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"threshold={threshold!r}: expected a number in [0, 1] (a level of the min-max "
                         "normalized heatmap; the official value is 0.5)")


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x if x.dtype in (torch.float32, torch.float64, torch.bool, torch.uint8) else x.float()).numpy()
    return np.asarray(x)


def _checked(heatmaps, gt_maps, batch: bool) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous float64 heatmaps and float32/64 gt maps, shapes and heatmap values checked."""
    hm, gt = _numpy(heatmaps), _numpy(gt_maps)
    if batch and (hm.ndim != 3 or gt.ndim != 3 or len(hm) != len(gt)):
        raise ValueError(f"ciou_batch expects heatmaps (B,h,w) and gt_maps (B,H,W) with the same B, "
                         f"got {hm.shape} and {gt.shape}")
    if not batch and (hm.ndim != 2 or gt.ndim != 2):
        raise ValueError(f"ciou expects a 2-D heatmap and a 2-D gt map, got {hm.shape} and {gt.shape}")
    if min(hm.shape[-2:]) == 0 or min(gt.shape[-2:]) == 0:
        raise ValueError(f"{'ciou_batch' if batch else 'ciou'} got an empty heatmap or gt map")
    hm = np.ascontiguousarray(hm, dtype=np.float64)
    if not np.isfinite(hm).all():
        raise ValueError(f"{'heatmaps contain' if batch else 'heatmap contains'} NaN or inf; expected finite values")
    return hm, np.ascontiguousarray(gt if gt.dtype in (np.float32, np.float64) else gt.astype(np.float32))


def _check_gt(gt: np.ndarray, name: str) -> None:
    lo, hi = (float(gt.min()), float(gt.max())) if gt.size else (0.0, 0.0)
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError(f"{name} contains NaN; expected a ground-truth map with values in [0, 1]")
    if lo < 0.0 or hi > 1.0:
        hint = " (a 0..255 mask? divide it by 255)" if 1.0 < hi <= 255.0 and lo >= 0.0 else ""
        raise ValueError(f"{name} has values in [{lo:g}, {hi:g}]; expected a ground-truth map with values in "
                         f"[0, 1]{hint}")


# ----------------------------------------------------------------------------- reference
@functools.lru_cache(maxsize=64)
def axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, ...]:
    """(i0, i1, w0, w1) of OpenCV INTER_LINEAR along one axis: half-pixel centres, edge clamp, no antialias."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.where(i0 < n_in - 1, src - i0, 0.0)
    out = (i0, i1, 1.0 - w1, w1)
    for a in out:
        a.setflags(write=False)
    return out


def upsample(maps, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of maps (..., h, w) to (..., *size) in float64: width, then height, each w0 * a + w1 * b."""
    m = np.asarray(_numpy(maps), dtype=np.float64)
    iy0, iy1, wy0, wy1 = axis_weights(m.shape[-2], size[0])
    ix0, ix1, wx0, wx1 = axis_weights(m.shape[-1], size[1])
    t = m[..., ix0] * wx0 + m[..., ix1] * wx1  # (..., h, W)
    return t[..., iy0, :] * wy0[:, None] + t[..., iy1, :] * wy1[:, None]  # (..., H, W)


def minmax(maps) -> np.ndarray:
    """Min-max normalization of each map (..., H, W) to [0, 1], exact; a constant map becomes zeros."""
    m = np.asarray(maps)
    lo, hi = m.min(axis=(-2, -1), keepdims=True), m.max(axis=(-2, -1), keepdims=True)
    return (m - lo) / np.where(hi > lo, hi - lo, np.inf)  # constant: 0 / inf = 0


def localization_mask(heatmap, size: tuple[int, int], protocol: str = "fixed", threshold: float = 0.5) -> np.ndarray:
    """The mask that `ciou` scores: bool (*size) of one heatmap (h, w)."""
    _check_options(protocol, threshold)
    norm = minmax(upsample(heatmap, size))
    t = threshold if protocol == "fixed" else np.sort(norm.ravel())[norm.size // 2]
    return norm >= t


def mask_ciou(mask: np.ndarray, gt: np.ndarray) -> float:
    """cIoU of a bool mask against a gt map of the same shape (the official formula; 0 for an empty union)."""
    m = np.asarray(mask, dtype=np.float64)
    union = np.sum(gt) + np.sum(m * (gt == 0))
    return float(np.sum(m * gt) / union) if union > 0 else 0.0


def ciou(heatmap, gt_map, protocol: str = "fixed", threshold: float = 0.5) -> float:
    """cIoU of one heatmap (h, w) against one gt map (H, W) with values in [0, 1] (numpy or torch)."""
    hm, gt = _checked(heatmap, gt_map, batch=False)
    _check_gt(gt, "gt_map")
    return mask_ciou(localization_mask(hm, gt.shape, protocol, threshold), gt)


# ----------------------------------------------------------------------------- batched
_jit = numba.njit(nogil=True, cache=True)


@_jit
def _upsample_into(h, iy0, iy1, wy0, wy1, ix0, ix1, wx0, wx1, t_, u, lo_x, hi_x):
    """`upsample` of one map h (h,w) into u (H,W) (t_: (h,W) scratch); returns the min and max of u."""
    for r in range(h.shape[0]):
        for x in range(u.shape[1]):
            t_[r, x] = h[r, ix0[x]] * wx0[x] + h[r, ix1[x]] * wx1[x]
    lo_x[:] = np.inf  # per column: the loop over x vectorizes
    hi_x[:] = -np.inf
    for y in range(u.shape[0]):
        r0, r1, a0, a1 = iy0[y], iy1[y], wy0[y], wy1[y]  # hoisted: the stores to u might alias them
        for x in range(u.shape[1]):
            v = t_[r0, x] * a0 + t_[r1, x] * a1
            u[y, x] = v
            lo_x[x] = min(lo_x[x], v)
            hi_x[x] = max(hi_x[x], v)
    return lo_x.min(), hi_x.max()


@_jit
def _mask_ciou(u, g, lo, scale, t, g_x, inter_x, outside_x, invalid_x):
    """`mask_ciou` of (u - lo) / scale >= t against g, and the count of g's values outside [0, 1] (one read)."""
    g_x[:] = 0.0
    inter_x[:] = 0.0
    outside_x[:] = 0.0
    invalid_x[:] = 0.0
    for y in range(g.shape[0]):
        for x in range(g.shape[1]):
            gv = np.float64(g[y, x])
            m = (u[y, x] - lo) / scale >= t
            g_x[x] += gv
            inter_x[x] += gv if m else 0.0
            outside_x[x] += 1.0 if (m and gv == 0) else 0.0
            invalid_x[x] += 0.0 if (gv >= 0.0 and gv <= 1.0) else 1.0
    union = g_x.sum() + outside_x.sum()
    return inter_x.sum() / union if union > 0 else 0.0, invalid_x.sum()


@_jit
def _ciou_kernel(hm, gt, iy0, iy1, wy0, wy1, ix0, ix1, wx0, wx1, median, threshold, out, invalid):
    """`ciou` of each map (hm (B,h,w) float64, gt (B,H,W)) into out (B,), gt values outside [0, 1] into invalid."""
    nh, nw = gt.shape[1], gt.shape[2]
    t_, u = np.empty((hm.shape[1], nw)), np.empty((nh, nw))
    c1, c2, c3, c4 = np.empty(nw), np.empty(nw), np.empty(nw), np.empty(nw)  # per-column scratch
    for b in range(hm.shape[0]):
        lo, hi = _upsample_into(hm[b], iy0, iy1, wy0, wy1, ix0, ix1, wx0, wx1, t_, u, c1, c2)
        scale = hi - lo if hi > lo else np.inf  # as `minmax`
        t = threshold
        if median:  # normalization is monotone: the median of the normalized map is the normalized median
            t = (np.partition(u.ravel(), nh * nw // 2)[nh * nw // 2] - lo) / scale
        out[b], invalid[b] = _mask_ciou(u, gt[b], lo, scale, t, c1, c2, c3, c4)


def ciou_batch(heatmaps, gt_maps, protocol: str = "fixed", threshold: float = 0.5) -> torch.Tensor:
    """`ciou` of each pair: heatmaps (B,h,w), gt_maps (B,H,W) (numpy or torch) -> (B,) float64 CPU tensor."""
    _check_options(protocol, threshold)
    hm, gt = _checked(heatmaps, gt_maps, batch=True)
    out, invalid = np.zeros(len(hm)), np.zeros(len(hm))
    (h, w), (nh, nw) = hm.shape[1:], gt.shape[1:]
    args = (*axis_weights(h, nh), *axis_weights(w, nw), protocol == "median", float(threshold))
    n = max(1, min(torch.get_num_threads(), len(hm) // 8))  # threads of >= 8 maps (the kernel releases the GIL)
    ends = np.linspace(0, len(hm), n + 1).astype(int)
    with ThreadPoolExecutor(n) as pool:  # started per call: nothing to inherit across fork()
        list(pool.map(lambda a, b: _ciou_kernel(hm[a:b], gt[a:b], *args, out[a:b], invalid[a:b]), ends[:-1],
                      ends[1:]))
    if invalid.any():
        _check_gt(gt, "gt_maps")  # raises, naming the problem
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------- summaries
def _as_array(cious) -> np.ndarray:
    a = np.asarray(_numpy(cious), dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("no cIoU values given")
    return a


def success_curve(cious) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds (21,), success rates (21,)): fraction of samples with cIoU >= 0.05*i."""
    a = _as_array(cious)
    return np.array(AUC_THRESHOLDS), np.array([np.sum(a >= t) / a.size for t in AUC_THRESHOLDS])


def auc(cious) -> float:
    """Area under the success curve (trapezoid rule, as sklearn.metrics.auc)."""
    x, y = success_curve(cious)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def ciou_at(cious, t: float = 0.5) -> float:
    """Fraction of samples with cIoU >= t (the reported "cIoU")."""
    a = _as_array(cious)
    return float(np.sum(a >= t) / a.size)


def summarize(cious) -> dict:
    """{"ciou": fraction >= 0.5, "auc": float, "n": int}."""
    a = _as_array(cious)
    return {"ciou": ciou_at(a, 0.5), "auc": auc(a), "n": int(a.size)}
