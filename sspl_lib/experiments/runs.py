"""A run folder and its files: config, checkpoints, history; the one loader of a trained run.

    <run>/config.json             the run's SSPLConfig (also inside every checkpoint)
    <run>/history.json, .csv      one record per epoch (train/val loss, val cIoU/AUC, lr, time)
    <run>/checkpoints/last.pt     the state after the last finished epoch (resume from here)
    <run>/checkpoints/best.pt     the state of the best validation epoch (model selection)
    <run>/figures/, <run>/tb/     history plots, TensorBoard event files

Every file is written atomically (a temporary file in the same folder, then `os.replace`): a reader, or a
run killed mid-write, never sees half a file. Checkpoints hold tensors and plain Python values only and are
read with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..config import SSPLConfig
from ..paths import resolve

CHECKPOINTS = ("best", "last")
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_ciou", "val_auc", "lr", "time")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, empty, not a checkpoint)."""


# ----------------------------------------------------------------------------- atomic files
def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """torch.save to `<path>.tmp`, then os.replace: readers never see a half-written file."""
    return _atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return _atomic(Path(path), lambda tmp: tmp.write_text(text))


def write_json(obj, path: str | os.PathLike) -> Path:
    return atomic_write_text(json.dumps(obj, indent=1) + "\n", path)


# ----------------------------------------------------------------------------- checkpoints
def load_state(path: str | os.PathLike, map_location="cpu", *, advice: str = "") -> dict:
    """A dict saved with torch.save, read safely (weights_only=True); an empty, truncated or foreign file raises
    CheckpointError naming it (and `advice`: what to do about it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    advice = f"; {advice}" if advice else ""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes; the run was probably killed while writing it){advice}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch's zip reader, EOFError, unpickling errors
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}){advice}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, expected a dict{advice}")
    return state


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A training checkpoint (`fit`'s layout: model, optimizer, scheduler, rng, epoch, best, history, config)."""
    path = Path(path)
    advice = ("delete it and resume from last.pt, or train afresh" if path.stem == "best" else
              f"resume cannot continue from it: evaluate {path.with_name('best.pt')} if it exists, or train afresh "
              f"(delete {path.name}, or start a new run folder)")
    state = load_state(path, map_location, advice=advice)
    if "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not an sspl training checkpoint (expected the keys 'model' and 'config', "
                              f"found {sorted(state)[:8]}); {advice}")
    return state


def rng_state() -> dict:
    """torch (CPU, CUDA), numpy and python RNG states as tensors and plain lists."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pstate, pgauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": [int(v) for v in pstate], "gauss": pgauss},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]][: torch.cuda.device_count()])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- history
def write_history(history: list[dict], run_dir: str | os.PathLike) -> None:
    """history.json (full records) and history.csv (the per-epoch columns), atomically."""
    run_dir = Path(run_dir)
    write_json(history, run_dir / "history.json")

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(history)

    _atomic(run_dir / "history.csv", write_csv)


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    path = resolve(run_dir) / "history.json"
    return json.loads(path.read_text()) if path.is_file() else []


# ----------------------------------------------------------------------------- a run folder
def profile_runs(profile: str, runs_dir="runs") -> Path:
    """The folder of a profile's runs and results: `<runs_dir>/<profile>` (relative: from the repository root)."""
    return resolve(runs_dir) / profile


def checkpoint_path(run_dir, which: str = "best") -> Path:
    return resolve(run_dir) / "checkpoints" / f"{which}.pt"


def is_run(run_dir) -> bool:
    """A folder with a trained checkpoint (best.pt or last.pt)."""
    return any(checkpoint_path(run_dir, w).is_file() for w in CHECKPOINTS)


def find_checkpoint(run_dir) -> Path:
    """`<run>/checkpoints/best.pt` (else last.pt); FileNotFoundError with the command that makes one."""
    for which in CHECKPOINTS:
        if checkpoint_path(run_dir, which).is_file():
            return checkpoint_path(run_dir, which)
    raise FileNotFoundError(f"{resolve(run_dir)}: no trained run here (no checkpoints/best.pt). Train one first: "
                            "`make reproduce`, notebooks/02_train.ipynb or "
                            "`python -m sspl_lib.experiments.train --profile quick --run-dir runs/quick/sspl`")


def is_complete(run_dir, epochs: int) -> bool:
    """best.pt exists and the history reached `epochs` (or stopped early by patience: `stopped` in the last record)."""
    hist = read_history(run_dir)
    done = len(hist) >= epochs or bool(hist and hist[-1].get("stopped"))
    return checkpoint_path(run_dir, "best").is_file() and done


def run_config(run_dir) -> SSPLConfig | None:
    path = resolve(run_dir) / "config.json"
    return SSPLConfig.load(path) if path.is_file() else None


def load_run(run_dir, which: str = "best", device="cpu"):
    """The `SSPL` model of a run folder's `checkpoints/<which>.pt` (config inside the checkpoint), eval mode.
    Weights come from the checkpoint only (no pretrained files are read)."""
    from ..methods.registry import build_model

    path = checkpoint_path(run_dir, which)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint (train the run first, e.g. notebooks/02_train.ipynb)")
    state = load_checkpoint(path, map_location=device)
    cfg = SSPLConfig.from_dict(state["config"])
    model = build_model(cfg.replace(pretrained=False, encoders_checkpoint=None))
    model.load_state_dict(state["model"])
    model.cfg = cfg
    return model.to(device).eval()
