"""Runs and their results: load a run's checkpoint, evaluate a profile's runs, results JSON, tables, case figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .config import SSPLConfig
from .paths import resolve

if TYPE_CHECKING:
    from .evaluate import TestSet

SPLITS = {"single": "test_single", "multi": "test_multi"}


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
    """"auto": CUDA when available, else CPU (the training code's rule)."""
    from .distributed import choose_device

    return choose_device(device)


def evaluate_profile(run_dir="runs/quick", data_root="data/synthetic/quick", *, models=None, splits=("single", "multi"),
                     batch_size: int = 100, device="auto", seed: int = 0, controls=("shuffled", "silent"),
                     protocol=("fixed", "median"), progress: bool = True) -> tuple[dict, dict]:
    """Every trained model of a profile folder, its audio controls and the baselines on the test splits.

    models: {name: run folder relative to run_dir} (default: sspl, sspl_wo_pcm; missing runs are skipped with a
    message). Returns (results {model: {split: evaluate result}}, test sets {split: TestSet}); the controls of
    the `sspl` model are named `sspl_<mode>_audio`."""
    from .evaluate import BASELINES, evaluate_baseline, evaluate_model, load_test_set

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
