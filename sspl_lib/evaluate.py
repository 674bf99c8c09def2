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

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .audio import CLIP_SAMPLES, vggish_examples
from .baselines import center_prior, uniform_random
from .config import SSPLConfig
from .data.gt import fill_boxes, gt_maps_for_split, load_id_list, load_vggss_annotations, vggss_box_pixels
from .data.h5 import load_split, open_h5
from .data.transforms import eval_frame
from .paths import SHARED_METADATA, resolve

AUDIO_MODES = ("matched", "shuffled", "silent")
GT_SIZE = 224
MODELS = ("sspl", "sspl_wo_pcm", "center_prior", "random", "sspl_shuffled_audio")
SPLITS = {"single": "test_single", "multi": "test_multi"}


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
                     seed: int = 0) -> tuple[torch.Tensor, np.ndarray | None]:
    """Heatmaps (N,h,w) float32 on the CPU for the whole split, batched; returns (heatmaps, audio permutation)."""
    if audio not in AUDIO_MODES:
        raise ValueError(f"audio must be one of {AUDIO_MODES}, got {audio!r}")
    device = torch.device(device)
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
        out.append(model.heatmap(frames, sp.to(device)).float().cpu())
    model.train(was)
    return (torch.cat(out) if out else torch.zeros(0, 1, 1)), perm


def evaluate_model(model, split_path, *, batch_size: int = 64, device="cpu", protocol=("fixed", "median"),
                   audio: str = "matched", seed: int = 0, gt="auto", limit: int = 0, data: TestSet | None = None) -> dict:
    """Evaluate `model` (an `SSPL`) on a test split (path or a loaded `TestSet` via `data=`).

    Returns {"split", "audio", "n", "ids", "index", "heatmaps" (N,h,w) tensor, "perm" (shuffled audio),
    "cious": {protocol: (N,)}, "summary": {protocol: {"ciou","auc","n"}}, "curves": {protocol: (x, y)}, "seconds"}.
    """
    if isinstance(split_path, torch.utils.data.Dataset):  # a reader of a real layout (FlickrTest, VGGSSTest)
        return evaluate_dataset(model, split_path, batch_size=batch_size, device=device, protocol=protocol,
                                audio=audio, seed=seed, limit=limit)
    t0 = time.perf_counter()
    data = data if data is not None else load_test_set(split_path, gt=gt, limit=limit)
    hm, perm = compute_heatmaps(model, data, batch_size=batch_size, device=device, audio=audio, seed=seed)
    res = score_heatmaps(hm, data, protocol)
    return {"split": data.name, "audio": audio, "n": data.n, "ids": data.ids, "index": data.index,
            "heatmaps": hm, "perm": perm, **res, "seconds": time.perf_counter() - t0}


@torch.inference_mode()
def evaluate_dataset(model, dataset, *, batch_size: int = 64, device="cpu", protocol=("fixed", "median"),
                     audio: str = "matched", seed: int = 0, limit: int = 0, workers: int = 0) -> dict:
    """`evaluate_model` on a torch Dataset of eval items {"frame" (3,S,S) normalized at the model's img_size,
    "spect" (3,96,64), "gt" (224,224), "id"}: the real test readers `sspl_lib.data.real.FlickrTest(root,
    img_size=...)` (XML gt) and `VGGSSTest(root, img_size=...)` (JSON gt). Same keys as `evaluate_model`
    (no frames are kept)."""
    if audio not in AUDIO_MODES:
        raise ValueError(f"audio must be one of {AUDIO_MODES}, got {audio!r}")
    t0, device, ps = time.perf_counter(), torch.device(device), _protocols(protocol)
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


# ----------------------------------------------------------------------------- runs
def load_run(run_dir, which: str = "best", device="cpu"):
    """The `SSPL` model of a run folder's `checkpoints/<which>.pt` (config inside the checkpoint), eval mode.
    Weights come from the checkpoint only (no pretrained files are read)."""
    from .model import SSPL

    path = resolve(run_dir) / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint (train the run first, e.g. notebooks/02_train.ipynb)")
    state = torch.load(path, map_location=device, weights_only=True)
    cfg = SSPLConfig.from_dict(state["config"])
    model = SSPL(cfg.replace(pretrained=False, encoders_checkpoint=None))
    model.load_state_dict(state["model"])
    model.cfg = cfg
    return model.to(device).eval()


def split_file(data_root, split: str) -> Path:
    """data_root/<test_single|test_multi|...>.h5; `split` may be a short name ("single", "multi")."""
    return resolve(data_root) / f"{SPLITS.get(split, split)}.h5"


