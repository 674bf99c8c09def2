"""cIoU / AUC for sound source localization; knows no model, only heatmaps and gt maps.

Two protocols are provided:

* ``"fixed"`` (SSPL, official ``eval_cal_ciou(..., thres=0.5)``): upsample the heatmap
  bilinearly to the gt size, min-max normalize it to [0, 1], mask = map >= ``threshold``.
* ``"median"`` (LVS / EZ-VSL): mask = map >= the value at index ``int(H*W/2)`` of the
  ascending sort of the (normalized) upsampled map, i.e. the top half, ties included.

cIoU = sum(mask*gt) / (sum(gt) + sum(mask*(gt==0))).

Degenerate cases (the official code would produce NaN; here they are defined):

* constant heatmap (ptp == 0): the normalized map is taken as all zeros, so the fixed
  protocol gives an empty mask (for threshold > 0) and the median protocol a full mask;
* empty union (gt all zero and empty mask): cIoU = 0, which is what a NaN amounts to in
  the official success counts (NaN >= t is False).

Bilinear upsampling has OpenCV ``INTER_LINEAR`` semantics (half-pixel centres, edge clamp,
no antialias). ``upsample`` uses ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False)``; ``ciou``/``ciou_batch`` use the float64 separable definition of
``sspl_lib._upsample`` (same weights, every IEEE operation fixed, so numpy, torch and the fused numba
kernel agree bit for bit; for float32 14x14 -> 224 maps it is the exact bilinear value). All
thresholding is done in float64 whatever the heatmap dtype.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from sspl_lib import _upsample as _U

PROTOCOLS = ("fixed", "median")
AUC_THRESHOLDS = [0.05 * i for i in range(21)]  # same float values as the official code
_CHUNK = 16  # maps per chunk in the torch path of ciou_batch: keeps full-res temporaries small
_USE_NUMBA = _U.ciou_kernel is not None  # fused CPU kernel; False forces the torch path (tests)


# ----------------------------------------------------------------------------- helpers
def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def _check_threshold(threshold) -> None:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = float("nan")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"threshold={threshold!r}: expected a number in [0, 1] (a level of the min-max "
                         "normalized heatmap; the official value is 0.5)")


def _check_gt_range(lo, hi, name: str) -> None:
    """lo, hi: min and max of a ground truth (NaN propagates through both)."""
    lo, hi = float(lo), float(hi)
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError(f"{name} contains NaN; expected a ground-truth map with values in [0, 1]")
    if lo < 0.0 or hi > 1.0:
        hint = " (a 0..255 mask? divide it by 255)" if 1.0 < hi <= 255.0 and lo >= 0.0 else ""
        raise ValueError(f"{name} has values in [{lo:g}, {hi:g}]; expected a ground-truth map with values in "
                         f"[0, 1]{hint}")


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (OpenCV INTER_LINEAR semantics) resize of (B,h,w) maps to (B,*size)."""
    x = rearrange(maps, "b h w -> b 1 h w")
    y = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return rearrange(y, "b 1 h w -> b h w")


def median_index(n_pixels: int) -> int:
    """Index into the ascending sort used by the median protocol (``int(H*W/2)``)."""
    return int(n_pixels / 2)


# ----------------------------------------------------------------------------- scalar
def _normalize_np(m: np.ndarray) -> np.ndarray:
    """Min-max normalize to [0,1]; a constant map becomes all zeros (no NaN)."""
    lo, ptp = m.min(), np.ptp(m)
    if ptp == 0:
        return np.zeros_like(m)
    return (m - lo) / ptp


def _ciou_from_mask_np(mask: np.ndarray, gt: np.ndarray) -> float:
    mask = mask.astype(np.float64)
    inter = np.sum(mask * gt)
    union = np.sum(gt) + np.sum(mask * (gt == 0))
    return float(inter / union) if union > 0 else 0.0


def ciou(heatmap, gt_map, protocol: str = "fixed", threshold: float = 0.5) -> float:
    """cIoU of one heatmap (h,w) (numpy or torch) against one gt map (H,W) (usually 224x224) with values in
    [0, 1]; `threshold` in [0, 1]. NaN in either, or values out of range, raise ValueError."""
    _check_protocol(protocol)
    _check_threshold(threshold)
    hm, gt = _as_tensor(heatmap), np.asarray(_as_tensor(gt_map).detach().cpu(), dtype=np.float64)
    if hm.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"ciou expects a 2-D heatmap and a 2-D gt map, got {tuple(hm.shape)} and {gt.shape}")
    if hm.numel() == 0 or gt.size == 0:
        raise ValueError("ciou got an empty heatmap or gt map")
    _check_gt_range(gt.min(), gt.max(), "gt_map")
    hm = hm.detach().cpu().to(torch.float64)
    if not torch.isfinite(hm).all():
        raise ValueError("heatmap contains NaN or inf; expected finite values")
    up = _U.upsample_np(hm.numpy(), gt.shape)  # (H,W) float64
    norm = _normalize_np(up)
    if protocol == "fixed":
        mask = norm >= threshold
    else:
        thr = np.sort(norm.flatten())[median_index(norm.size)]
        mask = norm >= thr
    return _ciou_from_mask_np(mask, gt)


