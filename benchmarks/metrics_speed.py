"""Throughput of cIoU + AUC: per-sample numpy loop (official-style) vs scalar ``ciou`` vs ``ciou_batch``.

Run from the repo root: ``python -m benchmarks.metrics_speed --n 2048 --batch 256 --threads 2``;
``--old REV`` also times ``ciou_batch`` of sspl_lib/metrics.py at git revision REV (same process).
All rows are run ``--rounds`` times interleaved; the best wall rate and the rate per CPU-second of
each are printed (the CPU figure is less sensitive to other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sspl_lib import metrics as M


def _axis(n_in: int, n_out: int) -> np.ndarray:
    """(n_out,n_in) half-pixel bilinear weights (cv2 INTER_LINEAR; cv2 is not installed here)."""
    d = np.arange(n_out)
    src = np.maximum((d + 0.5) * n_in / n_out - 0.5, 0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.where(i0 < n_in - 1, src - i0, 0.0)
    w = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(w, (d, i0), 1 - lam)
    np.add.at(w, (d, i1), lam)
    return w


def official_loop(heatmaps: np.ndarray, gts: np.ndarray, thres: float = 0.5) -> list[float]:
    """Per-sample procedure of the official eval_cal_ciou (resize, normalize_img, threshold, cIoU)."""
    wy, wx = _axis(heatmaps.shape[1], gts.shape[1]), _axis(heatmaps.shape[2], gts.shape[2])
    out = []
    for hm, gt in zip(heatmaps, gts):
        m = wy @ hm @ wx.T  # stands in for cv2.resize(..., INTER_LINEAR)
        m = (m - np.min(m)) / np.ptp(m)
        infer = np.zeros(gt.shape)
        infer[m >= thres] = 1
        out.append(np.sum(infer * gt) / (np.sum(gt) + np.sum(infer * (gt == 0))))
    return out


def _load_old(rev: str):
    """sspl_lib/metrics.py at git revision ``rev`` as a separate module."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{rev}:sspl_lib/metrics.py"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "metrics_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("metrics_old", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["metrics_old"] = mod
    spec.loader.exec_module(mod)
    return mod


def _time(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1024, help="number of maps")
    ap.add_argument("--batch", type=int, default=256, help="batch size of ciou_batch")
    ap.add_argument("--size", type=int, default=14, help="heatmap side")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (best one kept)")
    ap.add_argument("--old", default="", help="git revision whose ciou_batch is timed too (e.g. HEAD~1)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    hm = rng.normal(size=(args.n, args.size, args.size)).astype(np.float32)
    gt = np.zeros((args.n, 224, 224), dtype=np.float32)
    for k, (x0, y0) in enumerate(rng.integers(0, 150, (args.n, 2))):
        gt[k, y0:y0 + 70, x0:x0 + 70] = 1
    hm_t, gt_t = torch.from_numpy(hm), torch.from_numpy(gt)
    print(f"{args.n} maps {args.size}x{args.size} -> 224x224, batch {args.batch}, torch threads {torch.get_num_threads()}")

    def batched(protocol):
        c = torch.cat([M.ciou_batch(hm_t[i:i + args.batch], gt_t[i:i + args.batch], protocol)
                       for i in range(0, args.n, args.batch)])
        return M.summarize(c)

    def batched_old(protocol):
        c = torch.cat([old.ciou_batch(hm_t[i:i + args.batch], gt_t[i:i + args.batch], protocol)
                       for i in range(0, args.n, args.batch)])
        return M.summarize(c)

    for p in M.PROTOCOLS:  # warm-up (numba compilation / cache load)
        M.ciou_batch(hm_t[:8], gt_t[:8], p)
    rows = [("(a) numpy per-sample loop (official-style)", lambda: M.summarize(official_loop(hm, gt))),
            ("(b) scalar ciou, fixed", lambda: M.summarize([M.ciou(hm[i], gt[i]) for i in range(args.n)])),
            ("(c) ciou_batch, fixed", lambda: batched("fixed")),
            ("(c) ciou_batch, median", lambda: batched("median"))]
    if args.old:
        old = _load_old(args.old)
        rows += [(f"(d) ciou_batch @{args.old}, fixed", lambda: batched_old("fixed")),
                 (f"(d) ciou_batch @{args.old}, median", lambda: batched_old("median"))]
    best = {name: (0.0, 0.0) for name, _ in rows}
    for _ in range(args.rounds):
        for name, fn in rows:
            w, c = _time(fn)
            best[name] = (max(best[name][0], args.n / w), max(best[name][1], args.n / max(c, 1e-9)))
    base_w, base_c = best[rows[0][0]]
    print(f"{'':45s} {'wall maps/s':>12s} {'(ratio)':>8s} {'maps/CPU-s':>12s} {'(ratio)':>8s}")
    for name, (w, c) in best.items():
        print(f"{name:45s} {w:12.0f} {w / base_w:7.1f}x {c:12.0f} {c / base_c:7.1f}x")


if __name__ == "__main__":
    main()
