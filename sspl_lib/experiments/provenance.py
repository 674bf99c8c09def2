"""Is a run folder the run a config asks for: the same, a longer schedule of it, or another run
(`RunConflict`)? Inputs are compared by fingerprint, so moved files are the same and changed data is not."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..config import LONGER, ConfigError, SSPLConfig, changed_fields
from ..data.h5 import DataFileError, open_h5
from ..paths import resolve
from . import runs
from .atomic import atomic_write_text, write_json

DATA_PATHS = ("data_root", "source_root", "assets")  # what the training reads is data_root's files only


class RunConflict(ValueError):
    """A run folder that holds another run than the one asked for (or an unreadable record of it)."""


# ----------------------------------------------------------------------------- fingerprints
def split_fingerprint(path: Path) -> str | None:
    """A split file's identity: shapes, dtypes, ids and three rows of frames and spects (None: unreadable)."""
    h = hashlib.sha1()
    try:
        with open_h5(path) as f:
            for k in sorted(f.keys()):
                h.update(f"{k}{f[k].shape}{f[k].dtype}".encode())
            n = int(f["frames"].shape[0]) if "frames" in f else 0
            if "ids" in f:
                h.update(np.ascontiguousarray(f["ids"][:]).tobytes())
            for k in ("frames", "spects"):
                for i in sorted({0, n // 2, n - 1}) if n and k in f else ():
                    h.update(np.ascontiguousarray(f[k][i]).tobytes())
    except (DataFileError, OSError):
        return None
    return h.hexdigest()


def weights_fingerprint(path: Path) -> str | None:
    """An encoders checkpoint's identity: a hash of its tensors (not of the file: its metadata records timings)."""
    try:
        state = runs.load_state(path)
    except (FileNotFoundError, runs.CheckpointError):
        return None
    h = hashlib.sha1()
    for part in ("visual", "audio", "visual_pca"):
        for k, v in sorted((state.get(part) or {}).items()):
            h.update(k.encode() + v.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def inputs(cfg: SSPLConfig) -> dict:
    """{"train", "val": split fingerprint, "encoders_checkpoint": weights fingerprint (None: none)}."""
    root = resolve(cfg.data_root)
    enc = cfg.encoders_checkpoint
    return {"train": split_fingerprint(root / f"{cfg.train_split}.h5"),
            "val": split_fingerprint(root / f"{cfg.val_split}.h5"),
            "encoders_checkpoint": weights_fingerprint(resolve(enc)) if enc else None}


def record_run(run_dir, cfg: SSPLConfig) -> None:
    """Write config.json (each start: a longer schedule may change it) and, the first time, inputs.json."""
    run_dir = resolve(run_dir)
    atomic_write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", run_dir / "config.json")
    if not (run_dir / "inputs.json").is_file():
        write_json(inputs(cfg), run_dir / "inputs.json")


def _recorded(run_dir) -> dict | None:
    path = resolve(run_dir) / "inputs.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None  # unreadable: the paths alone decide


# ----------------------------------------------------------------------------- comparison
def stored_config(run_dir) -> SSPLConfig | None:
    """The run's config.json (else, for a run that lost it, its last.pt's config); RunConflict when unreadable."""
    run_dir = resolve(run_dir)
    try:
        saved = runs.run_config(run_dir)
        if saved is None and runs.checkpoint_path(run_dir, "last").is_file():
            saved = SSPLConfig.from_dict(runs.load_checkpoint(runs.checkpoint_path(run_dir, "last"))["config"])
    except (ConfigError, runs.CheckpointError) as e:
        raise RunConflict(f"{e}. The run folder {run_dir} is kept as it is: restore the file, train into another "
                          "run folder, or delete the folder yourself to train it again") from None
    return saved


def differences(run_dir, cfg: SSPLConfig, *, allow_longer: bool = False) -> list[tuple[str, object, object]]:
    """(key, stored, new) of each difference that changes what the run computes."""
    saved = stored_config(run_dir)
    if saved is None:
        return []
    diff = changed_fields(saved, cfg, allow_longer=allow_longer)
    rec = _recorded(run_dir) or inputs(saved)  # a run from before inputs.json: the files at its paths now
    now = inputs(cfg)
    same = [s for s in ("train", "val") if now[s] is not None and rec.get(s) == now[s]]
    other = [s for s in ("train", "val") if now[s] is not None and rec.get(s) not in (None, now[s])]
    if len(same) == 2:
        diff = [k for k in diff if k not in DATA_PATHS]
    if now["encoders_checkpoint"] is not None and rec.get("encoders_checkpoint") == now["encoders_checkpoint"]:
        diff = [k for k in diff if k != "encoders_checkpoint"]
    out = [(k, getattr(saved, k), getattr(cfg, k)) for k in diff if k != "data_root" or not other]
    if other:  # other data than the run was trained on, at the same path or not
        files = " and ".join(getattr(cfg, f"{s}_split") + ".h5" for s in other)
        out.insert(0, ("data_root", f"{saved.data_root} (as trained)", f"{cfg.data_root} ({files}: other data)"))
    return out


def conflict(run_dir, diff, verb: str = "resume") -> RunConflict:
    shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in diff)
    keys = {k for k, _, _ in diff}
    longer = keys <= set(LONGER) and all(k != "epochs" or new > old for k, old, new in diff)
    how = ("to train this run further, resume it with allow_longer=True (--allow-longer)" if longer else
           f"train into a new run folder (another run_dir / runs_dir), or delete {resolve(run_dir)} yourself to "
           "train it again")
    return RunConflict(f"{resolve(run_dir)}: cannot {verb} this run, it was trained with another configuration "
                       f"({shown}); {how}. The library never deletes or overwrites a run")


def refuse_changes(run_dir, stored: SSPLConfig, cfg: SSPLConfig, *, allow_longer: bool = False) -> None:
    """RunConflict when `cfg` is another run than the `stored` config (e.g. a checkpoint's) of `run_dir`."""
    diff = changed_fields(stored, cfg, allow_longer=allow_longer)
    if diff:
        raise conflict(run_dir, [(k, getattr(stored, k), getattr(cfg, k)) for k in diff])


def check_run(run_dir, cfg: SSPLConfig, *, resume: bool = True, allow_longer: bool = False,
              verb: str = "resume") -> None:
    """RunConflict unless `run_dir` holds nothing or the run of `cfg`."""
    if not resume and runs.holds_run(run_dir):
        raise RunConflict(f"{resolve(run_dir)}: already holds a run ({len(runs.read_history(run_dir))} epochs); "
                          "resume it (resume=True / --resume) or train into a new run folder. The library never "
                          "deletes or overwrites a run")
    diff = differences(run_dir, cfg, allow_longer=allow_longer) if runs.holds_run(run_dir) else []
    if diff:
        raise conflict(run_dir, diff, verb)


def study_action(run_dir, cfg: SSPLConfig) -> str:
    """"train", "reuse", "resume" or "longer" (trained further in place); RunConflict for another run."""
    if not runs.holds_run(run_dir):
        return "train"
    if not differences(run_dir, cfg):
        return "reuse" if runs.is_complete(run_dir, cfg.epochs) else "resume"
    check_run(run_dir, cfg, allow_longer=True, verb="reuse or resume")
    return "longer"
