"""cIoU + AUC from heatmaps: the official evaluation loop against `ciou_batch` (and the reference `ciou`).

    python -m benchmarks.metrics_speed [--n 4096] [--batch 256] [--threads 2] [--rounds 7]
           [--official-src PATH --official-pkgs PATH] [--old REV]

Rows: (a) the official `eval_cal_ciou` (cv2 resize) + its sklearn AUC, imported from --official-src by
`benchmarks.official_side` (without it, `official_loop`: the same procedure with a numpy stand-in for
cv2.resize); (b) the reference `ciou`, one map at a time (on --n-scalar maps); (c) `ciou_batch`, fixed and
median protocol, --batch maps per call; (d) with --old REV, `ciou_batch` of sspl_lib at git revision REV.
The rows run interleaved --rounds times; printed per row: the min and median wall rate (maps/s), the median rate
per CPU-second, and the ratio of the median wall rates to (a); then the load average and the largest
|cIoU (c) - cIoU (a)|.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import torch

from sspl_lib import metrics as M

ROOT = Path(__file__).resolve().parents[1]


def _axis(n_in: int, n_out: int) -> np.ndarray:
    """(n_out,n_in) half-pixel bilinear weights (cv2 INTER_LINEAR), float32 as cv2 computes."""
    i0, i1, w0, w1 = M.axis_weights(n_in, n_out)
    w = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(w, (np.arange(n_out), i0), w0)
    np.add.at(w, (np.arange(n_out), i1), w1)
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


def old_metrics(rev: str):
    """sspl_lib.metrics at git revision `rev`, imported as the package `sspl_old` from a temporary folder."""
    tar = subprocess.run(["git", "archive", rev, "sspl_lib"], cwd=ROOT, check=True, capture_output=True).stdout
    tmp = Path(tempfile.mkdtemp(prefix="sspl_old_"))
    with tarfile.open(fileobj=BytesIO(tar)) as t:
        t.extractall(tmp, filter="data")
    (tmp / "sspl_lib").rename(tmp / "sspl_old")
    for f in (tmp / "sspl_old").rglob("*.py"):
        f.write_text(f.read_text().replace("sspl_lib", "sspl_old"))
    sys.path.insert(0, str(tmp))
    return importlib.import_module("sspl_old.metrics")


def random_inputs(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 heatmaps (n,size,size) and gt maps (n,224,224) with one random box each."""
    rng = np.random.default_rng(seed)
    hm = rng.normal(size=(n, size, size)).astype(np.float32)
    gt = np.zeros((n, 224, 224), np.float32)
    for k in range(n):
        x0, y0 = rng.integers(0, 112, 2)
        w, h = rng.integers(28, 112, 2)
        gt[k, y0:y0 + h, x0:x0 + w] = 1
    return hm, gt


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096, help="maps per timed repetition")
    ap.add_argument("--n-scalar", type=int, default=256, help="maps per repetition of the reference `ciou` row")
    ap.add_argument("--batch", type=int, default=256, help="maps per ciou_batch call")
    ap.add_argument("--size", type=int, default=14, help="heatmap side")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (ciou_batch uses as many)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved repetitions")
    ap.add_argument("--official-src", help="the official SSPL repository (its cv2-based eval_cal_ciou)")
    ap.add_argument("--official-pkgs", help="a pip --target folder with opencv-python-headless (and pandas)")
    ap.add_argument("--old", default="", help="git revision whose ciou_batch is timed too (e.g. main)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.official_pkgs:
        sys.path.append(str(Path(args.official_pkgs).resolve()))
    hm, gt = random_inputs(args.n, args.size)
    hm_t, gt_t = torch.from_numpy(hm), torch.from_numpy(gt)

    def batched(metrics, protocol):
        c = torch.cat([metrics.ciou_batch(hm_t[i:i + args.batch], gt_t[i:i + args.batch], protocol)
                       for i in range(0, args.n, args.batch)])
        return M.summarize(c), c.numpy()

    def run_official():
        c = np.asarray(official_loop(hm, gt))
        return M.summarize(c), c

    official = "numpy stand-in of the official loop (no --official-src)"
    if args.official_src:
        from benchmarks.official_side import Official

        off = Official(args.official_src, torch.device("cpu"), model=False)
        official = f"official eval_cal_ciou ({'cv2' if off.has_cv2 else 'numpy stand-in: cv2 missing'}) + AUC"
        run_official = lambda: (None, off.metric(hm, gt))  # noqa: E731
    k = args.n_scalar
    rows = {f"(a) {official}": (args.n, run_official),
            "(b) reference ciou, one map at a time": (k, lambda: M.summarize([M.ciou(hm[i], gt[i]) for i in range(k)])),
            "(c) ciou_batch, fixed": (args.n, lambda: batched(M, "fixed")),
            "(c) ciou_batch, median": (args.n, lambda: batched(M, "median"))}
    if args.old:
        old = old_metrics(args.old)
        rows[f"(d) ciou_batch @{args.old}, fixed"] = (args.n, lambda: batched(old, "fixed"))
        rows[f"(d) ciou_batch @{args.old}, median"] = (args.n, lambda: batched(old, "median"))
    outputs = {name: fn() for name, (_, fn) in rows.items()}  # warm-up (numba compiles or loads its cache)
    wall, cpu = {name: [] for name in rows}, {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, (n, fn) in rows.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(n / (time.perf_counter() - w))
            cpu[name].append(n / max(time.process_time() - c, 1e-9))
    print(f"{args.n} maps {args.size}x{args.size} -> 224x224, batch {args.batch}, {args.threads} threads, "
          f"{args.rounds} interleaved rounds; {os.cpu_count()} CPUs")
    base = statistics.median(wall[next(iter(rows))])
    print(f"{'':48s} {'wall maps/s: min':>17s} {'median':>8s} {'maps/CPU-s':>11s} {'vs (a)':>7s}")
    for name in rows:
        med = statistics.median(wall[name])
        print(f"{name[:48]:48s} {min(wall[name]):17.0f} {med:8.0f} {statistics.median(cpu[name]):11.0f} "
              f"{med / base:6.1f}x")
    diff = np.abs(outputs["(c) ciou_batch, fixed"][1] - np.asarray(outputs[next(iter(rows))][1])).max()
    print(f"load average {os.getloadavg()}; max |cIoU (c) fixed - (a)| over {args.n} maps: {diff:.1e}")
    if args.old:
        for p in M.PROTOCOLS:
            same = np.array_equal(outputs[f"(c) ciou_batch, {p}"][1], outputs[f"(d) ciou_batch @{args.old}, {p}"][1])
            print(f"{p}: ciou_batch now and @{args.old} give {'identical' if same else 'DIFFERENT'} values")


if __name__ == "__main__":
    main()
