"""A run folder (docs/experiments.md): its config, checkpoints and history, and the one loader of a
trained run. Nothing here deletes a run."""

from __future__ import annotations

import csv
import io
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, SSPLConfig, changed_fields
from ..paths import resolve
from .atomic import atomic_save, atomic_write_text, write_json

CHECKPOINTS = ("best", "last")
RUN_FILES = ("config.json", "inputs.json", "history.json", "history.csv", "last.pt", "best.pt", "encoders.pt")
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_ciou", "val_auc", "lr", "time")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, empty, not a checkpoint)."""


# ----------------------------------------------------------------------------- temporaries
def remove_temporaries(run_dir) -> list[Path]:
    """Delete what killed writers left (call it holding the folder's lock); returns the paths."""
    run_dir = resolve(run_dir)
    found = [p for d in (run_dir, run_dir / "checkpoints") if d.is_dir() for p in d.iterdir()
             if p.name.endswith(".tmp") and any(p.name.startswith(f".{n}.") or p.name == f"{n}.tmp" for n in RUN_FILES)]
    for p in found:
        p.unlink(missing_ok=True)
    return found


# ----------------------------------------------------------------------------- checkpoints
def load_state(path: str | os.PathLike, map_location="cpu", *, advice: str = "") -> dict:
    """A dict saved with torch.save, read with weights_only=True; a bad file raises CheckpointError naming it."""
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
    advice = ("resume the training (--resume): it rewrites best.pt from last.pt when last.pt is the best epoch"
              if path.stem == "best" else
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

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    atomic_write_text(buf.getvalue(), run_dir / "history.csv")


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    path = resolve(run_dir) / "history.json"
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({e}); resuming the training rewrites it from "
                              "checkpoints/last.pt") from None


def better(rec: dict, best: dict | None) -> bool:
    """Model selection: a higher validation cIoU, ties broken by AUC (the first such epoch is kept)."""
    return best is None or (rec["val_ciou"], rec["val_auc"]) > (best["val_ciou"], best["val_auc"])


def best_epoch(history: list[dict]) -> int | None:
    best = None
    for rec in history:
        best = rec if better(rec, best) else best
    return None if best is None else int(best["epoch"])


def restore_best(run_dir, state: dict) -> str | None:
    """On resume: best.pt (and the history) restored from last.pt when it can be; says what was done."""
    write_history(state["history"], run_dir)
    if state.get("best") is None:
        return None
    want, last = int(state["best"]["epoch"]), int(state["epoch"]) + 1
    path = checkpoint_path(run_dir, "best")
    try:
        have = int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]) + 1
        found = f"epoch {have}"
    except Exception as e:  # noqa: BLE001 - missing, empty, truncated: what it holds is told, then repaired
        have, found = None, ("no file" if not path.is_file() else f"an unreadable file ({type(e).__name__})")
    if have == want:
        return None
    if want == last:
        atomic_save(state, path)
        return f"{path}: held {found}, not the best epoch {want}; restored from last.pt (epoch {want})"
    return (f"{path}: holds {found} but the best validation epoch is {want}, whose weights are in no file (last.pt is "
            f"epoch {last}); best.pt is rewritten at the next better epoch. Until then evaluate last.pt explicitly "
            "(load_run(run, 'last')) or retrain the run in a new folder")


# ----------------------------------------------------------------------------- a run folder
def profile_runs(profile: str, runs_dir="runs") -> Path:
    return resolve(runs_dir) / profile


def checkpoint_path(run_dir, which: str = "best") -> Path:
    return resolve(run_dir) / "checkpoints" / f"{which}.pt"


def is_run(run_dir) -> bool:
    return any(checkpoint_path(run_dir, w).is_file() for w in CHECKPOINTS)


def holds_run(run_dir) -> bool:
    """A folder with a checkpoint or a history (one with only config.json holds nothing to lose)."""
    return is_run(run_dir) or bool((resolve(run_dir) / "history.json").is_file())


def is_complete(run_dir, epochs: int) -> bool:
    """best.pt exists and the history reached `epochs` (or stopped early by patience: `stopped` in the last record)."""
    hist = read_history(run_dir)
    done = len(hist) >= epochs or bool(hist and hist[-1].get("stopped"))
    return checkpoint_path(run_dir, "best").is_file() and done


def run_config(run_dir) -> SSPLConfig | None:
    path = resolve(run_dir) / "config.json"
    return SSPLConfig.load(path) if path.is_file() else None


def _no_checkpoint(path: Path) -> FileNotFoundError:
    last = path.with_name("last.pt")
    if path.stem == "best" and last.is_file():
        return FileNotFoundError(
            f"{path}: missing, while {last.name} exists (the run was interrupted before best.pt was written, or it "
            "was removed). Resume the training (fit(..., resume=True) / --resume; it restores best.pt when it can), "
            "or load last.pt explicitly: load_run(run, 'last')")
    return FileNotFoundError(f"{path}: no checkpoint. Train the run first: `make reproduce`, notebooks/02_train.ipynb "
                             "or `python -m sspl_lib.experiments.train --profile quick --run-dir runs/quick/sspl`")


def _check_origin(path: Path, cfg: SSPLConfig, state: dict, expect: dict | None) -> None:
    """A checkpoint agrees with its folder's config.json, its history (best.pt: the best epoch) and `expect`."""
    folder = path.parent.parent
    saved = run_config(folder)
    diff = changed_fields(cfg, saved, allow_longer=True) if saved is not None else []
    if diff:
        shown = ", ".join(f"{k}: {getattr(cfg, k)!r} vs {getattr(saved, k)!r}" for k in diff)
        raise CheckpointError(f"{path} and {folder / 'config.json'} disagree ({shown}): the checkpoint belongs to "
                              "another run (copied here?); use the run folder it was trained in")
    wrong = {k: v for k, v in (expect or {}).items() if getattr(cfg, k) != v}
    if wrong:
        shown = ", ".join(f"{k}={getattr(cfg, k)!r} (expected {v!r})" for k, v in wrong.items())
        raise CheckpointError(f"{path}: a run with {shown}, not the method its folder {folder.name!r} is for; "
                              "use the run folder it was trained in")
    want = best_epoch(read_history(folder)) if path.stem == "best" else None
    if want is not None and int(state["epoch"]) + 1 != want:
        raise CheckpointError(f"{path}: holds epoch {int(state['epoch']) + 1} but {folder / 'history.json'} names "
                              f"epoch {want} as the best validation epoch (a run killed between two writes): resume "
                              "the training (fit(..., resume=True) / --resume) to set it right")


def load_run(run_dir, which: str = "best", device="cpu", *, expect: dict | None = None):
    """The `SSPL` of a run's checkpoint, checked against its folder's config.json, history and `expect`."""
    from ..methods.registry import build_model

    path = checkpoint_path(run_dir, which)
    if not path.is_file():
        raise _no_checkpoint(path)
    state = load_checkpoint(path, map_location=device)
    try:
        cfg = SSPLConfig.from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its config is not valid here ({e})") from None
    _check_origin(path, cfg, state, expect)
    model = build_model(cfg.replace(pretrained=False, encoders_checkpoint=None))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its weights do not match its config ({str(e).splitlines()[0]} ...); the file "
                              "was edited, or written by another version of the model") from None
    model.cfg = cfg
    return model.to(device).eval()
