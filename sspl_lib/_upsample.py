"""Exact-by-construction bilinear upsampling and the fused cIoU kernel behind ``metrics.ciou_batch``.

Upsampled values are *defined* as two separable passes in float64, width first, each output being
``(w0 * a) + (w1 * b)`` with two correctly rounded products and one correctly rounded sum (no FMA):

    T[r, x] = H[r, ix0[x]] * wx0[x] + H[r, ix1[x]] * wx1[x]      (h, W)
    U[y, x] = T[iy0[y], x] * wy0[y] + T[iy1[y], x] * wy1[y]      (H, W)

with OpenCV ``INTER_LINEAR`` / ``align_corners=False`` indices and weights (half-pixel centres,
edge clamp). numpy, torch and the numba kernel below evaluate exactly these IEEE operations, so
they agree bit for bit. For float32 heatmaps and power-of-two scales (14 -> 224: weights k/32)
every product and sum above is exact in float64 unless the map spans more than ~2^20 in
magnitude, i.e. U is then the mathematically exact bilinear interpolation (and symmetric maps
stay exactly symmetric).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

try:  # numba ships with librosa (a pinned dependency); without it metrics falls back to torch
    import numba
except ImportError:  # pragma: no cover - exercised through metrics._USE_NUMBA = False
    numba = None


@functools.lru_cache(maxsize=64)
def axis_weights(n_in: int, n_out: int):
    """(i0, i1, w0, w1) for one axis, numpy int64/float64 of length n_out (read-only, cached)."""
    d = np.arange(n_out, dtype=np.float64)
    src = np.maximum((d + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.where(i0 < n_in - 1, src - i0, 0.0)
    w0 = 1.0 - w1
    for a in (i0, i1, w0, w1):
        a.setflags(write=False)
    return i0, i1, w0, w1


@functools.lru_cache(maxsize=64)
def axis_edges(n_in: int, n_out: int) -> np.ndarray:
    """Output indices that start or end a run of equal source pairs (i0, i1) on one axis (int64).

    Within a run the upsampled value is linear in the weight, so over a rectangle of runs (a source
    cell) the bilinear values are extreme at the run ends: the map's min and max are among the values
    at (edge row, edge column), about 1/64 of the pixels for 14 -> 224."""
    i0, i1, _, _ = axis_weights(n_in, n_out)
    change = np.flatnonzero((np.diff(i0) != 0) | (np.diff(i1) != 0))
    edges = np.unique(np.concatenate([[0, n_out - 1], change, change + 1])).astype(np.int64)
    edges.setflags(write=False)
    return edges


def upsample_np(hm: np.ndarray, size) -> np.ndarray:
    """(h,w) -> (H,W) float64 by the definition above (numpy)."""
    hm = np.asarray(hm, dtype=np.float64)
    iy0, iy1, wy0, wy1 = axis_weights(hm.shape[0], size[0])
    ix0, ix1, wx0, wx1 = axis_weights(hm.shape[1], size[1])
    t = hm[:, ix0] * wx0 + hm[:, ix1] * wx1
    return t[iy0] * wy0[:, None] + t[iy1] * wy1[:, None]


def upsample_torch(hm: torch.Tensor, size) -> torch.Tensor:
    """(B,h,w) -> (B,H,W) float64 by the definition above (torch, any device)."""
    hm = hm.to(torch.float64)
    dev = dict(device=hm.device)
    iy0, iy1, wy0, wy1 = (torch.tensor(a, **dev) for a in axis_weights(hm.shape[1], size[0]))
    ix0, ix1, wx0, wx1 = (torch.tensor(a, **dev) for a in axis_weights(hm.shape[2], size[1]))
    t = hm[:, :, ix0] * wx0 + hm[:, :, ix1] * wx1
    return t[:, iy0] * wy0[:, None] + t[:, iy1] * wy1[:, None]


# ----------------------------------------------------------------------------- numba kernel
_HIST_BINS = 4096

if numba is not None:
    _jit = numba.njit(nogil=True, cache=True)

    @_jit
    def _norm(v, lo, hi):  # metrics._normalized_value for one float64
        ptp = hi - lo
        return 0.0 if ptp == 0 else (v - lo) / ptp

    @_jit
    def _key(fb, ib, v):  # metrics._ordered_key; fb/ib: a float64[1] buffer and its int64 view
        fb[0] = v
        i = ib[0]
        return i ^ 0x7FFFFFFFFFFFFFFF if i < 0 else i

    @_jit
    def _unkey(fb, ib, k):
        ib[0] = k ^ 0x7FFFFFFFFFFFFFFF if k < 0 else k
        return fb[0]

    @_jit
    def _raw_threshold(lo, hi, t, fb, ib):  # metrics.raw_threshold for one map, same bisection
        if _norm(hi, lo, hi) < t:
            return np.inf
        left, right = _key(fb, ib, lo) - 1, _key(fb, ib, hi)
        while right > left + 1:
            mid = (left & right) + ((left ^ right) >> 1)
            if _norm(_unkey(fb, ib, mid), lo, hi) >= t:
                right = mid
            else:
                left = mid
        return _unkey(fb, ib, right)

    @_jit
    def _kth(u, k, lo, hi, hist, cand):
        """k-th smallest (0-based) of u (1-D), lo/hi its min/max: monotone histogram, sort one bin."""
        if hi == lo:
            return lo
        nb = hist.size
        scale = nb / (hi - lo)
        if not np.isfinite(scale):  # subnormal range: plain sort
            return np.sort(u)[k]
        hist[:] = 0
        for v in u:  # bin(v) is monotone non-decreasing in v, so bins split the order exactly
            hist[min(int((v - lo) * scale), nb - 1)] += 1
        below, j = 0, 0
        while below + hist[j] <= k:
            below += hist[j]
            j += 1
        m = 0
        for v in u:
            if min(int((v - lo) * scale), nb - 1) == j:
                cand[m] = v
                m += 1
        return np.sort(cand[:m])[k - below]

    @_jit
    def _t_rows(hm, ix0, ix1, wx0, wx1, t_):  # first (width) pass: t_ (h, W)
        for r in range(t_.shape[0]):
            for x in range(t_.shape[1]):
                t_[r, x] = hm[r, ix0[x]] * wx0[x] + hm[r, ix1[x]] * wx1[x]

    @_jit
    def _median_value(t_, iy0, iy1, wy0, wy1, k, lo, hi, hist, cand, full):
        """Value at ascending index k of U: pivots from a 1/256 subsample, one counting/collecting pass
        over U (recomputed), exact selection among the values between the pivots."""
        nh, nw = iy0.size, t_.shape[1]
        n = nh * nw
        sub = np.empty(((nh + 15) // 16) * ((nw + 15) // 16))
        i = 0
        for y in range(0, nh, 16):
            for x in range(0, nw, 16):
                sub[i] = t_[iy0[y], x] * wy0[y] + t_[iy1[y], x] * wy1[y]
                i += 1
        sub.sort()
        r = int(k / n * sub.size)
        d = max(4, sub.size // 16)
        p_lo, p_hi = sub[max(r - d, 0)], sub[min(r + d, sub.size - 1)]
        m, below = 0, 0
        for y in range(nh):
            a0, a1, r0, r1 = wy0[y], wy1[y], iy0[y], iy1[y]
            for x in range(nw):  # branch-free compaction (cand has n + 1 slots)
                v = t_[r0, x] * a0 + t_[r1, x] * a1
                cand[m] = v
                m += (v >= p_lo) & (v <= p_hi)
                below += v < p_lo
        if below <= k < below + m:  # the k-th value lies between the pivots (nearly always)
            c = cand[:m]
            return _kth(c, k - below, c.min(), c.max(), hist, full)
        for y in range(nh):  # fallback: the whole map
            for x in range(nw):
                full[y * nw + x] = t_[iy0[y], x] * wy0[y] + t_[iy1[y], x] * wy1[y]
        return _kth(full[:n], k, lo, hi, hist, cand)

    @_jit
    def _minmax(t_, iy0, iy1, wy0, wy1, ys, xs):  # min / max of the values at rows ys x columns xs
        lo, hi = np.inf, -np.inf
        for y in ys:
            a0, a1, r0, r1 = wy0[y], wy1[y], iy0[y], iy1[y]
            for x in xs:
                v = t_[r0, x] * a0 + t_[r1, x] * a1
                lo = min(lo, v)
                hi = max(hi, v)
        return lo, hi

    @_jit
    def _mask_stats(t_, g, iy0, iy1, wy0, wy1, tau, ai, ao, ag, mn, mx):
        """One pass over the full-resolution map: cIoU of mask = value >= tau against g (H,W), and the
        exact min / max of the values (to check the ones the threshold was derived from)."""
        ai[:] = 0.0
        ao[:] = 0.0
        ag[:] = 0.0
        mn[:] = np.inf
        mx[:] = -np.inf
        for y in range(g.shape[0]):
            a0, a1, r0, r1 = wy0[y], wy1[y], iy0[y], iy1[y]
            for x in range(g.shape[1]):
                v = t_[r0, x] * a0 + t_[r1, x] * a1
                gv = np.float64(g[y, x])
                m = v >= tau
                mn[x] = min(mn[x], v)
                mx[x] = max(mx[x], v)
                ag[x] += gv
                ai[x] += gv if m else 0.0
                ao[x] += 1.0 if (m and gv == 0) else 0.0
        union = ag.sum() + ao.sum()
        return ai.sum() / union if union > 0 else 0.0

    @_jit
    def ciou_kernel(hm, gt, iy0, iy1, wy0, wy1, ix0, ix1, wx0, wx1, ey, ex, median, thr, k, out):
        """hm (B,h,w) float64, gt (B,H,W) float -> out (B,) cIoU (see metrics.ciou_batch).

        Full-resolution values are never stored: each pass recomputes them from the (h, W) rows. The
        min / max come from the edge rows x edge columns (`axis_edges`); the cIoU pass also computes
        them over every pixel, and should rounding ever make the two differ, the pass is redone with the
        exact ones (so the result is that of a full min / max scan, by construction)."""
        nh, nw = gt.shape[1], gt.shape[2]
        t_ = np.empty((hm.shape[1], nw))
        mn, mx = np.empty(nw), np.empty(nw)
        ai, ao, ag = np.empty(nw), np.empty(nw), np.empty(nw)
        hist, cand, full = np.empty(_HIST_BINS, np.int64), np.empty(nh * nw + 1), np.empty(nh * nw + 1)
        fb = np.empty(1)
        ib = fb.view(np.int64)
        all_y, all_x = np.arange(nh), np.arange(nw)
        for b in range(hm.shape[0]):
            _t_rows(hm[b], ix0, ix1, wx0, wx1, t_)
            if median:  # the median's selection needs the exact range first
                lo, hi = _minmax(t_, iy0, iy1, wy0, wy1, all_y, all_x)
            else:
                lo, hi = _minmax(t_, iy0, iy1, wy0, wy1, ey, ex)
            for _ in range(2):
                t = thr
                if median:
                    t = _norm(_median_value(t_, iy0, iy1, wy0, wy1, k, lo, hi, hist, cand, full), lo, hi)
                tau = _raw_threshold(lo, hi, t, fb, ib)
                out[b] = _mask_stats(t_, gt[b], iy0, iy1, wy0, wy1, tau, ai, ao, ag, mn, mx)
                if mn.min() == lo and mx.max() == hi:
                    break
                lo, hi = mn.min(), mx.max()

    @_jit
    def upsample_nb(hm, iy0, iy1, wy0, wy1, ix0, ix1, wx0, wx1):  # for tests: the kernel's values
        t_ = np.empty((hm.shape[0], ix0.size))
        _t_rows(hm, ix0, ix1, wx0, wx1, t_)
        u = np.empty((iy0.size, ix0.size))
        for y in range(iy0.size):
            for x in range(ix0.size):
                u[y, x] = t_[iy0[y], x] * wy0[y] + t_[iy1[y], x] * wy1[y]
        return u
else:  # pragma: no cover
    ciou_kernel = upsample_nb = None
