"""Repository-rooted paths: notebooks, scripts and tests resolve files from here, never from the CWD."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
RUNS_DIR = REPO_ROOT / "runs"
FIGURES_DIR = REPO_ROOT / "figures"
PARAMS_DIR = REPO_ROOT / "params"
SHARED_METADATA = REPO_ROOT.parent / "shared" / "metadata"


def resolve(path: str | os.PathLike | None) -> Path | None:
    """An absolute path as given, or a relative one taken from the repository root."""
    if path is None:
        return None
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else REPO_ROOT / p


def relative_to_repo(path: str | os.PathLike) -> str:
    """A path as a run's config stores it: relative to the repository root when inside it."""
    p = Path(os.path.abspath(resolve(path)))
    for cand in (p, Path(os.path.realpath(p))):
        if cand.is_relative_to(REPO_ROOT):
            return str(cand.relative_to(REPO_ROOT)) or "."
    return str(p)


def weights_dir() -> Path:
    """Where pretrained weight files are looked for first: $SSPL_WEIGHTS, else the torch hub cache."""
    if os.environ.get("SSPL_WEIGHTS"):
        return Path(os.environ["SSPL_WEIGHTS"])
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def shown(path, *, name_outside: bool = False) -> str:
    """A path as shown to a person: relative to the repository, else absolute (or its name)."""
    p = resolve(path)
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        return p.name if name_outside else str(p)