def results_json(results: dict, protocols=("fixed", "median")) -> dict:
    """{model: {split: evaluate result}} -> {model: {split: {"ciou","auc","n"}}} (fixed protocol), plus
    `ciou_<protocol>`/`auc_<protocol>` keys for the other protocols."""
    out = {}
    for model, per_split in results.items():
        out[model] = {}
        for split, r in per_split.items():
            s = r["summary"]
            rec = {"ciou": float(s["fixed"]["ciou"]), "auc": float(s["fixed"]["auc"]), "n": int(s["fixed"]["n"])}
            for p in protocols:
                if p != "fixed" and p in s:
                    rec[f"ciou_{p}"], rec[f"auc_{p}"] = float(s[p]["ciou"]), float(s[p]["auc"])
            out[model][split] = rec
    return out


def write_results(results: dict, path) -> Path:
    path = resolve(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results_json(results), indent=1) + "\n")
    return path


def results_table(results: dict, protocols=("fixed", "median"), digits: int = 3) -> str:
    """A markdown table: one row per model, cIoU@0.5 and AUC per split and protocol."""
    splits = list(dict.fromkeys(s for r in results.values() for s in r))
    head = ["model"] + [f"{s} {m} ({p})" for s in splits for p in protocols for m in ("cIoU", "AUC")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, per in results.items():
        cells = [model]
        for s in splits:
            for p in protocols:
                sm = per[s]["summary"].get(p) if s in per else None
                cells += [f"{sm['ciou']:.{digits}f}", f"{sm['auc']:.{digits}f}"] if sm else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_worst(res: dict, k: int = 6, protocol: str = "fixed") -> tuple[np.ndarray, np.ndarray]:
    """Positions (into the result's arrays) of the k best and k worst samples by cIoU (stable order)."""
    c = res["cious"][protocol]
    order = np.argsort(-c, kind="stable")
    return order[:k], order[::-1][:k]


# ----------------------------------------------------------------------------- a profile's runs
def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate_profile(run_dir="runs/quick", data_root="data/synthetic/quick", *, models=None, splits=("single", "multi"),
                     batch_size: int = 100, device="auto", seed: int = 0, controls=("shuffled", "silent"),
                     protocol=("fixed", "median"), progress: bool = True) -> tuple[dict, dict]:
    """Every trained model of a profile folder, its audio controls and the baselines on the test splits.

    models: {name: run folder relative to run_dir} (default: sspl, sspl_wo_pcm; missing runs are skipped with a
    message). Returns (results {model: {split: evaluate result}}, test sets {split: TestSet}); the controls of
    the `sspl` model are named `sspl_<mode>_audio`."""
    run_dir, dev = resolve(run_dir), pick_device(device)
    models = {"sspl": "sspl", "sspl_wo_pcm": "sspl_wo_pcm"} if models is None else models
    data = {s: load_test_set(split_file(data_root, s)) for s in splits}
    loaded = {}
    for name, sub in models.items():
        try:
            loaded[name] = load_run(run_dir / sub, device=dev)
        except FileNotFoundError as e:
            print(f"[evaluate] {name}: skipped ({e})")
    results: dict = {}
    for s, d in data.items():
        for name, m in loaded.items():
            modes = ("matched",) + (tuple(controls) if name == "sspl" else ())
            for a in modes:
                key = name if a == "matched" else f"{name}_{a}_audio"
                results.setdefault(key, {})[s] = evaluate_model(m, None, data=d, batch_size=batch_size, device=dev,
                                                                protocol=protocol, audio=a, seed=seed)
        size = results[next(iter(loaded))][s]["heatmaps"].shape[-1] if loaded else 14  # the models' grid
        for b in BASELINES:
            results.setdefault(b, {})[s] = evaluate_baseline(b, data=d, size=size, protocol=protocol, seed=seed)
        if progress:
            print(f"[evaluate] {s}: {d.n} samples, {len(results)} models scored")
    order = [k for k in ("sspl", "sspl_wo_pcm", "center_prior", "random", "sspl_shuffled_audio", "sspl_silent_audio")
             if k in results]
    return {k: results[k] for k in order + [k for k in results if k not in order]}, data


def case_figure(res: dict, data: TestSet, k: int = 6, protocol: str = "fixed", title: str = ""):
    """Best and worst k samples of a result as heatmap overlays with the gt boxes (two rows)."""
    from .viz import case_grid

    best, worst = best_worst(res, k, protocol)
    pos = np.concatenate([best, worst])
    c = res["cious"][protocol]
    titles = [f"best {c[i]:.2f}" for i in best] + [f"worst {c[i]:.2f}" for i in worst]
    boxes = data.boxes[pos] if data.boxes is not None else None
    return case_grid(data.frames[pos], res["heatmaps"][pos].numpy(), boxes, titles, ncols=k, suptitle=title)
