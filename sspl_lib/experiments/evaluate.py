"""Evaluation of a trained model or a baseline prior on a whole split: heatmaps -> cIoU (both protocols),
AUC, curves; audio controls; the swap and extended splits' scores (docs/experiments.md)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import av_metrics, metrics, perf
from ..audio import silent_examples
from ..baselines import center_prior, feature_l2norm, uniform_random, whole_image
from ..data.gt import gt_maps_for_split, load_id_list, load_vggss_annotations
from ..data.h5 import open_h5
from ..data.testset import GT_SIZE, TestSet, load_test_set
from ..data.transforms import eval_frame
from ..paths import SHARED_METADATA, resolve
from .features import SharedFeatures

AUDIO_MODES = ("matched", "shuffled", "silent")
LISTEN_SPLITS = ("swap", "extended")  # the audio-dependence splits: <name>.h5 in a data root

# ----------------------------------------------------------------------------- audio controls
def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A permutation p of range(n) without a fixed point (a random n-cycle): sample i hears sample p[i]."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 samples, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    p = np.empty(n, dtype=np.int64)
    p[order] = np.roll(order, -1)  # order[k] -> order[k+1]: one n-cycle, no fixed point
    return p


# ----------------------------------------------------------------------------- scoring
def _protocols(protocol) -> tuple[str, ...]:
    ps = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    for p in ps:
        if p not in metrics.PROTOCOLS:
            raise ValueError(f"unknown protocol {p!r} (choose from {metrics.PROTOCOLS})")
    return ps


def score_heatmaps(heatmaps: torch.Tensor, data: TestSet, protocol=("fixed", "median"),
                   batch_size: int = 256) -> dict:
    """Per-sample cIoU (float64 arrays), summaries and success curves of heatmaps (N,h,w) on `data`."""
    ps = _protocols(protocol)
    cious = {p: [] for p in ps}
    for s in range(0, data.n, batch_size):
        gt = data.gt_maps(s, s + batch_size)
        hm = heatmaps[s:s + batch_size]
        for p in ps:
            cious[p].append(metrics.ciou_batch(hm, gt, protocol=p).cpu().numpy())
    cious = {p: np.concatenate(v) if v else np.zeros(0) for p, v in cious.items()}
    rows, extra = data.rows, {}
    if "visible" in rows:  # extended split: cIoU of the visible clips; AP / max-F1 over all
        vis = rows["visible"].astype(bool)
        cious = {p: np.where(vis, c, np.nan) for p, c in cious.items()}
        extra = av_metrics.extended_scores(heatmaps, vis, cious)
        extra |= {k: extra["extended"]["fixed" if "fixed" in ps else ps[0]][k] for k in ("ap", "max_f1")}
    if "scene" in rows:
        extra = av_metrics.swap_scores(heatmaps, rows["all_boxes"], rows["object"], rows["scene"])
    scored = {p: c[np.isfinite(c)] for p, c in cious.items()}
    return {"cious": cious,
            "summary": {p: metrics.summarize(c) for p, c in scored.items()},
            "curves": {p: metrics.success_curve(c) for p, c in scored.items()}, **extra}


@torch.inference_mode()
def compute_heatmaps(model, data: TestSet, *, batch_size: int = 64, device="cpu", audio: str = "matched",
                     seed: int = 0, amp: str = "none", shared: SharedFeatures | None = None,
                     method=None) -> tuple[torch.Tensor, np.ndarray | None]:
    """Heatmaps (N,h,w) of a whole split, batched, and the audio permutation; `shared`: the split's
    encoder outputs reused across models; `method`: whose test-time map (default the model's)."""
    if audio not in AUDIO_MODES:
        raise ValueError(f"audio must be one of {AUDIO_MODES}, got {audio!r}")
    device = torch.device(device)
    perf.amp_dtype(device, amp)  # a bad mode fails here, not after the first batch
    was = model.training
    model.eval()
    img = model.cfg.img_size
    perm = derangement(data.n, seed) if audio == "shuffled" else None
    method = method or model.method
    out = []
    if shared is not None:  # the encoders' outputs of this split, computed once for every model that shares them
        shared.check(data, batch_size, device, amp)
        pairs = zip(shared.visual(model), shared.audio(model, audio, perm, seed))
        with perf.autocast(device, amp):
            out = [method.heatmap(model, v, emb).float().cpu() for v, emb in pairs]
    else:
        for s in range(0, data.n, batch_size):
            idx = np.arange(s, min(s + batch_size, data.n))
            frames = eval_frame(torch.from_numpy(data.frames[idx]).to(device), img)
            sp = data.spects_heard(idx, audio, perm)
            with perf.autocast(device, amp):
                out.append(model.heatmap(frames, sp.to(device), method).float().cpu())
    model.train(was)
    return (torch.cat(out) if out else torch.zeros(0, 1, 1)), perm


def evaluate_model(model, split_path, *, batch_size: int = 64, device="cpu", protocol=("fixed", "median"),
                   audio: str = "matched", seed: int = 0, gt="auto", limit: int = 0, data: TestSet | None = None,
                   amp: str = "none", shared: SharedFeatures | None = None, method=None) -> dict:
    """`model` on a split (path, `TestSet` via `data=`, or a real test Dataset) with `method`'s test-time
    map: {"split", "audio", "n", "ids", "index", "heatmaps", "perm", "cious", "summary", "curves", "seconds"}."""
    if isinstance(split_path, torch.utils.data.Dataset):  # a reader of a real layout (FlickrTest, VGGSSTest)
        return _evaluate_dataset(model, split_path, batch_size=batch_size, device=device, protocol=protocol,
                                audio=audio, seed=seed, limit=limit, amp=amp, method=method)
    t0 = time.perf_counter()
    data = data if data is not None else load_eval_split(split_path, gt=gt, limit=limit)
    hm, perm = compute_heatmaps(model, data, batch_size=batch_size, device=device, audio=audio, seed=seed, amp=amp,
                                shared=shared, method=method)
    res = score_heatmaps(hm, data, protocol)
    return {"split": data.name, "audio": audio, "n": data.n, "ids": data.ids, "index": data.index,
            "heatmaps": hm, "perm": perm, **res, "seconds": time.perf_counter() - t0}


@torch.inference_mode()
def _evaluate_dataset(model, dataset, *, batch_size: int = 64, device="cpu", protocol=("fixed", "median"),
                     audio: str = "matched", seed: int = 0, limit: int = 0, workers: int = 0, amp: str = "none",
                     method=None) -> dict:
    """`evaluate_model` on a Dataset of {"frame", "spect", "gt", "id"} items (`data.real` test readers)."""
    if audio not in AUDIO_MODES:
        raise ValueError(f"audio must be one of {AUDIO_MODES}, got {audio!r}")
    t0, device, ps = time.perf_counter(), torch.device(device), _protocols(protocol)
    perf.amp_dtype(device, amp)  # a bad mode fails here
    n = min(len(dataset), limit) if limit else len(dataset)
    perm = derangement(n, seed) if audio == "shuffled" else None
    silent = silent_examples() if audio == "silent" else None
    subset = torch.utils.data.Subset(dataset, range(n))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers)
    was = model.training
    model.eval()
    hms, cious, ids, start = [], {p: [] for p in ps}, [], 0
    for item in loader:
        b = len(item["frame"])
        if audio == "matched":
            sp = item["spect"]
        elif audio == "shuffled":
            sp = torch.stack([torch.as_tensor(dataset[int(j)]["spect"]) for j in perm[start:start + b]])
        else:
            sp = silent.expand(b, *silent.shape)
        with perf.autocast(device, amp):
            hm = model.heatmap(item["frame"].to(device), sp.to(device), method).float().cpu()
        for p in ps:
            cious[p].append(metrics.ciou_batch(hm, item["gt"], protocol=p).numpy())
        hms.append(hm)
        ids += [str(i) for i in item["id"]]
        start += b
    model.train(was)
    cious = {p: np.concatenate(v) for p, v in cious.items()}
    return {"split": type(dataset).__name__, "audio": audio, "n": n, "ids": ids, "index": np.arange(n),
            "heatmaps": torch.cat(hms), "perm": perm, "cious": cious,
            "summary": {p: metrics.summarize(c) for p, c in cious.items()},
            "curves": {p: metrics.success_curve(c) for p, c in cious.items()}, "seconds": time.perf_counter() - t0}


