"""Evaluation of trained models and baselines on whole test splits: cIoU under both protocols, AUC,
success curves, audio controls (matched / shuffled / silent), per-sample arrays for figures.

    model = load_run("runs/quick/sspl")
    res = evaluate_model(model, "data/synthetic/quick/test_single.h5", batch_size=64, device="cpu")
    res["summary"]["fixed"]  # {"ciou": fraction >= 0.5, "auc": ..., "n": ...}

Ground truth of a split (`gt=`): "auto" uses a stored `gt` dataset (packed real test sets), else the
sounding object's `boxes` (synthetic; VGG-SS rules); or a folder of `<id>.xml` (Flickr consensus) or a
VGG-SS JSON file. Samples without a sounding object (`label` < 0) are left out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import metrics, perf
from .audio import CLIP_SAMPLES, vggish_examples
from .baselines import center_prior, uniform_random
from .data.gt import fill_boxes, gt_maps_for_split, load_id_list, load_vggss_annotations, vggss_box_pixels
from .data.h5 import load_split, open_h5
from .data.transforms import eval_frame
from .paths import SHARED_METADATA, resolve

AUDIO_MODES = ("matched", "shuffled", "silent")
GT_SIZE = 224
MODELS = ("sspl", "sspl_wo_pcm", "center_prior", "random", "sspl_shuffled_audio")


# ----------------------------------------------------------------------------- audio controls
def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A permutation p of range(n) with p[i] != i for every i (n >= 2): a random cycle through all samples,
    fixed by `seed`. Sample i gets the audio of sample p[i]."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 samples, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    p = np.empty(n, dtype=np.int64)
    p[order] = np.roll(order, -1)  # order[k] -> order[k+1]: one n-cycle, no fixed point
    return p


def silent_spect() -> torch.Tensor:
    """Log-mel examples (3,96,64) of a zero waveform of one clip (3 s at 16 kHz)."""
    return vggish_examples(np.zeros(CLIP_SAMPLES, dtype=np.float32))


# ----------------------------------------------------------------------------- test sets
@dataclass
class TestSet:
    """An annotated split in memory (sounding samples only). Gt maps are built per batch (`gt_maps`)."""

    path: Path
    frames: np.ndarray  # uint8 (N,S,S,3)
    spects: np.ndarray  # float32 (N,3,96,64)
    ids: list
    index: np.ndarray  # rows of the file
    boxes: np.ndarray | None = None  # (N,M,4) normalized, NaN padded (for drawing)
    _gt_stored: bool = False  # read the file's `gt` rows per batch
    _vggss: dict | None = None
    _flickr_dir: Path | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.index)

    @property
    def name(self) -> str:
        return self.path.stem

    def gt_maps(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """(stop-start, 224, 224) float32 gt maps of samples [start, stop)."""
        sl = slice(start, self.n if stop is None else stop)
        if self._gt_stored:
            with open_h5(self.path) as f:
                rows = self.index[sl]
                g = f["gt"][rows] if len(rows) else np.zeros((0, GT_SIZE, GT_SIZE), np.float32)
        elif self._flickr_dir is not None:
            g = gt_maps_for_split(self.ids[sl], flickr_dir=self._flickr_dir, size=GT_SIZE)
        elif self._vggss is not None:
            g = gt_maps_for_split(self.ids[sl], vggss=self._vggss, size=GT_SIZE)
        else:  # one box each (the sounding object): VGG-SS rules
            b = self.boxes[sl, 0]
            g = fill_boxes(vggss_box_pixels(b, GT_SIZE), GT_SIZE)
        return torch.as_tensor(np.asarray(g, dtype=np.float32))


def load_test_set(split_path, *, gt="auto", limit: int = 0) -> TestSet:
    """Read a packed test split. `gt`: "auto" | folder of Flickr XML files | VGG-SS JSON path."""
    path = resolve(split_path)
    with open_h5(path) as f:
        keys = set(f.keys())
    want = [k for k in ("frames", "spects", "ids", "label", "boxes", "all_boxes", "gt") if k in keys]
    d = load_split(path, [k for k in want if k != "gt"])
    keep = np.arange(len(d["frames"]))
    if "label" in d:
        keep = keep[d["label"] >= 0]
    if limit:
        keep = keep[:limit]
    ids = [d["ids"][i] for i in keep] if "ids" in d else [str(i) for i in keep]
    boxes = None
    if "boxes" in d:
        boxes = d["boxes"][keep][:, None, :]
    ts = TestSet(path=path, frames=d["frames"][keep], spects=d["spects"][keep].astype(np.float32), ids=ids,
                 index=keep, boxes=boxes, attrs=d["attrs"])
    if gt == "auto":
        if "gt" in keys:
            ts._gt_stored = True
        elif boxes is None:
            raise ValueError(f"{path}: no `gt` or `boxes` dataset; pass gt=<xml folder | VGG-SS json>")
    else:
        src = resolve(gt)
        if src.is_dir():
            ts._flickr_dir = src
        else:
            ts._vggss = load_vggss_annotations(src)
    return ts


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
    return {"cious": cious,
            "summary": {p: metrics.summarize(c) for p, c in cious.items()},
            "curves": {p: metrics.success_curve(c) for p, c in cious.items()}}


@torch.inference_mode()
def compute_heatmaps(model, data: TestSet, *, batch_size: int = 64, device="cpu", audio: str = "matched",
                     seed: int = 0, amp: str = "none") -> tuple[torch.Tensor, np.ndarray | None]:
    """Heatmaps (N,h,w) float32 on the CPU for the whole split, batched; returns (heatmaps, audio permutation).
    `amp`: "none" (float32, the reported numbers), "bf16" or "auto" (`perf.autocast`; 2-3x faster on CPU,
    heatmaps within ~2e-2 of float32, the same cIoU on the quick benchmark: benchmarks/README.md)."""
    if audio not in AUDIO_MODES:
        raise ValueError(f"audio must be one of {AUDIO_MODES}, got {audio!r}")
    device = torch.device(device)
    perf.amp_dtype(device, amp)  # a bad mode fails here, not after the first batch
    was = model.training
    model.eval()
    img = model.cfg.img_size
    perm = derangement(data.n, seed) if audio == "shuffled" else None
    silent = silent_spect()
    out = []
    for s in range(0, data.n, batch_size):
        idx = np.arange(s, min(s + batch_size, data.n))
        frames = eval_frame(torch.from_numpy(data.frames[idx]).to(device), img)
        if audio == "matched":
            sp = torch.from_numpy(data.spects[idx])
        elif audio == "shuffled":
            sp = torch.from_numpy(data.spects[perm[idx]])
        else:
            sp = silent.expand(len(idx), *silent.shape)
        with perf.autocast(device, amp):
            out.append(model.heatmap(frames, sp.to(device)).float().cpu())
    model.train(was)
    return (torch.cat(out) if out else torch.zeros(0, 1, 1)), perm


def evaluate_model(model, split_path, *, batch_size: int = 64, device="cpu", protocol=("fixed", "median"),
                   audio: str = "matched", seed: int = 0, gt="auto", limit: int = 0, data: TestSet | None = None,
                   amp: str = "none") -> dict:
    """Evaluate `model` (an `SSPL`) on a test split (path or a loaded `TestSet` via `data=`).

    Returns {"split", "audio", "n", "ids", "index", "heatmaps" (N,h,w) tensor, "perm" (shuffled audio),
    "cious": {protocol: (N,)}, "summary": {protocol: {"ciou","auc","n"}}, "curves": {protocol: (x, y)}, "seconds"}.
    """
    if isinstance(split_path, torch.utils.data.Dataset):  # a reader of a real layout (FlickrTest, VGGSSTest)
        return evaluate_dataset(model, split_path, batch_size=batch_size, device=device, protocol=protocol,
                                audio=audio, seed=seed, limit=limit, amp=amp)
    t0 = time.perf_counter()
    data = data if data is not None else load_test_set(split_path, gt=gt, limit=limit)
    hm, perm = compute_heatmaps(model, data, batch_size=batch_size, device=device, audio=audio, seed=seed, amp=amp)
    res = score_heatmaps(hm, data, protocol)
    return {"split": data.name, "audio": audio, "n": data.n, "ids": data.ids, "index": data.index,
            "heatmaps": hm, "perm": perm, **res, "seconds": time.perf_counter() - t0}


@torch.inference_mode()
def evaluate_dataset(model, dataset, *, batch_size: int = 64, device="cpu", protocol=("fixed", "median"),
                     audio: str = "matched", seed: int = 0, limit: int = 0, workers: int = 0, amp: str = "none") -> dict:
    """`evaluate_model` on a torch Dataset of eval items {"frame" (3,S,S) normalized at the model's img_size,
    "spect" (3,96,64), "gt" (224,224), "id"}: the real test readers `sspl_lib.data.real.FlickrTest(root,
    img_size=...)` (XML gt) and `VGGSSTest(root, img_size=...)` (JSON gt). Same keys as `evaluate_model`
    (no frames are kept)."""
    if audio not in AUDIO_MODES:
        raise ValueError(f"audio must be one of {AUDIO_MODES}, got {audio!r}")
    t0, device, ps = time.perf_counter(), torch.device(device), _protocols(protocol)
    perf.amp_dtype(device, amp)  # a bad mode fails here
    n = min(len(dataset), limit) if limit else len(dataset)
    perm = derangement(n, seed) if audio == "shuffled" else None
    silent = silent_spect()
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
            hm = model.heatmap(item["frame"].to(device), sp.to(device)).float().cpu()
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


BASELINES = ("center_prior", "random")


def evaluate_baseline(name: str, split_path=None, *, size: int = 14, protocol=("fixed", "median"), seed: int = 0,
                      gt="auto", limit: int = 0, data: TestSet | None = None) -> dict:
    """A model-free baseline ("center_prior" | "random") on a test split; same keys as `evaluate_model`."""
    t0 = time.perf_counter()
    data = data if data is not None else load_test_set(split_path, gt=gt, limit=limit)
    if name == "center_prior":
        hm = center_prior(data.n, size)
    elif name == "random":
        hm = uniform_random(data.n, size, seed=seed)
    else:
        raise ValueError(f"unknown baseline {name!r} (choose from {BASELINES})")
    res = score_heatmaps(hm, data, protocol)
    return {"split": data.name, "audio": None, "n": data.n, "ids": data.ids, "index": data.index, "heatmaps": hm,
            "perm": None, **res, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- real benchmark
def vggss_center_prior(metadata_dir=None, *, size: int = 14, protocol=("fixed", "median"),
                       batch_size: int = 512) -> dict | None:
    """The centre prior on the real VGG-SS boxes (4692 test ids of `vggss_test_4692.csv`, boxes from
    `vggss_test_5158.json`), both protocols: the number any learned method must beat. None when the
    metadata folder is absent."""
    d = Path(metadata_dir) if metadata_dir is not None else SHARED_METADATA
    js, csv = d / "vggss_test_5158.json", d / "vggss_test_4692.csv"
    if not (js.is_file() and csv.is_file()):
        return None
    table, ids = load_vggss_annotations(js), load_id_list(csv)
    ps = _protocols(protocol)
    cious = {p: [] for p in ps}
    for s in range(0, len(ids), batch_size):
        gt = torch.from_numpy(gt_maps_for_split(ids[s:s + batch_size], vggss=table, size=GT_SIZE))
        hm = center_prior(len(gt), size)
        for p in ps:
            cious[p].append(metrics.ciou_batch(hm, gt, protocol=p).numpy())
    cious = {p: np.concatenate(v) for p, v in cious.items()}
    return {"n": len(ids), "cious": cious, "summary": {p: metrics.summarize(c) for p, c in cious.items()}}


# ----------------------------------------------------------------------------- runs and results (moved to .results)
from .results import (best_worst, case_figure, evaluate_profile, load_run, pick_device,  # noqa: E402,F401
                      results_json, results_table, split_file, write_results, SPLITS)