# ----------------------------------------------------------------------------- batch
_INT = {torch.float32: torch.int32, torch.float64: torch.int64}


def _ordered_key(v: torch.Tensor) -> torch.Tensor:
    """Map floats to int64 keys with the same order (IEEE bit trick: flip non-sign bits of negatives)."""
    i = v.view(_INT[v.dtype])
    low = torch.iinfo(i.dtype).max  # all bits but the sign
    return torch.where(i < 0, i ^ low, i).to(torch.int64)


def _from_key(k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    i = k.to(_INT[dtype])
    low = torch.iinfo(i.dtype).max
    return torch.where(i < 0, i ^ low, i).view(dtype)


def _normalized_value(v, lo, hi):
    """(v-lo)/(hi-lo) as the official normalize_img computes it; 0 for constant maps."""
    ptp = hi - lo
    const = ptp == 0
    return torch.where(const, torch.zeros_like(v), (v - lo) / torch.where(const, torch.ones_like(ptp), ptp))


def raw_threshold(lo: torch.Tensor, hi: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Smallest raw value v with ``normalize(v) >= t``, normalize(v) = (v-lo)/(hi-lo) (0 if hi == lo).

    lo, hi, t: (B,) in the working dtype. ``u >= raw_threshold(...)`` reproduces exactly the mask
    ``normalize(u) >= t`` for lo <= u <= hi (normalization is monotone) without normalizing every
    pixel. Returns +inf where no value qualifies. Bisection over the float bit order (<= 64 steps).
    """
    left = _ordered_key(lo) - 1  # largest key known to fail (virtual when lo itself passes)
    right = _ordered_key(hi)  # smallest key known to pass (if hi passes at all)
    while True:
        active = right > left + 1
        if not bool(active.any()):
            break
        mid = (left & right) + ((left ^ right) >> 1)  # floor((left+right)/2) without overflow
        good = _normalized_value(_from_key(mid, lo.dtype), lo, hi) >= t
        right = torch.where(active & good, mid, right)
        left = torch.where(active & ~good, mid, left)
    out = _from_key(right, lo.dtype)
    none = _normalized_value(hi, lo, hi) < t
    return torch.where(none, torch.full_like(out, float("inf")), out)


def _chunk_stats(up: torch.Tensor, protocol: str, threshold: float):
    """up (c,N) upsampled maps -> lo (c,), hi (c,), normalized threshold t (c,)."""
    lo, hi = up.amin(1), up.amax(1)
    if protocol == "fixed":
        return lo, hi, torch.full_like(lo, threshold)
    kth = torch.kthvalue(up, median_index(up.shape[1]) + 1, dim=1).values  # np.sort(x)[k] = (k+1)-th smallest
    return lo, hi, _normalized_value(kth, lo, hi)


def _chunk_ciou(up: torch.Tensor, g: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """up (c,N), g (c,N) gt, tau (c,) raw thresholds -> (c,) float64 cIoU."""
    mask = up >= tau[:, None]  # (c,N) bool
    inter = torch.where(mask, g, 0).sum(1, dtype=torch.float64)
    outside = (mask & (g == 0)).sum(1).to(torch.float64)
    union = g.sum(1, dtype=torch.float64) + outside
    return torch.where(union > 0, inter / torch.where(union > 0, union, 1.0), torch.zeros_like(union))


def _ciou_torch(hm: torch.Tensor, gt: torch.Tensor, protocol: str, threshold: float) -> torch.Tensor:
    """Chunked torch path (any device, or no numba): float64 maps, one raw-threshold bisection."""
    chunk = _CHUNK if hm.device.type == "cpu" else hm.shape[0]
    size, spans = gt.shape[-2:], range(0, hm.shape[0], chunk)
    ups = [rearrange(_U.upsample_torch(hm[i:i + chunk], size), "c h w -> c (h w)") for i in spans]
    lo, hi, t = (torch.cat(v) for v in zip(*(_chunk_stats(u, protocol, threshold) for u in ups)))  # (B,)
    tau = raw_threshold(lo, hi, t)  # (B,) one bisection for the whole batch
    gts = (rearrange(gt[i:i + chunk], "c h w -> c (h w)") for i in spans)
    return torch.cat([_chunk_ciou(u, g, tau[i:i + len(u)]) for i, u, g in zip(spans, ups, gts)])


def _ciou_numba(hm_np: np.ndarray, gt_np: np.ndarray, protocol: str, threshold: float) -> torch.Tensor:
    """Fused kernel (one read of each gt pixel), maps split over torch.get_num_threads() threads.

    numpy arrays in (float64 maps, float32/64 gt): no torch op runs here, because a torch parallel
    region just before would leave its OpenMP threads spinning on the cores the kernel threads need."""
    hm_np = np.ascontiguousarray(hm_np, dtype=np.float64)
    gt_np = np.ascontiguousarray(gt_np)
    n_pix = gt_np.shape[1] * gt_np.shape[2]
    (h, w), (H, W) = hm_np.shape[1:], gt_np.shape[1:]
    args = (*_U.axis_weights(h, H), *_U.axis_weights(w, W), _U.axis_edges(h, H), _U.axis_edges(w, W),
            protocol == "median", float(threshold), median_index(n_pix))
    out = np.empty(hm_np.shape[0])
    n = max(1, min(torch.get_num_threads(), hm_np.shape[0] // 8))  # >= 8 maps per thread
    bounds = np.linspace(0, hm_np.shape[0], n + 1).astype(int)
    run = lambda a, b: _U.ciou_kernel(hm_np[a:b], gt_np[a:b], *args, out[a:b])  # noqa: E731
    if n == 1:
        run(0, hm_np.shape[0])
    else:
        list(_pool(n).map(run, bounds[:-1], bounds[1:]))  # the kernel releases the GIL
    return torch.from_numpy(out)


_POOLS: dict = {}


def _pool(n: int):
    """A persistent thread pool of n workers for this process (a forked child, e.g. a DataLoader worker,
    gets its own: the parent's threads do not exist there)."""
    from concurrent.futures import ThreadPoolExecutor

    key = (os.getpid(), n)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(n, thread_name_prefix="sspl-ciou")
    return _POOLS[key]


def _on_cpu(x) -> bool:
    return not isinstance(x, torch.Tensor) or x.device.type == "cpu"


def _to_numpy(x) -> np.ndarray:
    if not isinstance(x, torch.Tensor):
        return np.asarray(x)
    x = x.detach()
    return (x if x.dtype in (torch.float32, torch.float64, torch.bool, torch.uint8) else x.float()).numpy()


def ciou_batch(heatmaps, gt_maps, protocol: str = "fixed", threshold: float = 0.5) -> torch.Tensor:
    """Vectorized cIoU: heatmaps (B,h,w), gt_maps (B,H,W) -> (B,) float64 tensor (heatmap's device).

    Same definition as ``ciou`` (float64 upsampling of ``sspl_lib._upsample``, mask =
    normalized >= t, evaluated as raw >= ``raw_threshold``); on CPU a fused numba kernel, else torch.
    gt_maps must lie in [0, 1], `threshold` in [0, 1]; NaN or values out of range raise ValueError.
    """
    _check_protocol(protocol)
    _check_threshold(threshold)
    if _USE_NUMBA and _on_cpu(heatmaps) and _on_cpu(gt_maps):  # numpy end to end (see _ciou_numba)
        hm, gt = _to_numpy(heatmaps), _to_numpy(gt_maps)
        if gt.dtype not in (np.float32, np.float64):
            gt = gt.astype(np.float32)
        _check_batch(hm.shape, gt.shape)
        if hm.shape[0] == 0:
            return torch.zeros(0, dtype=torch.float64)
        _check_gt_range(gt.min(), gt.max(), "gt_maps")
        hm = np.asarray(hm, dtype=np.float64)
        if not np.isfinite(hm).all():
            raise ValueError("heatmaps contain NaN or inf; expected finite values")
        return _ciou_numba(hm, gt, protocol, threshold)
    hm, gt = _as_tensor(heatmaps), _as_tensor(gt_maps)
    _check_batch(tuple(hm.shape), tuple(gt.shape))
    if hm.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64, device=hm.device)
    hm = hm.detach().to(torch.float64)
    if not torch.isfinite(hm).all():
        raise ValueError("heatmaps contain NaN or inf; expected finite values")
    gt = gt.detach().to(hm.device)
    if not gt.is_floating_point():
        gt = gt.to(torch.float32)
    _check_gt_range(*torch.aminmax(gt), "gt_maps")
    return _ciou_torch(hm, gt, protocol, threshold)


def _check_batch(hm_shape: tuple, gt_shape: tuple) -> None:
    if len(hm_shape) != 3 or len(gt_shape) != 3 or hm_shape[0] != gt_shape[0]:
        raise ValueError(f"ciou_batch expects heatmaps (B,h,w) and gt_maps (B,H,W) with the same B, "
                         f"got {tuple(hm_shape)} and {tuple(gt_shape)}")
    if hm_shape[0] and (min(hm_shape[1:]) == 0 or min(gt_shape[1:]) == 0):
        raise ValueError("ciou_batch got empty heatmaps or gt maps")


# ----------------------------------------------------------------------------- summaries
def _as_array(cious) -> np.ndarray:
    if isinstance(cious, torch.Tensor):
        cious = cious.detach().cpu().numpy()
    a = np.asarray(cious, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("no cIoU values given")
    return a


def success_curve(cious) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds (21,), success rates (21,)): fraction of samples with cIoU >= 0.05*i."""
    a = _as_array(cious)
    x = np.array(AUC_THRESHOLDS)
    y = np.array([np.sum(a >= t) / a.size for t in AUC_THRESHOLDS])
    return x, y


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