BASELINES = ("center_prior", "whole_image", "feature_l2norm", "random")


def load_eval_split(split_path, *, gt="auto", limit: int = 0) -> TestSet:
    """`load_test_set`, keeping the clips without a visible source on the extended split (a `visible` field)."""
    with open_h5(resolve(split_path)) as f:
        every = "visible" in f
    return load_test_set(split_path, gt=gt, limit=limit, sounding_only=not every)


@torch.inference_mode()
def baseline_heatmaps(name: str, data: TestSet, *, size: int = 14, seed: int = 0, model=None, batch_size: int = 64,
                      device="cpu") -> torch.Tensor:
    """(N,h,w) maps of a baseline; "feature_l2norm" needs `model` (its frozen visual encoder)."""
    if name == "center_prior":
        return center_prior(data.n, size)
    if name == "whole_image":
        return whole_image(data.n, size)
    if name == "random":
        return uniform_random(data.n, size, seed=seed)
    if name != "feature_l2norm":
        raise ValueError(f"unknown baseline {name!r} (choose from {BASELINES})")
    if model is None:
        raise ValueError("baseline 'feature_l2norm' needs model= (a trained run's model: its frozen visual encoder)")
    device = torch.device(device)
    out = [feature_l2norm(model, eval_frame(torch.from_numpy(data.frames[s:s + batch_size]).to(device),
                                            model.cfg.img_size)).cpu() for s in range(0, data.n, batch_size)]
    return torch.cat(out) if out else torch.zeros(0, size, size)


