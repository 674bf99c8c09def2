"""Training checkpoints: atomic writes, RNG states stored as tensors / plain lists (loadable with
`torch.load(..., weights_only=True)`), and the run-folder history files."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import numpy as np
import torch


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """torch.save to `<path>.tmp`, then os.replace: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint, safely (weights_only=True)."""
    return torch.load(path, map_location=map_location, weights_only=True)


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


HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_ciou", "val_auc", "lr", "time")


def write_history(history: list[dict], run_dir: str | os.PathLike) -> None:
    """history.json (full records) and history.csv (the per-epoch columns), atomically."""
    run_dir = Path(run_dir)
    atomic_write_text(json.dumps(history, indent=1) + "\n", run_dir / "history.json")
    tmp = run_dir / "history.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, run_dir / "history.csv")


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / "history.json"
    return json.loads(path.read_text()) if path.is_file() else []