def evaluate_baseline(name: str, split_path=None, *, size: int = 14, protocol=("fixed", "median"), seed: int = 0,
                      gt="auto", limit: int = 0, data: TestSet | None = None, model=None, batch_size: int = 64,
                      device="cpu") -> dict:
    """A baseline (`BASELINES`; "feature_l2norm" needs `model=`) on a test split; same keys as `evaluate_model`."""
    t0 = time.perf_counter()
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r} (choose from {BASELINES})")
    data = data if data is not None else load_eval_split(split_path, gt=gt, limit=limit)
    hm = baseline_heatmaps(name, data, size=size, seed=seed, model=model, batch_size=batch_size, device=device)
    res = score_heatmaps(hm, data, protocol)
    return {"split": data.name, "audio": None, "n": data.n, "ids": data.ids, "index": data.index, "heatmaps": hm,
            "perm": None, **res, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- real benchmark
def vggss_center_prior(metadata_dir=None, *, size: int = 14, protocol=("fixed", "median"),
                       batch_size: int = 512) -> dict | None:
    """The centre prior on the real VGG-SS test boxes, both protocols; None without the metadata."""
    d = Path(metadata_dir) if metadata_dir is not None else SHARED_METADATA
    js, csv = d / "vggss_test_5158.json", d / "vggss_test_4692.csv"
    if not (js.is_file() and csv.is_file()):
        return None
    table, ids = load_vggss_annotations(js), load_id_list(csv)
    ps = _protocols(protocol)
    cious = {p: [] for p in ps}
    with warnings.catch_warnings(record=True) as clipped:  # boxes clipped or empty at 224 px, as the benchmark does
        warnings.simplefilter("always")
        for s in range(0, len(ids), batch_size):
            gt = torch.from_numpy(gt_maps_for_split(ids[s:s + batch_size], vggss=table, size=GT_SIZE))
            hm = center_prior(len(gt), size)
            for p in ps:
                cious[p].append(metrics.ciou_batch(hm, gt, protocol=p).numpy())
    cious = {p: np.concatenate(v) for p, v in cious.items()}
    return {"n": len(ids), "cious": cious, "summary": {p: metrics.summarize(c) for p, c in cious.items()},
            "clipped_warnings": len(clipped)}


# ----------------------------------------------------------------------------- a profile's runs
def find_test_splits(data_root) -> dict[str, Path]:
    """{short name: file} of a data root's test splits: test_<name>.h5 -> name, test.h5 -> "test"."""
    root = resolve(data_root)
    found = {p.stem[5:] or "test": p for p in sorted(root.glob("test_*.h5"))}
    if (root / "test.h5").is_file():
        found["test"] = root / "test.h5"
    order = {"single": 0, "multi": 1}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], 2), kv[0])))


def find_listen_splits(data_root) -> dict[str, Path]:
    root = resolve(data_root)
    return {s: root / f"{s}.h5" for s in LISTEN_SPLITS if (root / f"{s}.h5").is_file()}
